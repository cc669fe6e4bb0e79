"""Unit tests of harness/model/spec.py: MVSNet's side of the model seam."""

from __future__ import annotations

import pytest
import torch

from harness.convert.workarounds import INPUTS_WITH_INVERSE, INPUTS_WITHOUT_INVERSE
from harness.errors import InvalidInput, ShapeError
from harness.model.mvsnet import OUTPUT_NAMES
from harness.model.spec import MVSNET, REQUIRED_INPUTS, output_shape


def test_the_spec_names_what_the_model_and_its_workarounds_name():
    assert MVSNET.output_names == OUTPUT_NAMES
    assert set(MVSNET.inputs) == set(INPUTS_WITH_INVERSE)
    assert set(REQUIRED_INPUTS) == set(INPUTS_WITHOUT_INVERSE)
    assert MVSNET.kinds() == {"depth": "depth", "photometric_confidence": "confidence"}


def test_outputs_are_a_quarter_of_the_reference_image():
    feed = {"imgs": torch.zeros(2, 3, 3, 128, 160)}
    assert output_shape(feed) == (2, 32, 40)
    assert MVSNET.output_shape is not None and MVSNET.output_shape(feed, "depth") == (2, 32, 40)
    with pytest.raises(ShapeError, match="imgs | wrong rank: 4"):
        output_shape({"imgs": torch.zeros(3, 3, 128, 160)})


def test_a_feed_without_the_roles_is_refused_naming_the_runner_and_its_inputs():
    feed = {"in_imgs": torch.zeros(1, 3, 3, 64, 64)}
    with pytest.raises(InvalidInput, match="not named by MVSNet's roles") as info:
        MVSNET.validate(feed, subject="ort-cpu", input_names=("in_imgs",), values=True)
    assert str(info.value).startswith("ort-cpu | ")
    assert "['in_imgs']" in str(info.value) and "user_onnx_runner" in str(info.value)


def test_value_checks_run_only_when_asked():
    height, width, views = 64, 64, 2
    proj = torch.eye(4).repeat(1, views, 1, 1)
    feed = {"imgs": torch.full((1, views, 3, height, width), float("nan")), "proj_matrices": proj,
            "depth_values": torch.linspace(425.0, 935.0, 16).unsqueeze(0)}
    MVSNET.validate(feed, subject="r", input_names=tuple(feed), values=False)
    with pytest.raises(InvalidInput, match="holds NaN or Inf"):
        MVSNET.validate(feed, subject="r", input_names=tuple(feed), values=True)
