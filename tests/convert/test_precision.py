"""Tests of harness/convert/precision.py: the precision audit on hand-built graphs (what counts as
FP16 compute, as a round trip, as a region boundary, as a weight stored through FP16), on a user
graph with other tensor names, on TensorRT inspector layer JSON, and on the exported small-case
graphs with MVSNet's policy (harness/model/precision.py): the exports pass, FP16 edits fail."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from harness.convert.graph import node_label
from harness.convert.graph_edit import compute_in, round_through
from harness.convert.precision import (
    PrecisionError,
    audit_engine_layers,
    audit_engine_tf32,
    audit_precision,
    load_inspector_layers,
    protected_node_names,
    region_nodes,
    tf32_exposed_nodes,
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


# ---------------------------------------------------------------- TF32 exposure of the sampling grid


class _MatMulWarp(torch.nn.Module):
    """MVSNet_pytorch's homo_warping as written (torch.matmul for the projection and the grid)."""

    def forward(self, feature, src_proj, inv_ref_proj, depth_values):  # type: ignore[no-untyped-def]
        batch, _, height, width = feature.shape
        num_depth = depth_values.shape[1]
        proj = torch.matmul(src_proj, inv_ref_proj)
        rot, trans = proj[:, :3, :3], proj[:, :3, 3:4]
        y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                              indexing="ij")
        xyz = torch.stack((x.reshape(-1), y.reshape(-1), torch.ones(height * width)))
        rot_xyz = torch.matmul(rot, xyz.unsqueeze(0).repeat(batch, 1, 1))
        proj_xyz = rot_xyz.unsqueeze(2) * depth_values.view(batch, 1, num_depth, 1) + trans.view(batch, 3, 1, 1)
        proj_xy = proj_xyz[:, :2] / proj_xyz[:, 2:3]
        grid = torch.stack((proj_xy[:, 0] / ((width - 1) / 2) - 1, proj_xy[:, 1] / ((height - 1) / 2) - 1), dim=3)
        out = torch.nn.functional.grid_sample(feature, grid.view(batch, num_depth * height, width, 2),
                                              align_corners=True)
        return torch.matmul(out.flatten(2), torch.ones(num_depth * height * width, 2))  # a MatMul off the grid


def _export_original(how: str) -> onnx.ModelProto:
    args = (torch.rand(1, 2, 6, 8), torch.eye(4).unsqueeze(0), torch.eye(4).unsqueeze(0), torch.tensor([[1.0, 2.0]]))
    module = _MatMulWarp().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and export notes
        if how == "torchscript":
            buffer = io.BytesIO()
            torch.onnx.export(module, args, buffer, dynamo=False, opset_version=17)
            return onnx.load_from_string(buffer.getvalue())
        program = torch.onnx.export(module, args, dynamo=True, opset_version=17, verbose=False)
    assert program is not None
    return program.model_proto


@pytest.mark.parametrize("how", ["torchscript", "dynamo"])
def test_the_original_matmul_grid_is_named_tf32_exposed(how):
    model = _export_original(how)
    matmuls = [node_label(n, i) for i, n in enumerate(model.graph.node) if n.op_type == "MatMul"]
    exposed = tf32_exposed_nodes(model)
    # the projection product and rot @ xyz; the MatMul after GridSample does not compute the grid
    assert len(matmuls) == 3 and exposed == matmuls[:2]


def test_a_matmul_on_fp16_tensors_and_a_graph_without_gridsample_are_not_tf32_exposed():
    model = _export_original("torchscript")
    first = next(i for i, n in enumerate(model.graph.node) if n.op_type == "MatMul")
    compute_in(model, [first])
    assert tf32_exposed_nodes(model) == [tf32_exposed_nodes(_export_original("torchscript"))[1]]
    assert tf32_exposed_nodes(_graph()) == []  # a MatMul, but no sampling grid


@pytest.mark.parametrize("strategy", ["precomputed", "closed_form"])
@pytest.mark.parametrize("how", ["torchscript", "dynamo"])
def test_no_graph_the_harness_exports_computes_its_grid_with_ops_tf32_rounds(strategy, how):
    from harness.chain import Chain

    chain = Chain()
    for variant in ("raw", "simplified"):
        model = chain.onnx("small", strategy, how, variant, "fp32").load()
        assert [n for n in model.graph.node if n.op_type == "GridSample"], variant  # the check has a grid to look at
        assert tf32_exposed_nodes(model) == [], variant


def test_engine_layers_running_a_tf32_kernel_on_the_grid_are_named(tmp_path):
    from harness.convert.precision import audit_onnx_file

    model = _export_original("torchscript")
    exposed = tf32_exposed_nodes(model)
    layers = [
        {"Name": exposed[0], "LayerType": "CaskGemmMatrixMultiply", "TacticName": "sm90_xmma_gemm_tf32f32_tf32f32_f32_nn"},
        {"Name": f"{exposed[1]} + /Mul", "LayerType": "CaskGemmMatrixMultiply", "TacticName": "sm90_xmma_gemm_f32f32"},
        {"Name": "{ForeignNode[/GridSample...]}", "LayerType": "Myelin", "TacticName": "__myl_tf32"},
    ]
    audit = audit_engine_tf32(layers, exposed)
    assert [f.node for f in audit.findings] == [exposed[0]]
    assert "TF32 kernel" in audit.findings[0].problem and exposed[0] in audit.findings[0].problem
    assert audit_engine_tf32(layers, []).passed
    path = tmp_path / "original.onnx"
    onnx.save(model, str(path))
    (tmp_path / "inspector.json").write_text(json.dumps({"Layers": layers}))
    combined = audit_onnx_file(path, (), inspector=tmp_path / "inspector.json")
    assert [f.region for f in combined.findings] == ["sampling grid (TF32)"]
    with pytest.raises(PrecisionError, match="trtexec --noTF32.*use_tf32=0.*elementwise multiply-adds"):
        combined.require("original.trt")
