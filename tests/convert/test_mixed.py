"""Unit tests of harness/convert/mixed.py: the FP16 graph derived from the FP32 export runs the
same operations in FP16 as the mixed-precision torch model's export did, keeps the FP32 regions,
is cached under a key that changes with what changes it, and is built once per chain."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness import chain as chain_module
from harness.chain import Chain, ChainConfig, Leg, run_leg
from harness.convert import mixed as mixed_module
from harness.convert.cache import ArtifactCache
from harness.convert.graph import LOW_PRECISION, tensor_types
from harness.convert.mixed import MixedOnnxFromOnnx, convert_to_mixed, fp16_nodes
from harness.convert.onnx_export import ExportConfig, OnnxFromTorch, export_onnx_bytes
from harness.convert.precision import audit_precision
from harness.convert.workarounds import get_workaround
from harness.data.cases import case_feed, case_views, get_case
from harness.errors import ExportError, InvalidArgument
from harness.gates.limits import Tolerances
from harness.model.checkpoint import state_dict_digest
from harness.model.mvsnet import to_mixed_precision
from harness.model.precision import FP16_OPS, FP32_REGIONS

SMALL = get_case("small")
WORKAROUND = get_workaround("precomputed")


@pytest.fixture(scope="module")
def feed():
    return WORKAROUND.prepare_feed(case_feed(SMALL, case_views(SMALL), with_inverse=True))


def _fp16_ops(model: onnx.ModelProto) -> collections.Counter:
    types = tensor_types(model)
    return collections.Counter(n.op_type for n in model.graph.node if any(types.get(o) in LOW_PRECISION for o in n.output))


def _io(model: onnx.ModelProto) -> list[tuple[str, int]]:
    return [(v.name, v.type.tensor_type.elem_type) for v in (*model.graph.input, *model.graph.output)]


@pytest.mark.parametrize("export_with", ["torchscript", "dynamo"])
def test_the_converted_graph_runs_in_fp16_what_the_mixed_torch_model_exported_did(model, feed, export_with):
    fp32 = onnx.load_from_string(export_onnx_bytes(model, WORKAROUND, feed, export_with, 17))
    traced = onnx.load_from_string(export_onnx_bytes(to_mixed_precision(model), WORKAROUND, feed, export_with, 17))
    converted = convert_to_mixed(fp32, fp16_nodes(fp32, FP16_OPS["seeds"], FP16_OPS["follow"]))
    onnx.checker.check_model(converted, full_check=True)
    assert _fp16_ops(converted) == _fp16_ops(traced)  # e.g. Conv 16, Relu 17, ConvTranspose 3, Add 3, Cast 2
    assert _fp16_ops(converted)["Conv"] == 16
    assert _io(converted) == _io(fp32)  # FP32 inputs and outputs, same names
    assert audit_precision(converted, FP32_REGIONS).passed
    assert _fp16_ops(fp32) == collections.Counter()  # the source is untouched


def test_convolution_weights_are_stored_in_fp16_and_a_shared_weight_is_copied():
    # x -> Conv(w) -> Relu -> Add(., y) -> out; w also read by an FP32 Mul; the Add reads an FP32
    # input from outside the FP16 nodes, so it stays FP32
    w = numpy_helper.from_array(np.full((1, 1, 1, 1), 0.3, np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Add", ["r", "y"], ["out"]), helper.make_node("Mul", ["y", "w"], ["other"])]
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 2, 2]) for n in ("x", "y", "out", "other")]
    graph = helper.make_graph(nodes, "g", value[:2], value[2:], initializer=[w])
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    chosen = fp16_nodes(source, ("Conv",), ("Relu", "Add"))
    assert [source.graph.node[i].op_type for i in sorted(chosen)] == ["Conv", "Relu"]
    converted = convert_to_mixed(source, chosen)
    onnx.checker.check_model(converted, full_check=True)
    inits = {i.name: i.data_type for i in converted.graph.initializer}
    assert inits["w"] == TensorProto.FLOAT and TensorProto.FLOAT16 in inits.values()  # the Mul keeps an FP32 w
    assert [n.op_type for n in converted.graph.node] == ["Cast", "Conv", "Relu", "Cast", "Add", "Mul"]
    assert _io(converted) == _io(source)


def test_no_convolution_is_an_invalid_argument():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InvalidArgument, match="no node to run in FP16"):
        convert_to_mixed(source, fp16_nodes(source, FP16_OPS["seeds"], FP16_OPS["follow"]))


@pytest.fixture(scope="module")
def fp32_artifact(model, tmp_path_factory):
    cache = ArtifactCache(tmp_path_factory.mktemp("mixed-cache"))
    feed = case_feed(SMALL, case_views(SMALL), with_inverse=True)
    return OnnxFromTorch(model, state_dict_digest(model), feed, ExportConfig(), WORKAROUND, cache)(), cache


def test_the_builder_caches_by_source_code_and_policy(fp32_artifact, monkeypatch):
    source, cache = fp32_artifact
    first = MixedOnnxFromOnnx(source, cache)()
    assert first.cache_status == "miss" and first.config.precision == "fp16" and not first.simplified
    assert first.config.label.endswith("-fp16") and first.audit["opset"] == 17
    assert MixedOnnxFromOnnx(source, cache)().cache_status == "hit"
    key = MixedOnnxFromOnnx(source, cache).key_fields()
    assert key["source_sha256"] == source.sha256
    other_policy = MixedOnnxFromOnnx(source, cache, ops={"seeds": ("Conv",), "follow": ()}).key_fields()
    assert other_policy != key
    monkeypatch.setattr(mixed_module, "mixed_code_digest", lambda: "changed-code")
    assert MixedOnnxFromOnnx(source, cache).key_fields() != key


def test_a_policy_that_puts_an_fp32_region_in_fp16_is_refused_before_caching(fp32_artifact):
    source, cache = fp32_artifact
    with pytest.raises(ExportError, match="FP32-only operations in FP16.*Softmax"):
        MixedOnnxFromOnnx(source, cache, ops={"seeds": ("Conv", "Softmax"), "follow": ()})()


def test_only_a_raw_fp32_graph_is_converted_and_only_fp32_is_traced(model, fp32_artifact):
    source, cache = fp32_artifact
    with pytest.raises(InvalidArgument, match="raw FP32"):
        MixedOnnxFromOnnx(MixedOnnxFromOnnx(source, cache)(), cache)
    with pytest.raises(InvalidArgument, match="only FP32 graphs are exported"):
        OnnxFromTorch(model, "digest", {}, ExportConfig(precision="fp16"), WORKAROUND, cache)


def test_each_graph_is_built_once_per_chain_and_the_fp16_leg_passes(tmp_path, monkeypatch):
    exports, conversions = [], []

    class CountingExport(chain_module.OnnxFromTorch):
        def __call__(self):
            exports.append(self.config.label)
            return super().__call__()

    class CountingMixed(chain_module.MixedOnnxFromOnnx):
        def __call__(self):
            conversions.append(self.config.label)
            return super().__call__()

    monkeypatch.setattr(chain_module, "OnnxFromTorch", CountingExport)
    monkeypatch.setattr(chain_module, "MixedOnnxFromOnnx", CountingMixed)
    chain = Chain(ChainConfig(cache_dir=tmp_path, device="cpu"))
    try:
        for variant in ("raw", "simplified"):
            for precision in ("fp16", "fp32", "fp16"):
                chain.onnx("small", "precomputed", "torchscript", variant, precision)
        assert exports == ["torchscript-op17-precomputed-fp32"]
        assert conversions == ["torchscript-op17-precomputed-fp16"]
        result = run_leg(chain, Leg("ort-cpu-fp16", "raw", "precomputed", "torchscript", "small"), Tolerances.load())
        assert result.passed, "\n".join(d.row() for d in result.diffs.values())
    finally:
        chain.close()
