"""The one rule that turns a calibration record into limits, and the tables it writes.

A limit is the worst benign value of its statistic over every sample of its gate in the machine
class's records, times ``MARGIN`` (for a lower-bound statistic such as ``agreement``: one minus
``MARGIN`` times the worst shortfall), where the worst value is first raised to the statistic's
``FLOORS`` resolution (so that a gate whose benign noise was exactly zero on the machine that
measured it does not fail the next machine's last-bit rounding). Limits are rounded up to two
significant digits. Nothing else sets a number: ``python -m harness calibrate --derive`` writes
``fixtures/tolerances.toml`` from the records, and a test checks the committed file is exactly
what the rule gives.

Gates with no measurement of their own on a class borrow, by the same rule, the samples of a gate
that stands in for them (``BORROW``): TensorRT engines cannot be run on these machines, so a
``trt`` candidate is gated by the ONNX Runtime samples of the same precision on that class; a
TF32 torch gate by the FP16 one where TF32 was not measured. The toml says which.

This module is model-neutral: which statistics gate which output kind and precision is data
(``GATED``), keyed by the metric kinds of ``harness.compare``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from harness.compare import LOWER_BOUNDS

MARGIN = 3.0
#: Resolution of each statistic: the smallest worst value the rule takes (see the module doc).
FLOORS: dict[str, float] = {
    "max_intervals_confident": 1e-4, "p99_intervals_confident": 1e-4, "max_intervals": 1e-4,
    # agreement: one pixel of the smallest depth map the gate runs (32x40 at the small case) is
    # 7.8e-4 of it, so a resolution finer than 1e-3 would fail a single benign flip at 0.8
    "max_sq_err_stable": 1e-10, "p99_abs_stable": 1e-5, "agreement": 1e-3,
    "thres2mm_pp": 0.1, "thres4mm_pp": 0.1, "stage": 1e-6, "stage_depth": 1e-4,
}
#: The statistics that gate each (output kind, precision group); see harness.compare. Depth is
#: gated over confident reference pixels and confidence over pixels away from index boundaries:
#: the all-pixel statistics are dominated by ambiguous pixels (flat or bimodal probability,
#: truncated-index flips) that move under any rounding, and are reported ungated. Reduced
#: precision gates the 99th percentile only: single confident pixels next to an occlusion edge
#: still move by a third of a step in FP16 (measured with align_corners=False), while every bug
#: of the catalogue that a depth statistic sees moves far more than 1 % of the pixels.
GATED: dict[tuple[str, str], tuple[str, ...]] = {
    ("depth", "strict"): ("max_intervals_confident",),
    ("depth", "reduced"): ("p99_intervals_confident",),
    ("confidence", "strict"): ("max_sq_err_stable", "agreement"),
    ("confidence", "reduced"): ("p99_abs_stable", "agreement"),
    ("accuracy", "strict"): ("thres2mm_pp", "thres4mm_pp"),
    ("accuracy", "reduced"): ("thres2mm_pp", "thres4mm_pp"),
}
#: (class, pair, precision) -> the (class, pair, precision) whose samples stand in for it.
BORROW: dict[tuple[str, str, str], tuple[tuple[str, str, str], str]] = {
    ("cuda", "torch-vs-trt", "fp32"): (("cuda", "torch-vs-ort", "fp32"), "no TensorRT engine runs on these machines"),
    ("cuda", "torch-vs-trt", "tf32"): (("cuda", "torch-vs-ort", "tf32"), "no TensorRT engine runs on these machines"),
    ("cuda", "torch-vs-trt", "fp16"): (("cuda", "torch-vs-ort", "fp16"), "no TensorRT engine runs on these machines"),
}


def precision_group(precision: str) -> str:
    return "strict" if precision == "fp32" else "reduced"


def floor_of(metric: str) -> float:
    return FLOORS.get(metric, FLOORS["stage"])


def round_up(value: float, digits: int = 2) -> float:
    """``value`` rounded up to ``digits`` significant digits (0 stays 0)."""
    if value <= 0:
        return 0.0
    exponent = math.floor(math.log10(value)) - digits + 1
    return float(f"{math.ceil(value / 10.0**exponent - 1e-9)}e{exponent}")


def limit_for(metric: str, worst: float, margin: float = MARGIN) -> float:
    """The rule: worst benign value (raised to the statistic's floor) times the margin."""
    if metric in LOWER_BOUNDS:
        shortfall = max(1.0 - worst, floor_of(metric))
        return max(0.0, 1.0 - round_up(shortfall * margin))
    return round_up(max(worst, floor_of(metric)) * margin)


def worst_of(metric: str, values: Iterable[float]) -> float:
    values = [v for v in values if v == v]  # NaN is a failure, never noise
    if not values:
        return math.nan
    return min(values) if metric in LOWER_BOUNDS else max(values)


def collect(samples: Iterable[Mapping[str, Any]]) -> dict[tuple, list[float]]:
    """``{(class, pair, precision, output, metric): [values]}`` over parity samples and
    ``{(class, 'stages', candidate, precision, stage): [values]}`` over stage samples."""
    found: dict[tuple, list[float]] = defaultdict(list)
    for sample in samples:
        machine = sample["machine"]
        if sample.get("pair") == "stages":
            for stage, value in sample["stages"].items():
                found[(machine, "stages", sample["candidate"], sample["precision"], stage)].append(float(value))
            continue
        for output, metrics in sample["metrics"].items():
            for metric, value in metrics.items():
                found[(machine, sample["pair"], sample["precision"], output, metric)].append(float(value))
    return found


def derive(samples: Iterable[Mapping[str, Any]], kinds: Mapping[str, str], sources: Mapping[str, str],
           margin: float = MARGIN) -> dict[tuple, dict[str, Any]]:
    """Every limit the records support: ``{key: {limit, worst, n, metric, source, borrowed}}``
    with keys as in ``collect`` (``kinds``: output name -> metric kind, plus ``accuracy``;
    ``sources``: machine class -> the record files it was read from, for the comments)."""
    values = collect(samples)
    limits: dict[tuple, dict[str, Any]] = {}
    for key, found in values.items():
        machine, pair, precision_or_candidate, output_or_precision, metric = key
        if pair == "stages":
            stat = "stage_depth" if metric == "depth" else "stage"
            worst = worst_of(stat, found)
            limits[key] = {"limit": round_up(max(worst, floor_of(stat)) * margin), "worst": worst, "n": len(found),
                           "metric": metric, "source": sources.get(machine, "?"), "borrowed": None}
            continue
        kind = kinds.get(output_or_precision, "plain")
        if metric not in GATED.get((kind, precision_group(precision_or_candidate)), ()):
            continue
        worst = worst_of(metric, found)
        if worst != worst:
            continue
        limits[key] = {"limit": limit_for(metric, worst, margin), "worst": worst, "n": len(found), "metric": metric,
                       "source": sources.get(machine, "?"), "borrowed": None}
    for (machine, pair, precision), ((from_machine, from_pair, from_precision), why) in BORROW.items():
        for key, entry in list(limits.items()):
            if key[:3] == (from_machine, from_pair, from_precision) and key[1] != "stages":
                limits.setdefault((machine, pair, precision, key[3], key[4]),
                                  {**entry, "borrowed": f"{from_machine} {from_pair} {from_precision}: {why}"})
    return limits


def to_toml(limits: Mapping[tuple, Mapping[str, Any]], margin: float = MARGIN) -> str:
    """The tolerances file: a header, the [rule] table, then one table per gate with a comment
    per limit naming its record, sample count and worst benign value."""
    lines = [
        "# Gates, per machine class. GENERATED by `python -m harness calibrate --derive` from the calibration",
        "# records under fixtures/calibration/<class>/ by the rule in harness/gates/rule.py: a limit is the worst",
        "# benign value of its statistic over every sample of the gate, raised to the statistic's resolution",
        f"# floor, times the margin {margin:g} (lower-bound statistics: 1 - margin x the worst shortfall), rounded",
        "# up to two digits. Do not edit numbers here: calibrate, then derive (a test checks this file is",
        "# exactly what the rule gives from the committed records).",
        "#",
        "# Statistics: depth over confident reference pixels (confidence >= 0.5), in depth-hypothesis steps",
        "# (max_intervals_confident; p99_intervals_confident for reduced precision); confidence over pixels",
        "# away from truncated-index boundaries (max_sq_err_stable / p99_abs_stable) and agreement on the 0.8",
        "# threshold. All-pixel statistics are reported, not gated: ambiguous pixels (textureless surfaces,",
        "# occlusion edges, index flips) move by whole steps under any rounding and would make any gate that",
        "# counts them fail faithful conversions. Stages: relative max |difference| per stage, depth in steps.",
        "",
        "[rule]",
        f"margin = {margin:g}",
        'statistic = "worst benign value over the records x margin"',
        "",
    ]
    tables: dict[tuple, list[tuple[str, Mapping[str, Any]]]] = defaultdict(list)
    for key, entry in limits.items():
        machine, pair, a, b, metric = key
        if pair == "stages":
            tables[(machine, "stages", a, b)].append((metric, entry))
        else:
            tables[(machine, pair, a, b)].append((metric, entry))
    for table in sorted(tables):
        machine, pair, a, b = table
        lines.append(f'[{machine}.stages."{a}".{b}]' if pair == "stages" else f'[{machine}."{pair}".{a}.{b}]')
        for metric, entry in sorted(tables[table]):
            origin = f"borrowed from {entry['borrowed']}; " if entry["borrowed"] else ""
            lines.append(f"{metric} = {entry['limit']:.10g}  # {origin}worst {entry['worst']:.6g} "
                         f"over {entry['n']} samples x {margin:g} ({entry['source']})")
        lines.append("")
    return "\n".join(lines)


__all__ = ["MARGIN", "FLOORS", "GATED", "BORROW", "derive", "to_toml", "limit_for", "collect", "round_up"]
