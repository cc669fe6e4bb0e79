"""Unit tests of harness/convert/audit.py on hand-built ONNX graphs."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from harness.convert.audit import TRT_UNSUPPORTED, Audit, Finding, audit_model
from harness.errors import ExportError, UnsupportedOperator


def _model(nodes: list[onnx.NodeProto], opset: int = 17, extra_domains: tuple[str, ...] = ()) -> onnx.ModelProto:
    """A graph whose node inputs/outputs need not be consistent: the audit only reads nodes."""
    graph = helper.make_graph(
        nodes, "audit-test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in extra_domains]
    return helper.make_model(graph, opset_imports=imports)


def _grid_sample(opset: int, name: str = "warp") -> onnx.ModelProto:
    mode = "linear" if opset >= 20 else "bilinear"
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], name=name, mode=mode, align_corners=1)
    return _model([node], opset=opset)


def test_counts_op_types():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="r1"),
        helper.make_node("Relu", ["a"], ["b"], name="r2"),
        helper.make_node("Add", ["a", "b"], ["c"], name="add"),
        helper.make_node("Conv", ["c", "w"], ["y"], name="conv"),
    ]
    audit = audit_model(_model(nodes))
    assert audit.op_counts == {"Relu": 2, "Add": 1, "Conv": 1}
    assert audit.node_count == 4
    assert audit.opset == 17
    assert audit.trt_ready
    assert audit.findings == ()


def test_custom_domain_ops_are_counted_with_their_domain():
    node = helper.make_node("Inverse", ["x"], ["y"], name="inv", domain="com.microsoft")
    audit = audit_model(_model([node], extra_domains=("com.microsoft",)))
    assert audit.op_counts == {"com.microsoft::Inverse": 1}


def test_flags_a_com_microsoft_inverse_with_a_workaround_fix():
    node = helper.make_node("Inverse", ["x"], ["y"], name="proj_inverse", domain="com.microsoft")
    audit = audit_model(_model([node], extra_domains=("com.microsoft",)))
    assert not audit.trt_ready
    (finding,) = audit.findings
    assert finding.node == "proj_inverse"
    assert finding.op == "com.microsoft::Inverse"
    assert "plugin" in finding.problem
    assert "precomputed" in finding.fix and "closed_form" in finding.fix


def test_flags_an_unsupported_operator():
    assert "Unique" in TRT_UNSUPPORTED
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"), helper.make_node("Unique", ["a"], ["y"], name="uniq")]
    audit = audit_model(_model(nodes))
    (finding,) = audit.findings
    assert (finding.node, finding.op) == ("uniq", "Unique")
    assert "not supported by onnx-tensorrt" in finding.problem


def test_flags_grid_sample_at_opset_20_naming_nearest_and_opset_17_to_19():
    audit = audit_model(_grid_sample(20))
    (finding,) = audit.findings
    assert finding.op == "GridSample"
    assert finding.node == "warp"
    assert "NEAREST" in finding.problem
    assert "'linear'" in finding.problem
    assert "opset 17-19" in finding.fix


@pytest.mark.parametrize("opset", [17, 18, 19])
def test_does_not_flag_grid_sample_below_opset_20(opset):
    audit = audit_model(_grid_sample(opset))
    assert audit.trt_ready
    assert audit.op_counts == {"GridSample": 1}
    assert audit.opset == opset


def test_ai_onnx_domain_counts_as_default():
    node = helper.make_node("Relu", ["x"], ["y"], name="r", domain="ai.onnx")
    graph = _model([node])
    graph.opset_import[0].domain = "ai.onnx"
    audit = audit_model(graph)
    assert audit.trt_ready
    assert audit.opset == 17
    assert audit.op_counts == {"Relu": 1}


def test_unnamed_nodes_are_named_by_index():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Unique", ["a"], ["y"])]
    (finding,) = audit_model(_model(nodes)).findings
    assert finding.node == "node1"


def test_require_trt_ready_raises_unsupported_operator_listing_node_names():
    nodes = [
        helper.make_node("Unique", ["x"], ["a"], name="first_unique"),
        helper.make_node("Inverse", ["a"], ["y"], name="the_inverse", domain="com.microsoft"),
    ]
    audit = audit_model(_model(nodes, extra_domains=("com.microsoft",)))
    with pytest.raises(UnsupportedOperator) as info:
        audit.require_trt_ready("model.onnx")
    message = str(info.value)
    assert isinstance(info.value, ExportError)
    assert message.startswith("model.onnx | TensorRT's ONNX parser cannot take this graph")
    assert "first_unique (Unique)" in message
    assert "the_inverse (com.microsoft::Inverse)" in message
    assert info.value.fix == audit.findings[0].fix


def test_require_trt_ready_summarises_beyond_six_findings():
    nodes = [helper.make_node("Unique", ["x"], [f"y{i}"], name=f"u{i}") for i in range(9)]
    audit = audit_model(_model(nodes))
    with pytest.raises(UnsupportedOperator, match=r"\(\+3 more\)") as info:
        audit.require_trt_ready("g")
    assert "u5 (Unique)" in str(info.value)
    assert "u6 (Unique)" not in str(info.value)


def test_require_trt_ready_passes_a_clean_graph():
    audit_model(_grid_sample(17)).require_trt_ready("clean.onnx")


def test_audit_round_trips_through_as_dict():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="r"),
        helper.make_node("Unique", ["a"], ["b"], name="u"),
        helper.make_node("GridSample", ["b", "g"], ["y"], name="gs", mode="linear"),
    ]
    audit = audit_model(_model(nodes, opset=20))
    data = audit.as_dict()
    assert set(data) == {"opset", "node_count", "op_counts", "trt_findings"}
    assert [f["node"] for f in data["trt_findings"]] == ["u", "gs"]
    assert Audit.from_dict(data) == audit
    assert Audit.from_dict(_json_round_trip(data)) == audit


def _json_round_trip(data: dict) -> dict:
    import json

    return json.loads(json.dumps(data))


def test_from_dict_of_an_empty_dict_is_an_empty_audit():
    audit = Audit.from_dict({})
    assert audit == Audit(0, 0, {}, ())
    assert audit.trt_ready


def test_finding_as_dict_has_every_field():
    finding = Finding("n", "Op", "problem", "fix")
    assert finding.as_dict() == {"node": "n", "op": "Op", "problem": "problem", "fix": "fix"}
