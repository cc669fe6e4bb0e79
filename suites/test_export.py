"""Export gate: each inverse workaround exports with each exporter it supports, with fixed I/O
names, passes onnx.checker, and holds only operators TensorRT's ONNX parser takes (custom_op's
contrib operator is refused with a message naming the way out); onnxsim never grows the graph;
and the original model (torch.inverse) is refused with a message naming the strategies.
"""

from __future__ import annotations

import onnx
import pytest

from harness.convert.onnx_export import export_onnx_bytes
from harness.convert.workarounds import TRT_EXPORTABLE, get_workaround
from harness.errors import UnsupportedOperator
from harness.model.mvsnet import OUTPUT_NAMES


def _io(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    return [i.name for i in model.graph.input], [o.name for o in model.graph.output]


def test_export_has_fixed_io_names(onnx_model, inverse_workaround, record_property):
    inputs, outputs = _io(onnx_model.load())
    assert inputs == list(inverse_workaround.input_names)
    assert outputs == list(OUTPUT_NAMES)
    assert ("inverse_proj_matrices" in inputs) == (inverse_workaround.name == "precomputed")
    record_property("nodes_raw", onnx_model.node_count)


def test_export_is_trt_parsable_by_audit(onnx_model, inverse_workaround, harness_options):
    audit = onnx_model.audit
    assert audit["opset"] == harness_options.chain.opset
    assert "GridSample" in audit["op_counts"]
    if inverse_workaround.name in TRT_EXPORTABLE:
        assert audit["trt_findings"] == [], audit["trt_findings"]
        onnx_model.require_trt_ready()
        return
    # custom_op: ONNX Runtime's contrib operator, refused before any TensorRT build
    assert [f["op"] for f in audit["trt_findings"]] == ["com.microsoft::Inverse"]
    with pytest.raises(UnsupportedOperator) as info:
        onnx_model.require_trt_ready()
    message = str(info.value)
    assert "com.microsoft::Inverse" in message and "TensorRT needs a plugin" in message
    assert "precomputed" in message and "closed_form" in message


def test_grid_sample_keeps_bilinear_align_corners(onnx_model):
    nodes = [n for n in onnx_model.load().graph.node if n.op_type == "GridSample"]
    assert nodes, "the warp must export as GridSample"
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs.get("align_corners") == 1, node.name
        assert attrs.get("mode", b"bilinear") in (b"bilinear", b"linear"), node.name
        assert attrs.get("padding_mode", b"zeros") == b"zeros", node.name


def test_simplification_never_grows_the_graph(onnx_model, simplified_onnx_model, record_property):
    before = simplified_onnx_model.extra["nodes_before"]
    after = simplified_onnx_model.extra["nodes_after"]
    record_property("nodes", f"{before}->{after}")
    assert before == onnx_model.node_count
    assert after <= before
    assert simplified_onnx_model.audit["trt_findings"] == onnx_model.audit["trt_findings"] or \
        [f["op"] for f in simplified_onnx_model.audit["trt_findings"]] == ["com.microsoft::Inverse"]


@pytest.mark.parametrize("exporter_name", ["torchscript", "dynamo"])
def test_export_without_workaround_names_linalg_inv(chain, exporter_name):
    feed = chain.reference_feed("small")
    with pytest.raises(UnsupportedOperator) as info:
        export_onnx_bytes(chain.model, get_workaround("none"), feed, exporter_name, 17)
    message = str(info.value)
    assert "aten::linalg_inv" in message
    assert "precomputed" in message and "closed_form" in message
