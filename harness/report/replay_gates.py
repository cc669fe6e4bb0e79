"""Translate the harness's parity gates into Polygraphy's and trtexec's tolerances.

How the harness's gates become Polygraphy's options (``polygraphy run`` ``--check-error-stat``,
``--error-quantile``, ``--atol`` per output, each as ``<output>:<value>``; ``--rtol 0``). Polygraphy
fails a statistic only when both its absolute AND its relative value exceed their tolerance
(``SimpleThreshold.passed`` in polygraphy/comparator/compare.py; NaN always fails), so ``--rtol 0``
leaves the absolute tolerance, in the output's own units, as the only criterion, like the harness.
With ``d`` the depth step:

=======================  ==========================================  ==========================
harness gate             Polygraphy                                  trtexec (11.1)
=======================  ==========================================  ==========================
``max_abs <= a``         ``max``, atol ``a``                         ``lInf``, threshold ``a``
``max_sq_err <= s``      ``max``, atol ``sqrt(s)`` (mm^2 -> mm)      ``lInf``, threshold sqrt(s)
``max_intervals <= k``   ``max``, atol ``k * d``                     ``lInf``, threshold ``k*d``
``frac_over_Nmm <= 0``   ``max``, atol ``N``                         ``lInf``, threshold ``N``
``p99_abs <= a``         ``quantile`` 0.99, atol ``a``               ``l0``, atol a, thr. 0.01
``p99_intervals <= k``   ``quantile`` 0.99, atol ``k * d``           ``l0``, atol k*d, thr. 0.01
``frac_over_Nmm <= f``   ``quantile`` 1-f, atol ``N`` (approximate)  ``l0``, atol N, thr. ``f``
``mean_abs <= a``        ``mean``, atol ``a``                        ``l1``, threshold ``a``
=======================  ==========================================  ==========================

The calibrated gates judge a subset of the pixels (depth where the reference is confident,
confidence away from a truncated-index boundary), which neither tool can mask. With the
reference's share ``c`` of such pixels (``reference_fractions``) the replay checks the matching
quantile over every pixel instead, marked approximate: ``max_intervals_confident <= k`` becomes
quantile ``c``, atol ``k * d`` (the ``1 - c`` largest errors are left out, as many pixels as the
harness leaves out, though not necessarily the same ones); ``p99_intervals_confident`` quantile
``0.99 c``; ``max_sq_err_stable <= s`` quantile ``c``, atol ``sqrt(s)``; ``p99_abs_stable``
quantile ``0.99 c``.

Several ``max`` gates of one output merge into the tightest. Polygraphy checks one statistic per
output per command, so an output with gates on two statistics gets a second command (step
``onnxrt_2`` ...). Quantiles interpolate linearly in both tools (numpy / torch), so a p99 gate agrees
to the interpolation; ``frac_over_Nmm`` with a non-zero share is an approximation and says so. Gates
that neither tool can express (``agreement``, ``max_sq_err_stable``, anything unknown) are listed as
comments in commands.sh, never silently dropped; outputs left with no expressible gate are excluded
from the Polygraphy commands (``--onnx-outputs`` / ``--trt-outputs`` name the gated ones).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from harness.errors import InvalidArgument

#: Gates the harness checks that neither Polygraphy nor trtexec can express, and why.
INEXPRESSIBLE = {
    "agreement": "share of pixels on the same side of a threshold: no tool compares thresholded outputs",
    "max_sq_err_stable": "max over the pixels away from a depth-index boundary: needs the harness's pixel mask",
    "p99_abs_stable": "p99 over the pixels away from a depth-index boundary: needs the harness's pixel mask",
    "max_intervals_confident": "max over the reference's confident pixels: needs the harness's pixel mask",
    "p99_intervals_confident": "p99 over the reference's confident pixels: needs the harness's pixel mask",
    "nan": "checked by every Polygraphy statistic (a NaN error fails), by trtexec only through its metric",
}
_FRAC_OVER = re.compile(r"frac_over_(\d+(?:\.\d+)?)mm")


@dataclass(frozen=True)
class Check:
    """One gate as Polygraphy checks it: ``stat`` (max | mean | quantile) of |candidate - reference|
    within ``atol`` (the output's units), ``quantile`` for the quantile stat; ``source`` says how."""

    output: str
    stat: str
    atol: float
    quantile: float | None = None
    source: str = ""
    approximate: bool = False


@dataclass(frozen=True)
class Inexpressible:
    output: str
    metric: str
    limit: float
    reason: str


def depth_step_of(depth_values: torch.Tensor) -> float:
    """The depth-hypothesis interval (``[B, D]`` or ``[B, D, 1, 1]``), smallest over the batch, as
    harness.compare turns depth errors into steps."""
    values = depth_values.detach().cpu().to(torch.float64).reshape(depth_values.shape[0], -1)
    if values.shape[1] < 2:
        raise InvalidArgument("depth_values", "fewer than two hypotheses", observed=tuple(depth_values.shape),
                              expected="[B, D] with D >= 2", fix="pass the case's depth_values")
    return float((values[:, 1] - values[:, 0]).abs().min())


def reference_fractions(reference: Mapping[str, torch.Tensor], depth_values: torch.Tensor | None,
                        kinds: Mapping[str, str]) -> dict[str, float]:
    """The reference's share of the pixels the calibrated gates judge: ``confident`` (its
    confidence-kind output >= CONFIDENT) and ``stable`` (its expected depth index away from an
    integer), for the approximate quantile checks above."""
    from harness.compare import CONFIDENT, near_index_boundary

    shares: dict[str, float] = {}
    depth = next((n for n, k in kinds.items() if k == "depth" and n in reference), None)
    confidence = next((n for n, k in kinds.items() if k == "confidence" and n in reference), None)
    if confidence is not None:
        shares["confident"] = float((reference[confidence].detach().cpu() >= CONFIDENT).double().mean())
    if depth is not None and depth_values is not None:
        near = near_index_boundary(reference[depth].detach().cpu().double(), depth_values.detach().cpu())
        shares["stable"] = float((~near).double().mean())
    return shares


#: The subset statistics and (the share that names their pixels, the quantile of that subset).
SUBSET = {"max_intervals_confident": ("confident", 1.0, "max_intervals"),
          "p99_intervals_confident": ("confident", 0.99, "p99_intervals"),
          "max_sq_err_stable": ("stable", 1.0, "max_sq_err"), "p99_abs_stable": ("stable", 0.99, "p99_abs")}


def translate_gates(gates: Mapping[str, Mapping[str, float]], depth_step: float | None = None,
                    fractions: Mapping[str, float] | None = None
                    ) -> tuple[dict[str, list[Check]], list[Inexpressible]]:
    """``{output: [Check, ...]}`` (one per statistic, tightest first merged) and the gates left out;
    ``fractions`` (``reference_fractions``) lets the subset statistics through as approximations."""
    checks: dict[str, list[Check]] = {}
    left: list[Inexpressible] = []
    for output, table in gates.items():
        found: list[Check] = []
        for metric, raw in table.items():
            limit = float(raw)
            check = _one_gate(output, metric, limit, depth_step, fractions or {})
            if isinstance(check, Inexpressible):
                left.append(check)
            else:
                found.append(check)
        merged: dict[tuple[str, float | None], Check] = {}
        for check in found:  # one check per statistic: the tightest limit, every source named
            kept = merged.get((check.stat, check.quantile))
            if kept is not None:
                tight, loose = (check, kept) if check.atol < kept.atol else (kept, check)
                check = Check(output, tight.stat, tight.atol, tight.quantile, f"{tight.source}; {loose.source}",
                              tight.approximate)
            merged[(check.stat, check.quantile)] = check
        order = {"max": 0, "quantile": 1, "mean": 2}
        if merged:
            checks[output] = sorted(merged.values(), key=lambda c: (order[c.stat], -(c.quantile or 0)))
    return checks, left


def _one_gate(output: str, metric: str, limit: float, step: float | None,
              fractions: Mapping[str, float]) -> Check | Inexpressible:
    def steps(k: float) -> float:
        if step is None or not step > 0:
            raise InvalidArgument(f"{output}.{metric}", "a gate in depth steps needs the depth step", observed=step,
                                  expected="a positive depth_step (mm per hypothesis)",
                                  fix="pass depth_step=depth_step_of(depth_values)")
        return k * step

    if metric == "max_abs":
        return Check(output, "max", limit, None, f"max_abs <= {limit:g}")
    if metric == "max_sq_err":
        return Check(output, "max", math.sqrt(limit), None, f"max_sq_err <= {limit:g} -> max |err| <= sqrt({limit:g})")
    if metric == "max_intervals":
        return Check(output, "max", steps(limit), None, f"max_intervals <= {limit:g} steps of {step:g}")
    if metric == "p99_abs":
        return Check(output, "quantile", limit, 0.99, f"p99_abs <= {limit:g}")
    if metric == "p99_intervals":
        return Check(output, "quantile", steps(limit), 0.99, f"p99_intervals <= {limit:g} steps of {step:g}")
    if metric == "mean_abs":
        return Check(output, "mean", limit, None, f"mean_abs <= {limit:g}")
    if metric in SUBSET and SUBSET[metric][0] in fractions:
        share_name, within, whole = SUBSET[metric]
        share = fractions[share_name]
        inner = _one_gate(output, whole, limit, step, fractions)
        assert isinstance(inner, Check)
        quantile = max(0.0, min(1.0, within * share))
        return Check(output, "quantile", inner.atol, quantile,
                     f"{metric} <= {limit:g} over the {share:.1%} {share_name} pixels -> quantile {quantile:.4g} "
                     f"of every pixel <= {inner.atol:.4g}", approximate=True)
    over = _FRAC_OVER.fullmatch(metric)
    if over:
        mm = float(over.group(1))
        if limit <= 0:
            return Check(output, "max", mm, None, f"{metric} = 0 -> max |err| <= {mm:g}")
        if limit >= 1:
            return Inexpressible(output, metric, limit, "a share of 1 or more allows everything")
        return Check(output, "quantile", mm, 1.0 - limit, f"{metric} <= {limit:g} -> quantile {1 - limit:g} <= {mm:g}",
                     approximate=True)
    return Inexpressible(output, metric, limit, INEXPRESSIBLE.get(metric, "no Polygraphy or trtexec equivalent"))


__all__ = ["Check", "Inexpressible", "INEXPRESSIBLE", "depth_step_of", "reference_fractions", "translate_gates"]
