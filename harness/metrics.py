"""Depth-map accuracy against ground truth, as MVSNet_pytorch's training code reports it.

``mae_mm``: masked mean absolute depth error; ``thres2mm``/``thres4mm``/``thres8mm``: fraction
of valid pixels whose error exceeds 2, 4 and 8 mm. Depths in scene units (mm on DTU).
"""

from __future__ import annotations

import torch


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of predicted and true depth (nan when either is constant)."""
    if a.numel() < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else float("nan")


def depth_metrics(
    depth: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, confidence: torch.Tensor | None = None
) -> dict[str, float]:
    """``depth``, ``gt``, ``mask``: ``[h, w]``. Returns floats (fractions in 0..1)."""
    valid = mask.bool() & torch.isfinite(depth)
    count = int(valid.sum())
    if count == 0:
        nan = float("nan")
        return {"valid_pixels": 0, "mae_mm": nan, "thres2mm": nan, "thres4mm": nan, "thres8mm": nan}
    err = (depth[valid].double() - gt[valid].double()).abs()
    out = {
        "valid_pixels": count,
        "mae_mm": float(err.mean()),
        "thres2mm": float((err > 2).double().mean()),
        "thres4mm": float((err > 4).double().mean()),
        "thres8mm": float((err > 8).double().mean()),
        "depth_std_mm": float(depth[valid].double().std()) if count > 1 else 0.0,
        "gt_std_mm": float(gt[valid].double().std()) if count > 1 else 0.0,
        "correlation": _correlation(depth[valid].double(), gt[valid].double()),
    }
    if confidence is not None:
        out["mean_confidence"] = float(confidence[valid].double().mean())
    return out
