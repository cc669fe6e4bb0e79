"""Output comparison as data: outputs in, one frozen ``OutputDiff`` per output name out.

Which metrics an output gets is its metric kind in the model's spec (``harness.modelspec``;
MVSNet's ``depth`` is a depth, its ``photometric_confidence`` a confidence), never its name.
Metrics (all computed on CPU in float64 from the two outputs; depth in scene units, mm on DTU):

* ``max_sq_err``: the source article's metric, max over pixels of (candidate - reference)^2;
* ``max_abs``, ``mean_abs``, ``p99_abs``: absolute error statistics;
* ``nan``: non-finite values in the candidate (any fails);
* depth kind only: ``frac_over_1mm`` / ``2mm`` / ``4mm`` (fraction of pixels whose depth differs by
  more than that), ``p99_intervals`` / ``max_intervals`` (the same errors in depth-hypothesis
  steps, which is how reduced-precision errors scale) and ``index_flips`` (pixels whose integer hypothesis index differs: the
  photometric confidence is gathered there, so a flip moves the confidence window);
  ``max_intervals_confident`` / ``p99_intervals_confident``: the same over the pixels where the
  reference is confident (its confidence-kind output >= ``CONFIDENT``). Where the probability
  volume is flat or bimodal (textureless surfaces, occlusion edges) the depth is an average of
  far-apart hypotheses, so rounding-level differences move it by whole steps: those pixels are
  ambiguous for any conversion and dominate the all-pixel statistics, so the gates use these;
* confidence kind only: ``agreement`` (fraction of pixels on the same side of the 0.8 threshold that
  MVSNet_pytorch's fusion uses) and ``max_sq_err_stable``: max squared error over pixels whose
  expected hypothesis index lies farther than ``INDEX_MARGIN`` from an integer in both outputs.
  The confidence is gathered at the truncated index, so where the index sits on an integer
  boundary a rounding-level difference moves the whole window; those pixels are counted by
  ``index_flips`` / ``near_boundary`` instead of dominating the maximum (the depth-kind output
  of the same model gives the index); ``p99_abs_stable``: the 99th percentile over those pixels.

A tolerance gates some of these metrics with upper bounds (``agreement`` with a lower bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from harness.default_model import resolve
from harness.errors import ParityError
from harness.modelspec import ModelSpec

CONFIDENCE_THRESHOLD = 0.8
INDEX_MARGIN = 0.02  # hypotheses
#: A pixel whose reference confidence (probability mass in the 4-hypothesis window) is at least
#: this is "confident": its probability has one clear peak. Flat volumes give about 4/D.
CONFIDENT = 0.5
LOWER_BOUNDS = frozenset({"agreement"})  # gated metrics where bigger is better
#: Metrics that are fractions of the pixels: shown as percentages.
FRACTIONS = frozenset({"frac_over_1mm", "frac_over_2mm", "frac_over_4mm", "agreement", "near_boundary", "confident"})


def format_metric(metric: str, value: float) -> str:
    """``agreement 0.99995`` -> ``99.995%``; other metrics with 3 significant digits."""
    if metric in FRACTIONS:
        return f"{100 * value:.3f}%"
    return f"{value:.3g}"


@dataclass(frozen=True)
class OutputDiff:
    """How one output of a candidate differs from the reference. Truthy when it passed."""

    name: str
    metrics: Mapping[str, float]
    tolerance: Mapping[str, float] = field(default_factory=dict)

    @property
    def failures(self) -> dict[str, tuple[float, float]]:
        """``{metric: (observed, limit)}`` for every gate that failed (NaN always fails)."""
        failed = {}
        if self.metrics.get("nan", 0) > 0:
            failed["nan"] = (self.metrics["nan"], 0.0)
        for metric, limit in self.tolerance.items():
            observed = self.metrics.get(metric)
            if observed is None:
                continue
            ok = observed >= limit if metric in LOWER_BOUNDS else observed <= limit
            if not ok or observed != observed:  # NaN compares false
                failed[metric] = (observed, limit)
        return failed

    def __bool__(self) -> bool:
        return not self.failures

    @property
    def needed(self) -> dict[str, float]:
        """The tolerance that would have passed: each gated metric's observed value."""
        return {m: self.metrics[m] for m in self.tolerance if m in self.metrics}

    def gate_text(self) -> str:
        """Each gated metric with its limit, e.g. ``max_intervals 0.0003 <= 0.1, agreement 99.995% >= 99.900%``;
        ``(no gate)`` when the output is not gated."""
        parts = []
        for metric, limit in self.tolerance.items():
            if metric not in self.metrics:
                continue
            sign = ">=" if metric in LOWER_BOUNDS else "<="
            mark = "" if metric not in self.failures else " FAIL"
            parts.append(f"{metric} {format_metric(metric, self.metrics[metric])} {sign} "
                         f"{format_metric(metric, limit)}{mark}")
        if self.metrics.get("nan", 0) > 0:
            parts.append(f"nan {self.metrics['nan']:.0f} FAIL")
        return ", ".join(parts) or "(no gate)"

    def row(self) -> str:
        """``<name>  ok|FAIL  <gate_text>``: each gated metric once, with its limit."""
        return f"{self.name:<24} {'ok' if self else 'FAIL':<4} {self.gate_text()}"


def _p99(values: torch.Tensor) -> float:
    flat = values.flatten()
    if flat.numel() == 0:
        return 0.0
    return float(torch.quantile(flat, 0.99)) if flat.numel() > 1 else float(flat.max())


def _abs_stats(diff: torch.Tensor) -> dict[str, float]:
    flat = diff.abs().flatten()
    if flat.numel() == 0:
        return {"max_abs": 0.0, "mean_abs": 0.0, "p99_abs": 0.0, "max_sq_err": 0.0}
    return {
        "max_abs": float(flat.max()),
        "mean_abs": float(flat.mean()),
        "p99_abs": float(torch.quantile(flat, 0.99)) if flat.numel() > 1 else float(flat.max()),
        "max_sq_err": float((flat**2).max()),
    }


def expected_index(depth: torch.Tensor, depth_values: torch.Tensor) -> torch.Tensor:
    """Fractional hypothesis index of each depth (``[B, h, w]``): MVSNet truncates this value
    to pick the confidence window."""
    values = depth_values.to(torch.float64).reshape(depth_values.shape[0], -1)
    start = values[:, :1, None]
    step = (values[:, 1:2] - values[:, :1])[:, :, None]
    return (depth.to(torch.float64) - start) / step


def depth_index(depth: torch.Tensor, depth_values: torch.Tensor) -> torch.Tensor:
    """Integer hypothesis index of each depth (``[B, h, w]``), as MVSNet truncates it."""
    return torch.floor(expected_index(depth, depth_values)).long()


def near_index_boundary(depth: torch.Tensor, depth_values: torch.Tensor, margin: float = INDEX_MARGIN) -> torch.Tensor:
    index = expected_index(depth, depth_values)
    return (index - torch.round(index)).abs() < margin


def compare(
    reference: Mapping[str, torch.Tensor],
    candidate: Mapping[str, torch.Tensor],
    tolerance: Mapping[str, Mapping[str, float]] | None = None,
    depth_values: torch.Tensor | None = None,
    model_spec: ModelSpec | None = None,
) -> dict[str, OutputDiff]:
    """Compare every output the reference has. ``tolerance`` maps output name -> gates.

    ``depth_values`` (``[B, D]``): the depth hypotheses, for the depth kind's metrics in steps and
    index flips. ``model_spec`` gives each output's metric kind (MVSNet's when None); an output
    the spec does not list gets the absolute statistics only."""
    kinds = resolve(model_spec).kinds()
    tolerance = tolerance or {}
    results: dict[str, OutputDiff] = {}
    missing = [name for name in reference if name not in candidate]
    if missing:
        raise ParityError("candidate outputs", "missing outputs", observed=missing, expected=f"{sorted(reference)}",
                          fix="export the graph with the harness's output names")
    ref = {k: v.detach().cpu().to(torch.float64) for k, v in reference.items()}
    cand = {k: candidate[k].detach().cpu().to(torch.float64) for k in reference}
    for name in ref:
        if ref[name].shape != cand[name].shape:
            raise ParityError(name, "shape differs", observed=tuple(cand[name].shape), expected=tuple(ref[name].shape),
                              fix="check the export shapes and the runner's output allocation")
    flips = unstable = None
    depth = next((name for name in ref if kinds.get(name) == "depth"), None)
    confidence = next((name for name in ref if kinds.get(name) == "confidence"), None)
    confident = None
    if depth is not None and confidence is not None and ref[confidence].shape == ref[depth].shape:
        confident = ref[confidence] >= CONFIDENT
    if depth_values is not None and depth is not None:
        depth_values = depth_values.detach().cpu()
        flips = depth_index(ref[depth], depth_values) != depth_index(cand[depth], depth_values)
        unstable = flips | near_index_boundary(ref[depth], depth_values) | near_index_boundary(cand[depth], depth_values)
    for name in ref:
        r, c = ref[name], cand[name]
        finite = torch.isfinite(c)
        metrics: dict[str, float] = {"nan": float((~finite).sum())}
        diff = torch.where(finite, c - r, torch.zeros_like(r))
        metrics.update(_abs_stats(diff))
        kind = kinds.get(name, "plain")
        if kind == "depth":
            for mm in (1, 2, 4):
                metrics[f"frac_over_{mm}mm"] = float((diff.abs() > mm).double().mean())
            if flips is not None and unstable is not None:
                metrics["index_flips"] = float(flips.sum())
                metrics["near_boundary"] = float(unstable.double().mean())
            if depth_values is not None and depth_values.shape[-1] > 1:
                # in hypothesis steps: reduced-precision errors scale with the depth interval
                step = float((depth_values.reshape(depth_values.shape[0], -1)[:, 1:2]
                              - depth_values.reshape(depth_values.shape[0], -1)[:, :1]).abs().min())
                if step > 0:
                    metrics["p99_intervals"] = metrics["p99_abs"] / step
                    metrics["max_intervals"] = metrics["max_abs"] / step
                    # no confidence output to tell confident pixels by: every pixel counts
                    mask = confident if confident is not None else torch.ones_like(diff, dtype=torch.bool)
                    sure = diff[mask].abs()
                    metrics["confident"] = float(mask.double().mean())
                    metrics["max_intervals_confident"] = float(sure.max()) / step if sure.numel() else 0.0
                    metrics["p99_intervals_confident"] = _p99(sure) / step
        elif kind == "confidence":
            metrics["agreement"] = float(((r > CONFIDENCE_THRESHOLD) == (c > CONFIDENCE_THRESHOLD)).double().mean())
            stable = diff if unstable is None else diff[~unstable]
            metrics["max_sq_err_stable"] = float((stable**2).max()) if stable.numel() else 0.0
            metrics["p99_abs_stable"] = _p99(stable.abs())
        results[name] = OutputDiff(name, metrics, dict(tolerance.get(name, {})))
    return results


def assert_parity(diffs: Mapping[str, OutputDiff], subject: str, detail: str = "") -> None:
    """Raise ``ParityError`` (an AssertionError) with one table row per output if any failed;
    ``detail`` (e.g. the per-stage localisation table) is appended to the message."""
    if all(diffs.values()):
        return
    rows = "\n".join("  " + d.row() for d in diffs.values()) + (f"\n{detail}" if detail else "")
    needed = "; ".join(f"{d.name}: {', '.join(f'{m}={v:.3g}' for m, v in d.needed.items())}" for d in diffs.values() if not d)
    raise ParityError(
        subject, "outputs differ beyond tolerance", observed="\n" + rows + "\n", expected="every gate within fixtures/tolerances.toml",
        fix=f"if the difference is expected, the tolerance that would pass is {needed}; otherwise localise it "
        "(per-stage probes) before loosening anything",
    )
