"""Unit tests of harness/model/io.py: binding a user graph's tensors to MVSNet's roles."""

from __future__ import annotations

import pytest

from harness.errors import ShapeError
from harness.model.io import (
    ARTICLE_INPUTS,
    ARTICLE_OUTPUTS,
    IoMappingError,
    TensorSpec,
    bind_io,
    check_against,
    parse_io_map,
    static_case_shape,
)

SHAPES = [(1, 3, 3, 128, 160), (1, 3, 4, 4), (1, 3, 4, 4), (1, 48)]
EXPECTED = {"imgs": (1, 3, 3, 128, 160), "proj_matrices": (1, 3, 4, 4), "inverse_proj_matrices": (1, 3, 4, 4),
            "depth_values": (1, 48)}


def specs(names, shapes=SHAPES, dtype="float32"):
    return [TensorSpec(n, tuple(s), dtype) for n, s in zip(names, shapes)]


def outputs(names=ARTICLE_OUTPUTS):
    return specs(names, [(1, 32, 40), (1, 32, 40)])


def test_article_names_bind_with_the_precomputed_inverse():
    binding = bind_io(specs(ARTICLE_INPUTS), outputs())
    assert binding.with_inverse
    assert binding.input_roles() == {"imgs": "in_imgs", "proj_matrices": "in_proj_matrices",
                                     "inverse_proj_matrices": "in_inverse_proj_matrices",
                                     "depth_values": "in_depth_values"}
    assert binding.output_roles() == {"out_depth": "depth", "out_confidence": "photometric_confidence"}
    assert binding.how == "by article names"


def test_harness_names_bind_in_any_order():
    names = ["depth_values", "imgs", "proj_matrices"]
    shapes = [(1, 48), (1, 3, 3, 128, 160), (1, 3, 4, 4)]
    binding = bind_io(specs(names, shapes), outputs(["photometric_confidence", "depth"]))
    assert not binding.with_inverse
    assert binding.graph_name("imgs") == "imgs" and binding.graph_name("depth") == "depth"
    assert binding.how == "by names"


def test_unnamed_graph_binds_positionally_and_says_so():
    three = bind_io(specs(["input.1", "x2", "x3"], [SHAPES[0], SHAPES[1], SHAPES[3]]), outputs(["o1", "o2"]))
    assert [r for _, r in three.inputs] == ["imgs", "proj_matrices", "depth_values"]
    assert [r for _, r in three.outputs] == ["depth", "photometric_confidence"]
    assert "positional" in three.how
    four = bind_io(specs(["a", "b", "c", "d"]), outputs())
    assert [r for _, r in four.inputs] == ["imgs", "proj_matrices", "inverse_proj_matrices", "depth_values"]
    assert four.how == "inputs by positional (MVSNet_pytorch order), outputs by article names"


def test_positional_order_that_does_not_fit_the_ranks_is_refused_with_the_fix():
    with pytest.raises(IoMappingError) as info:
        bind_io(specs(["a", "b", "c"], [SHAPES[0], SHAPES[3], SHAPES[1]]), outputs(), subject="user.onnx")
    text = str(info.value)
    assert "'b' cannot be proj_matrices" in text and "rank 2" in text
    assert "b [1, 48] float32" in text  # the graph's actual names and shapes
    assert "--io-map a=imgs,b=depth_values,c=proj_matrices" in text


def test_io_map_overrides_names_and_partial_names_are_not_guessed():
    names = ["in_imgs", "foo", "bar", "in_depth_values"]
    with pytest.raises(IoMappingError, match="unresolved foo, bar"):
        bind_io(specs(names), outputs())
    binding = bind_io(specs(names), outputs(), parse_io_map("foo=proj_matrices,bar=inverse_proj_matrices"))
    assert binding.graph_name("inverse_proj_matrices") == "bar"
    assert "--io-map" in binding.how and "article names" in binding.how


def test_a_role_claimed_twice_is_ambiguous():
    with pytest.raises(IoMappingError, match="ambiguous graph inputs.*proj_matrices"):
        bind_io(specs(ARTICLE_INPUTS), outputs(), parse_io_map("in_inverse_proj_matrices=proj_matrices"))


def test_wrong_input_count_and_missing_outputs_are_refused():
    with pytest.raises(IoMappingError, match="5 inputs"):
        bind_io(specs(["a", "b", "c", "d", "e"], SHAPES + [(1,)]), outputs())
    with pytest.raises(IoMappingError, match="no photometric_confidence"):
        bind_io(specs(ARTICLE_INPUTS), outputs(["out_depth", "something"]))


def test_io_map_syntax_and_roles_are_checked():
    with pytest.raises(IoMappingError, match="not NAME=ROLE"):
        parse_io_map("in_imgs")
    with pytest.raises(IoMappingError, match="unknown role.*image"):
        parse_io_map("in_imgs=image")
    with pytest.raises(IoMappingError, match="does not have.*nope"):
        bind_io(specs(ARTICLE_INPUTS), outputs(), parse_io_map("nope=imgs"))


def test_shapes_and_dtypes_are_checked_against_the_case():
    ins, outs = specs(ARTICLE_INPUTS), outputs()
    binding = bind_io(ins, outs)
    check_against(binding, ins, outs, EXPECTED, "g", "small", "fix")  # the case the graph was exported for
    seed = {**EXPECTED, "imgs": (1, 3, 3, 512, 640), "depth_values": (1, 192)}
    with pytest.raises(ShapeError, match=r"in_imgs \(imgs\).*another shape than case seed.*dimension 3, 4"):
        check_against(binding, ins, outs, seed, "g", "seed", "fix")
    half = specs(ARTICLE_INPUTS, dtype="float16")
    with pytest.raises(IoMappingError, match="wrong dtype: float16"):
        check_against(bind_io(half, outs), half, outs, EXPECTED, "g", "small", "fix")


def test_symbolic_dimensions_pass_and_give_no_static_case():
    dynamic = [(1, 3, 3, "H", "W"), (1, 3, 4, 4), (1, 3, 4, 4), (1, "D")]
    ins, outs = specs(ARTICLE_INPUTS, dynamic), outputs()
    binding = bind_io(ins, outs)
    check_against(binding, ins, outs, EXPECTED, "g", "small", "fix")
    assert static_case_shape(binding, ins) is None
    assert static_case_shape(binding, specs(ARTICLE_INPUTS)) == (3, 128, 160, 48)


def test_a_one_input_graph_of_another_model_is_told_it_is_not_mvsnets_not_to_use_an_io_map():
    """A classifier's graph (one image input, one output): no --io-map can bind it, so the message
    lists its tensors, says what MVSNet takes, and suggests no --io-map."""
    with pytest.raises(IoMappingError) as info:
        bind_io([TensorSpec("input", (1, 3, 224, 224), "float32")], [TensorSpec("logits", (1, 1000), "float32")],
                subject="resnet.onnx")
    message = str(info.value)
    assert message.startswith("resnet.onnx | the graph's inputs cannot be MVSNet's: 1 input (MVSNet takes 3, or 4 "
                              "with the inverse projections); graph inputs: input")
    assert "Expected: inputs named imgs, proj_matrices" in message
    fix = message.split("Fix: ")[1]
    assert fix.startswith("gate a graph exported from MVSNet") and "--io-map input=" not in fix


def test_an_unrecognised_input_of_a_four_input_graph_still_gets_the_io_map_that_binds_it():
    with pytest.raises(IoMappingError) as info:
        bind_io(specs(["a", "in_proj_matrices", "in_inverse_proj_matrices", "in_depth_values"]), outputs())
    assert "Fix: say which is which with --io-map a=imgs," in str(info.value)
