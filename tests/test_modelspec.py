"""Unit tests of harness/modelspec.py and harness/default_model.py: the model seam as data."""

from __future__ import annotations

import pytest
import torch

from harness.default_model import default_spec, resolve
from harness.errors import InvalidArgument
from harness.modelspec import ModelSpec, OutputSpec, no_checks


def _spec(*outputs: OutputSpec) -> ModelSpec:
    return ModelSpec("two-heads", "Two heads", ("x",), outputs)


def test_a_spec_lists_its_outputs_and_their_metric_kinds_in_order():
    spec = _spec(OutputSpec("mask", "confidence"), OutputSpec("features"))
    assert spec.output_names == ("mask", "features")
    assert spec.kinds() == {"mask": "confidence", "features": "plain"}
    assert spec.output("mask") == OutputSpec("mask", "confidence")
    assert spec.output("absent") is None


def test_an_unknown_metric_kind_is_refused_naming_the_known_ones():
    with pytest.raises(InvalidArgument, match="unknown metric kind: ranking") as info:
        OutputSpec("score", "ranking")  # type: ignore[arg-type]
    assert "depth / confidence / plain" in str(info.value)


def test_repeated_or_missing_output_names_are_refused():
    with pytest.raises(InvalidArgument, match="output names empty or repeated"):
        _spec(OutputSpec("y"), OutputSpec("y"))
    with pytest.raises(InvalidArgument, match="output names empty or repeated"):
        _spec()


def test_report_columns_default_to_the_output_name():
    out = OutputSpec("features")
    assert out.gate_title == "features gate (limit)"
    assert out.table_columns == (("max_abs", "features max abs"), ("max_sq_err", "features max sq err"))
    titled = OutputSpec("depth", "depth", gate_column="depth gate (limit)", columns=(("max_abs", "depth max abs (mm)"),))
    assert titled.gate_title == "depth gate (limit)" and titled.table_columns == (("max_abs", "depth max abs (mm)"),)


def test_a_spec_without_rules_accepts_any_feed_and_cannot_say_output_shapes():
    spec = _spec(OutputSpec("y"))
    assert spec.validate is no_checks
    spec.validate({"x": torch.zeros(1)}, subject="runner", input_names=("x",), values=True)
    assert spec.output_shape is None


def test_the_default_is_mvsnet_and_an_injected_spec_wins():
    spec = _spec(OutputSpec("y"))
    assert default_spec().name == "mvsnet"
    assert resolve(None) is default_spec()
    assert resolve(spec) is spec
