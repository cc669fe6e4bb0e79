"""Unit tests of harness/metrics.py: depth accuracy against ground truth."""

from __future__ import annotations

import math

import pytest
import torch

from harness.metrics import depth_metrics


def _example():
    """Errors 0, 1, 3, 5, 9 mm on valid pixels; the sixth pixel is masked out (error 100)."""
    gt = torch.full((2, 3), 600.0)
    depth = gt + torch.tensor([[0.0, 1.0, -3.0], [5.0, -9.0, 100.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return depth, gt, mask


def test_depth_metrics_on_a_hand_made_example():
    depth, gt, mask = _example()
    metrics = depth_metrics(depth, gt, mask)
    assert metrics["valid_pixels"] == 5
    assert metrics["mae_mm"] == pytest.approx((0 + 1 + 3 + 5 + 9) / 5)
    assert metrics["thres2mm"] == pytest.approx(3 / 5)  # 3, 5, 9
    assert metrics["thres4mm"] == pytest.approx(2 / 5)  # 5, 9
    assert metrics["thres8mm"] == pytest.approx(1 / 5)  # 9
    expected_std = float(depth[mask].double().std())
    assert metrics["depth_std_mm"] == pytest.approx(expected_std)
    assert "mean_confidence" not in metrics


def test_thresholds_are_strict():
    gt = torch.zeros(1, 3) + 500.0
    depth = gt + torch.tensor([[2.0, 4.0, 8.0]])
    metrics = depth_metrics(depth, gt, torch.ones(1, 3, dtype=torch.bool))
    assert metrics["thres2mm"] == pytest.approx(2 / 3)
    assert metrics["thres4mm"] == pytest.approx(1 / 3)
    assert metrics["thres8mm"] == 0.0


def test_mean_confidence_over_valid_pixels():
    depth, gt, mask = _example()
    confidence = torch.tensor([[1.0, 0.5, 0.5], [0.0, 0.5, 0.9]])
    assert depth_metrics(depth, gt, mask, confidence)["mean_confidence"] == pytest.approx(2.5 / 5)


def test_non_finite_depth_pixels_are_not_counted():
    depth, gt, mask = _example()
    depth[0, 0] = float("nan")
    metrics = depth_metrics(depth, gt, mask)
    assert metrics["valid_pixels"] == 4
    assert metrics["mae_mm"] == pytest.approx((1 + 3 + 5 + 9) / 4)


def test_float_mask_is_accepted():
    depth, gt, mask = _example()
    as_float, as_bool = depth_metrics(depth, gt, mask.float()), depth_metrics(depth, gt, mask)
    assert as_float.keys() == as_bool.keys()
    for key in as_bool:  # NaN (e.g. correlation with a constant ground truth) equals NaN here
        assert as_float[key] == as_bool[key] or (math.isnan(as_float[key]) and math.isnan(as_bool[key])), key


def test_correlation_follows_the_ground_truth():
    gt = torch.tensor([[500.0, 600.0], [700.0, 800.0]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    assert depth_metrics(gt + 3.0, gt, mask)["correlation"] > 0.999
    assert depth_metrics(gt.flip(0).flip(1), gt, mask)["correlation"] < -0.999
    assert math.isnan(depth_metrics(torch.full((2, 2), 650.0), gt, mask)["correlation"])


def test_empty_mask_gives_nans_and_zero_valid_pixels():
    depth, gt, _ = _example()
    metrics = depth_metrics(depth, gt, torch.zeros(2, 3, dtype=torch.bool))
    assert metrics["valid_pixels"] == 0
    for key in ("mae_mm", "thres2mm", "thres4mm", "thres8mm"):
        assert math.isnan(metrics[key])


def test_results_are_plain_floats():
    depth, gt, mask = _example()
    metrics = depth_metrics(depth, gt, mask)
    assert isinstance(metrics["valid_pixels"], int)
    assert all(isinstance(v, float) for k, v in metrics.items() if k != "valid_pixels")
