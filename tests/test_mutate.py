"""Tests of harness/mutate.py: every catalogue entry is documented, applies to the graph variant it
names for each precision it lists, changes the graph (the benign raw-graph entry aside), keeps it
valid ONNX, and leaves its input untouched; a graph without the targeted part is refused."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from harness.mutate import CATALOGUE, MutationError, mutations

PARAMS = [(m.name, p) for p in ("fp32", "fp16") for m in mutations(p)]


@pytest.fixture(scope="module")
def graphs():
    from harness.chain import Chain

    chain = Chain()
    return {(v, p): chain.onnx("small", "precomputed", "torchscript", v, p).load()
            for v in ("raw", "simplified") for p in ("fp32", "fp16")}


def test_the_catalogue_has_bugs_and_benign_rewrites_each_documented():
    bugs = [m for m in CATALOGUE.values() if not m.benign]
    benign = [m for m in CATALOGUE.values() if m.benign]
    assert len(bugs) >= 25 and len(benign) >= 4
    assert all(len(m.doc) > 30 and m.variant in ("raw", "simplified") for m in CATALOGUE.values())
    assert {m.name for m in mutations("fp32")} > {m.name for m in mutations("fp16")}  # FP16-weight bugs: FP32 only


@pytest.mark.parametrize(("name", "precision"), PARAMS, ids=[f"{p}-{n}" for n, p in PARAMS])
def test_each_mutation_changes_a_valid_graph_and_not_its_input(graphs, name, precision):
    mutation = CATALOGUE[name]
    source = graphs[mutation.variant, precision]
    before = source.SerializeToString()
    mutated = mutation(source)
    assert source.SerializeToString() == before
    onnx.checker.check_model(mutated)
    if name != "raw-graph":
        assert mutated.SerializeToString() != before


def test_a_graph_without_the_targeted_part_is_refused():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for name in ("gridsample-nearest", "softmax-axis", "bn-epsilon", "grid-matmul-tf32", "confidence-window"):
        with pytest.raises(MutationError):
            CATALOGUE[name](model)


def test_a_user_graph_with_other_tensor_names_is_mutated_through_the_mapping(graphs):
    from harness.convert.graph import rename_tensors, tensor_types

    ours = graphs["simplified", "fp32"]
    names = {"depth_values": "hypotheses", "depth": "depth_map", "proj_matrices": "cams"}
    theirs = onnx.ModelProto()
    theirs.CopyFrom(ours)
    rename_tensors(theirs, names)
    with pytest.raises(MutationError):  # nothing called depth_values in the user's graph
        CATALOGUE["depth-values-offset-regression"](theirs)
    mutated = CATALOGUE["depth-values-offset-regression"](theirs, names)
    onnx.checker.check_model(mutated)
    assert {i.name for i in mutated.graph.input} == {i.name for i in theirs.graph.input}
    assert "depth_map" in {o.name for o in mutated.graph.output} and "depth_map" in tensor_types(mutated)
    swapped = CATALOGUE["source-views-swapped"](theirs, names)
    assert swapped.SerializeToString() != theirs.SerializeToString()


def test_the_grid_tf32_mutation_rounds_every_factor_of_the_elementwise_grid_product(graphs):
    # harness/model/geometry.py computes rot @ [x, y, 1] as r0*x + r1*y + r2 (TF32-safe): per source
    # view five factors (r0, x, r1, y, r2) get a TF32 rounding (Constant, Mul, Sub, Sub) in front
    source = graphs["simplified", "fp32"]
    mutated = CATALOGUE["grid-matmul-tf32"](source)
    added = len(mutated.graph.node) - len(source.graph.node)
    assert added == 2 * 5 * 4
    roundings = [n.input[0] for n in mutated.graph.node if n.op_type == "Mul" and any("veltkamp" in t for t in n.input)]
    assert len(roundings) == 10 and len(set(roundings)) == 8  # the x and y coordinates are shared by the views
    projection = CATALOGUE["projection-matmul-fp16"](source)
    assert sum(n.op_type == "Cast" for n in projection.graph.node) - sum(n.op_type == "Cast" for n in source.graph.node) \
        == 4 + 2 * 4 + 2  # cast down: 4 rows of the inverse (shared) and 4 columns per view; up: 1 sum per view
