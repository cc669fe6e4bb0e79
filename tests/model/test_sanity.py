"""Unit tests of harness/model/sanity.py: degenerate references are named, real ones pass."""

from __future__ import annotations

import torch

from harness.model.sanity import degenerate_reasons

VALUES = torch.linspace(425.0, 935.0, 48)[None]


def test_a_varying_peaked_reference_is_not_degenerate():
    depth = torch.linspace(500.0, 900.0, 32 * 40).reshape(1, 32, 40)
    assert degenerate_reasons({"depth": depth, "photometric_confidence": torch.full((1, 32, 40), 0.9)}, VALUES) == []


def test_a_flat_probability_volume_is_named():
    depth = torch.linspace(500.0, 900.0, 32 * 40).reshape(1, 32, 40)
    flat = torch.full((1, 32, 40), 4.0 / 48)
    (reason,) = degenerate_reasons({"depth": depth, "photometric_confidence": flat}, VALUES)
    assert reason.startswith("probability volume is flat: weights are degenerate")


def test_a_constant_depth_map_is_named():
    reasons = degenerate_reasons({"depth": torch.full((1, 32, 40), 680.0),
                                  "photometric_confidence": torch.full((1, 32, 40), 0.9)}, VALUES)
    assert len(reasons) == 1 and reasons[0].startswith("depth map is (nearly) constant: weights are degenerate")
