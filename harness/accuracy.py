"""Depth accuracy against ground truth: per backend on a case's scene, and of the torch model
on held-out synthetic scenes of a family (``harness.data.families``: seeds never used in training;
the ``independent`` family is never trained on at all).

Metrics are MVSNet_pytorch's: masked mean absolute error and the fraction of valid pixels whose
error exceeds 2, 4 and 8 mm (``harness.metrics.depth_metrics``), plus the mean photometric
confidence (a flat probability volume gives 4/D).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.chain import Chain, Leg
from harness.data.cases import Case, case_feed, get_case
from harness.data.families import family_spec
from harness.data.scenes import scene_views
from harness.data.synthetic import render_scene
from harness.data.views import fit_to_size
from harness.errors import InvalidInput
from harness.metrics import depth_metrics

#: MVSNet_pytorch's thresholds are in mm; the gates compare them in percentage points.
THRESHOLDS = ("thres2mm", "thres4mm", "thres8mm")


def accuracy_row(outputs: dict[str, torch.Tensor], gt: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    depth = outputs["depth"][0].detach().float().cpu()
    if depth.shape != gt.shape:
        raise InvalidInput("ground truth", "size differs from the depth map", observed=tuple(gt.shape), expected=tuple(depth.shape),
                           fix="store ground truth at 1/4 of the image size")
    return depth_metrics(depth, gt, mask, outputs["photometric_confidence"][0].detach().float().cpu())


def backend_accuracy(chain: Chain, leg: Leg | None, case: str,
                     outputs: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Accuracy of one backend (``None``: the torch strict FP32 reference) on the case's scene;
    ``outputs`` saves a second inference when the caller already has the backend's outputs."""
    views = chain.views(case)
    if views.depth is None or views.mask is None:
        raise InvalidInput(views.source or case, "scene has no ground truth", observed="no depths/NNNNNNNN.pfm",
                           expected="a scene folder with ground truth", fix="use the bundled scene or add depths/ and masks/")
    if leg is None:
        outputs, name = chain.reference_outputs(case), "torch-fp32"
    else:
        name = leg.candidate
        if outputs is None:
            outputs = chain.candidate_runner(leg).infer(chain.workaround_feed(case, leg.workaround))
    row = {"case": case, "backend": name, **accuracy_row(outputs, views.depth, views.mask)}
    if leg is not None:
        row.update({"workaround": leg.workaround, "exporter": leg.exporter, "graph": leg.variant})
    return row


def accuracy_gates_hold(reference: dict[str, Any], candidate: dict[str, Any],
                        gates: dict[str, float]) -> dict[str, tuple[float, float]]:
    """``{gate: (observed pp, limit pp)}`` for every threshold metric that moved too far."""
    failed = {}
    for key in ("thres2mm", "thres4mm"):
        limit = gates.get(f"{key}_pp")
        if limit is None:
            continue
        moved = abs(float(candidate[key]) - float(reference[key])) * 100.0
        if not moved <= limit:
            failed[f"{key}_pp"] = (moved, limit)
    return failed


def held_out_accuracy(model: torch.nn.Module, case: Case, seeds: list[int], device: torch.device,
                      num_views: int | None = None, family: str = "classic") -> list[dict[str, Any]]:
    """The torch model on freshly rendered scenes of ``seeds`` in ``family`` at the case's shape."""
    rows = []
    model = model.to(device).eval()
    for seed in seeds:
        spec = family_spec(family, seed, num_views or case.views, case.height, case.width)
        views = fit_to_size(scene_views(render_scene(spec, device="cpu")), case.height, case.width)
        feed = {k: v.to(device) for k, v in case_feed(case, views, with_inverse=False).items()}
        with torch.inference_mode():
            outputs = model(**feed)
        assert views.depth is not None and views.mask is not None
        rows.append({"seed": seed, "case": case.name, "family": family, **accuracy_row(outputs, views.depth, views.mask)})
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Pixel-weighted means over scenes (each scene's fractions weighted by its valid pixels)."""
    weights = [float(r["valid_pixels"]) for r in rows]
    total = sum(weights) or 1.0
    keys = ("mae_mm", *THRESHOLDS, "mean_confidence")
    return {k: sum(w * float(r[k]) for w, r in zip(weights, rows)) / total for k in keys if all(k in r for r in rows)}


def held_out_case(name: str) -> Case:
    return get_case(name)
