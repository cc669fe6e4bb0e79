"""Tests of harness/convert/graph.py and graph_edit.py on hand-built graphs run by ONNX Runtime:
each edit computes what it claims (FP16 rounding, TF32 rounding, FP16 compute, a dropped node),
keeps the graph valid and leaves the input model untouched."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.convert.graph import consumers, copy_model, downstream, tensor_types, upstream
from harness.convert.graph_edit import (
    MutationError,
    compute_in,
    drop_node,
    reroute,
    round_constant,
    round_through,
    scale_constant,
    tf32_round,
)

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3)).astype(np.float32)


def _graph() -> onnx.ModelProto:
    """x [2, 4] -> Relu -> MatMul(W [4, 3]) -> Softmax -> y [2, 3]."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w"], ["m"], name="matmul"),
             helper.make_node("Softmax", ["m"], ["y"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(W, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the edits as written
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _softmax(m: np.ndarray) -> np.ndarray:
    e = np.exp(m - m.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


X = (RNG.standard_normal((2, 4)) * 3).astype(np.float32)


def test_reachability_and_types_of_a_small_graph():
    model = _graph()
    assert downstream(model, ["r"]) == {1, 2}
    assert upstream(model, ["m"]) == {0, 1}
    assert consumers(model)["w"] == [1]
    assert tensor_types(model)["m"] == TensorProto.FLOAT


def test_round_through_fp16_rounds_the_values_the_reader_sees():
    model = _graph()
    round_through(model, "r")
    expected = _softmax(np.maximum(X, 0).astype(np.float16).astype(np.float32) @ W)
    np.testing.assert_allclose(_run(model, X), expected, rtol=1e-6)
    assert [n.op_type for n in model.graph.node][:3] == ["Relu", "Cast", "Cast"]


def test_tf32_round_keeps_ten_mantissa_bits():
    model = _graph()
    tf32_round(model, "r")
    r = np.maximum(X, 0)
    # round to nearest on the 13 dropped mantissa bits (ties away from zero, as the Veltkamp split)
    bits = r.view(np.uint32).astype(np.uint64)
    rounded = (((bits + (1 << 12)) >> 13) << 13).astype(np.uint32).view(np.float32)
    got = _run(model, X)
    np.testing.assert_allclose(got, _softmax(rounded @ W), rtol=1e-5)
    assert not np.allclose(got, _softmax(r @ W), rtol=1e-7, atol=0)


def test_compute_in_fp16_casts_the_region_and_back():
    model = _graph()
    compute_in(model, [1])  # the MatMul
    types = tensor_types(model)
    matmul = next(n for n in model.graph.node if n.op_type == "MatMul")
    assert all(types[t] == TensorProto.FLOAT16 for t in (*matmul.input, *matmul.output))
    assert types["y"] == TensorProto.FLOAT
    expected = _softmax((np.maximum(X, 0).astype(np.float16) @ W.astype(np.float16)).astype(np.float32))
    np.testing.assert_allclose(_run(model, X), expected, rtol=2e-3, atol=1e-3)


def test_drop_node_wires_readers_to_its_input():
    model = _graph()
    drop_node(model, 0)
    np.testing.assert_allclose(_run(model, X), _softmax(X @ W), rtol=1e-6)


def test_constants_scaled_and_rounded_in_place():
    model = _graph()
    scale_constant(model, "w", 2.0)
    np.testing.assert_allclose(_run(model, X), _softmax(np.maximum(X, 0) @ (2 * W)), rtol=1e-6)
    round_constant(model, "w")
    value = numpy_helper.to_array(model.graph.initializer[0])
    assert np.array_equal(value, value.astype(np.float16).astype(np.float32))


def test_copy_leaves_the_original_untouched():
    model = _graph()
    before = model.SerializeToString()
    edited = copy_model(model)
    round_through(edited, "r")
    assert model.SerializeToString() == before != edited.SerializeToString()


def test_rerouting_a_tensor_nobody_reads_is_refused():
    with pytest.raises(MutationError, match="no reader"):
        reroute(_graph(), "y", lambda s: [helper.make_node("Identity", [s], [f"{s}_id"])])
    with pytest.raises(MutationError, match="no node"):
        compute_in(_graph(), [])
