"""Tests of harness/convert/precision.py: the precision audit on hand-built graphs (what counts as
FP16 compute, as a round trip, as a region boundary, as a weight stored through FP16), on a user
graph with other tensor names, on TensorRT inspector layer JSON, and on the exported small-case
graphs with MVSNet's policy (harness/model/precision.py): the exports pass, FP16 edits fail."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.convert.graph_edit import compute_in, round_through
from harness.convert.precision import (
    PrecisionError,
    audit_engine_layers,
    audit_precision,
    load_inspector_layers,
    protected_node_names,
    region_nodes,
)
from harness.errors import ConfigError
from harness.model.precision import FP32_REGIONS

POLICY = ({"name": "head", "from": ("Softmax.in0",), "to": ("output:y",)},)


def _graph(weight: np.ndarray | None = None) -> onnx.ModelProto:
    """x -> Cast(fp16) -> Conv-like MatMul in FP16 -> Cast(fp32) -> Softmax -> Mul(k) -> y: a mixed
    graph whose FP16 part ends at the Cast before the protected head."""
    weight = np.random.default_rng(0).standard_normal((8, 100)).astype(np.float16) if weight is None else weight
    nodes = [helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16, name="in_cast"),
             helper.make_node("MatMul", ["x16", "w"], ["h16"], name="body"),
             helper.make_node("Cast", ["h16"], ["h"], to=TensorProto.FLOAT, name="out_cast"),
             helper.make_node("Softmax", ["h"], ["p"], name="softmax", axis=-1),
             helper.make_node("Mul", ["p", "k"], ["y"], name="scale")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 100])],
                              [numpy_helper.from_array(weight, "w"),
                               numpy_helper.from_array(np.full((100,), 0.3, np.float32), "k")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_mixed_graph_with_its_head_in_fp32_passes():
    audit = audit_precision(_graph(), POLICY)
    assert audit.passed and audit.region_nodes == {"head": 3}  # out_cast (entry), softmax, scale


def test_softmax_in_fp16_is_computed_in_fp16():
    model = _graph()
    compute_in(model, [3])
    audit = audit_precision(model, POLICY)
    assert not audit.passed
    assert any(f.node == "softmax" and "computes in float16" in f.problem for f in audit.findings)
    with pytest.raises(PrecisionError, match="softmax .*Softmax.* computes in float16"):
        audit.require("graph")


def test_a_cast_round_trip_inside_the_region_is_a_rounding():
    model = _graph()
    round_through(model, "p")
    findings = audit_precision(model, POLICY).findings
    assert [f.problem.split(" (")[0] for f in findings] == ["rounds its input through float16"]


def test_whole_graph_mode_flags_fp32_weights_stored_through_fp16():
    exact = np.random.default_rng(1).standard_normal((8, 100)).astype(np.float16).astype(np.float32)
    model = _graph(exact)
    model.graph.node[1].input[0] = "x"  # an FP32 graph: the MatMul reads x directly
    del model.graph.node[0]
    model.graph.node[1].CopyFrom(helper.make_node("Identity", ["h16"], ["h"], name="out_cast"))
    audit = audit_precision(model, whole_graph=True)
    assert [f.problem.split(" (")[0] for f in audit.findings] == ["reads a float32 weight stored through float16"]
    noisy = exact + np.float32(1e-4)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(noisy, "w"))
    assert audit_precision(model, whole_graph=True).passed


def test_a_user_graph_maps_the_policy_names():
    model = _graph()
    policy = ({"name": "head", "from": ("input:images",), "to": ("output:probability",)},)
    assert region_nodes(model, policy[0], {"images": "x", "probability": "y"})
    assert not region_nodes(model, policy[0])  # unmapped: nothing is called images here
    assert protected_node_names(model, policy, {"images": "x", "probability": "y"}) >= {"softmax", "scale"}


def test_a_malformed_selector_is_a_config_error():
    with pytest.raises(ConfigError, match="not a tensor selector"):
        audit_precision(_graph(), ({"name": "bad", "from": ("Softmax",), "to": ("output:y",)},))
    with pytest.raises(ConfigError, match="needs 'ops'"):
        audit_precision(_graph(), ({"name": "bad"},))


def test_engine_layers_in_fp16_named_after_protected_nodes_fail(tmp_path):
    layers = [
        {"Name": "body", "LayerType": "MatrixMultiply", "Inputs": [{"Format/Datatype": "Row major linear FP16 format"}]},
        {"Name": "softmax", "LayerType": "SoftMax", "Inputs": [{"Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Format/Datatype": "Row major linear FP32"}]},
    ]
    assert audit_engine_layers(layers, {"softmax", "scale"}).passed
    layers[1]["Outputs"] = [{"Format/Datatype": "Row major linear FP16 format"}]
    (finding,) = audit_engine_layers(layers, {"softmax", "scale"}).findings
    assert finding.node == "softmax" and finding.op == "SoftMax"
    path = tmp_path / "inspector.json"
    path.write_text(json.dumps({"Layers": layers}))
    assert load_inspector_layers(path) == layers
    assert load_inspector_layers(tmp_path / "missing.json") is None


@pytest.fixture(scope="module")
def small_graphs():
    from harness.chain import Chain

    chain = Chain()
    return {(v, p): chain.onnx("small", "precomputed", "torchscript", v, p).load()
            for v in ("raw", "simplified") for p in ("fp32", "fp16")}


@pytest.mark.parametrize("variant", ["raw", "simplified"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_exported_graphs_keep_mvsnets_fp32_regions(small_graphs, variant, precision):
    audit = audit_precision(small_graphs[variant, precision], FP32_REGIONS, whole_graph=precision == "fp32")
    assert audit.passed, [f.row() for f in audit.findings]
    assert all(audit.region_nodes[r["name"]] > 0 for r in FP32_REGIONS)  # every region found


@pytest.mark.parametrize("op", ["Mul", "GridSample", "Softmax"])
def test_fp16_compute_of_a_protected_op_fails_the_mixed_graph(small_graphs, op):
    model = onnx.ModelProto()
    model.CopyFrom(small_graphs["simplified", "fp16"])
    compute_in(model, [i for i, n in enumerate(model.graph.node) if n.op_type == op][:1])
    audit = audit_precision(model, FP32_REGIONS)
    assert any(f.op == op for f in audit.findings)


def test_an_onnx_file_and_its_engine_layers_are_audited_together(tmp_path):
    from harness.convert.precision import audit_onnx_file

    path = tmp_path / "user.onnx"
    onnx.save(_graph(), str(path))
    policy = ({"name": "head", "from": ("Softmax.in0",), "to": ("output:probability",)},)
    names = {"probability": "y"}
    assert audit_onnx_file(path, policy, names).passed
    layers = [{"Name": "softmax", "LayerType": "SoftMax", "Outputs": [{"Format/Datatype": "Half"}]}]
    (tmp_path / "inspector.json").write_text(json.dumps({"Layers": layers}))
    audit = audit_onnx_file(path, policy, names, inspector=tmp_path / "inspector.json")
    assert [f.region for f in audit.findings] == ["engine"]
    assert audit_onnx_file(path, policy, names, inspector=tmp_path / "absent.json").passed
