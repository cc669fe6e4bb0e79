"""Is the reference worth comparing against? With degenerate weights (a flat probability
volume, a constant depth map) any two backends agree exactly, so every parity check would pass
vacuously: the gate and the main job both refuse such a reference with the same message.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

FLAT_WINDOW = 4.0  # MVSNet's confidence sums the probability over 4 hypotheses


def degenerate_reasons(outputs: Mapping[str, torch.Tensor], depth_values: torch.Tensor) -> list[str]:
    """Why MVSNet's outputs are degenerate (empty when they are not): the depth map must vary by
    more than one hypothesis step, and the mean confidence must be above twice that of a uniform
    probability volume (``4 / D``)."""
    values = depth_values.detach().double().reshape(depth_values.shape[0], -1)
    step = float((values[:, 1] - values[:, 0]).abs().min()) if values.shape[1] > 1 else 0.0
    flat = FLAT_WINDOW / values.shape[1]
    depth = outputs["depth"].detach().double()
    confidence = outputs["photometric_confidence"].detach().double()
    reasons = []
    if float(depth.std()) <= step:
        reasons.append(f"depth map is (nearly) constant: weights are degenerate (std {float(depth.std()):.3g} "
                       f"<= one hypothesis step {step:.3g})")
    if float(confidence.mean()) <= 2 * flat:
        reasons.append(f"probability volume is flat: weights are degenerate (mean confidence "
                       f"{float(confidence.mean()):.4f} <= twice a uniform volume's {2 * flat:.4f})")
    return reasons
