"""``python -m harness check --model MODULE:CALLABLE`` alone: which sampling convention your model
code computes, and what the other one costs with your weights.

MVSNet_pytorch's ``homo_warping`` calls ``F.grid_sample`` without ``align_corners``: torch < 1.3
sampled with ``True`` (the published checkpoints were trained so), torch >= 1.3 with ``False``.
The same code therefore computes two different networks depending on the torch it runs on, and a
graph exported from it inherits whichever it ran with. This check runs your network (with
``--weights``) on each case beside the harness's MVSNet in both conventions, torch strict FP32 on
the same device and inputs, and says which one it matches:

* **matches**: every output within the FP32 ``torch-vs-torch`` gate of ``fixtures/tolerances.toml``
  for this machine class: the calibrated benign noise between two FP32 torch computations of
  MVSNet (depth in hypothesis steps over the reference's confident pixels, the confidence's squared
  error where its index is stable, and its agreement; the limits are printed with the result). A
  different operation order (a MatMul for the projection, a float32 ``torch.inverse``) stays far
  inside it; the other convention moves the depth by millimetres, hundreds of times over it. The
  maximum |depth difference| in mm is printed beside the gated values so the distance is visible;
* **what the other convention costs**: the depth of each convention (and of your code) against the
  scene's ground truth, as MVSNet_pytorch reports it (mean absolute error in mm, the share of valid
  pixels off by more than 2 and 4 mm), where the scene has ground truth (the bundled one does).

Exit status: 0 your code matches one convention on every case (which one is printed; matching the
less accurate one is reported, not failed: the model is yours), 1 it matches neither on some case
(it computes something else than MVSNet: the nearer convention's differences are printed), 2 bad
input.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from typing import Any

import torch

from harness.accuracy import accuracy_row
from harness.chain import Chain, ChainConfig
from harness.compare import OutputDiff, compare, format_metric
from harness.data.cases import Case, get_case
from harness.gates.limits import Tolerances
from harness.model.mvsnet import OUTPUT_NAMES
from harness.options import namespace_values

CONVENTIONS = (True, False)
REFERENCE = "torch-fp32"  # the gate's pair: torch strict FP32 against torch strict FP32


@dataclass(frozen=True)
class ConventionResult:
    """Your model's outputs against the harness MVSNet in one convention, on one case."""

    align_corners: bool
    diffs: dict[str, OutputDiff]
    accuracy: dict[str, float] | None  # the convention's depth against ground truth; None without it

    @property
    def matches(self) -> bool:
        return all(self.diffs.values())

    @property
    def name(self) -> str:
        return f"align_corners={self.align_corners}"

    def cells(self) -> str:
        """The gated values, ``!`` after one over its limit, and the max |depth difference| in mm."""
        parts = []
        for output, diff in self.diffs.items():
            failures = diff.failures
            values = [f"{m} {format_metric(m, diff.metrics[m])}{'!' if m in failures else ''}"
                      for m in diff.tolerance if m in diff.metrics]
            parts.append(f"{output} {', '.join(values)}")
        depth = self.diffs.get("depth")
        if depth is not None and "max_abs" in depth.metrics:
            parts.append(f"max |depth diff| {depth.metrics['max_abs']:.3g} mm")
        return "; ".join(parts)


@dataclass(frozen=True)
class CaseResult:
    case: Case
    conventions: tuple[ConventionResult, ...]
    yours: dict[str, float] | None  # your model's depth against ground truth
    valid_pixels: int = 0

    @property
    def matched(self) -> tuple[ConventionResult, ...]:
        return tuple(c for c in self.conventions if c.matches)

    def nearest(self) -> ConventionResult:
        """The convention whose depth differs least (when neither matches)."""
        return min(self.conventions, key=lambda c: c.diffs["depth"].metrics.get("max_intervals_confident", float("inf")))


def accuracy_text(row: dict[str, float] | None) -> str:
    if row is None:
        return "-"
    return f"{row['mae_mm']:.2f} mm, {100 * row['thres2mm']:.1f}%, {100 * row['thres4mm']:.1f}%"


def compare_conventions(chain: Chain, model: str, case: Case, tolerances: Tolerances) -> CaseResult:
    """Your model against the harness MVSNet in both conventions on ``case`` (outputs cached by the chain)."""
    machine = chain.machine_class(REFERENCE)
    gate = tolerances.lookup(REFERENCE, REFERENCE, "fp32", OUTPUT_NAMES, case=case.name, machine=machine)
    depth_values = chain.case_feed(case)["depth_values"]
    yours = chain.user_reference_outputs(case, model)
    views = chain.views(case.name)
    truth = views.depth is not None and views.mask is not None

    def accuracy(outputs: dict[str, torch.Tensor]) -> dict[str, float] | None:
        return accuracy_row(outputs, views.depth, views.mask) if truth else None  # type: ignore[arg-type]

    results = []
    for align_corners in CONVENTIONS:
        harness = chain.user_reference_outputs(case, None, align_corners)
        results.append(ConventionResult(align_corners, compare(harness, yours, gate, depth_values=depth_values),
                                        accuracy(harness)))
    mine = accuracy(yours)
    return CaseResult(case, tuple(results), mine, int(mine["valid_pixels"]) if mine else 0)


def conclusion(result: CaseResult) -> str:
    """What the case says, in one or two sentences."""
    matched = result.matched
    if not matched:
        near = result.nearest()
        return (f"your model matches neither convention: nearest is {near.name} ({near.cells()}); it computes "
                "something else than MVSNet (check the model code and that --weights is the checkpoint it was "
                "trained with)")
    if len(matched) == 2:
        return ("your model matches both conventions: they give the same outputs here (degenerate weights or "
                "inputs); the convention cannot be told apart on this case")
    this = matched[0]
    other = next(c for c in result.conventions if c is not this)
    text = f"your model samples with {this.name} (within the FP32 torch-vs-torch gates)"
    if this.accuracy is not None and other.accuracy is not None:
        better = min((this, other), key=lambda c: c.accuracy["mae_mm"])  # type: ignore[index]
        text += (f"; against ground truth with these weights: {this.name} {accuracy_text(this.accuracy)}, "
                 f"{other.name} {accuracy_text(other.accuracy)} (mean abs depth error, >2mm, >4mm)")
        if better is other:
            gain = this.accuracy["mae_mm"] - other.accuracy["mae_mm"]  # type: ignore[index]
            text += (f": {other.name} is more accurate by {gain:.2f} mm with these weights; to compute it, pass "
                     f"align_corners={other.align_corners} to F.grid_sample in your homo_warping (and export from that)")
        else:
            gain = other.accuracy["mae_mm"] - this.accuracy["mae_mm"]  # type: ignore[index]
            text += f": yours is the more accurate by {gain:.2f} mm with these weights"
    else:
        text += f"; {other.name} not compared with ground truth (the scene has none)"
    return text


def case_lines(result: CaseResult) -> list[str]:
    case = result.case
    pixels = f"{result.valid_pixels} pixels with ground truth" if result.yours else "no ground truth in the scene"
    lines = [f"case {case.name} ({case.shape_id}): your model against the harness MVSNet ({pixels})",
             f"  {'':<8} {'reference':<22} {'vs ground truth: mean abs, >2mm, >4mm':<40} your outputs against it"]
    for c in result.conventions:
        verdict = "matches" if c.matches else "differs"
        lines.append(f"  {verdict:<8} {c.name:<22} {accuracy_text(c.accuracy):<40} {c.cells()}")
    lines.append(f"  {'':<8} {'your model':<22} {accuracy_text(result.yours)}")
    lines.append(f"  -> {conclusion(result)}")
    return lines


def record_rows(result: CaseResult, model: str) -> list[dict[str, Any]]:
    """Accuracy rows for the run record: each convention (with its comparison) and your model."""
    rows: list[dict[str, Any]] = []
    for c in result.conventions:
        rows.append({"case": result.case.name, "backend": f"torch-fp32 harness MVSNet {c.name}",
                     "matches_your_model": c.matches, "metrics": {n: dict(d.metrics) for n, d in c.diffs.items()},
                     "tolerance": {n: dict(d.tolerance) for n, d in c.diffs.items()}, **(c.accuracy or {})})
    rows.append({"case": result.case.name, "backend": f"torch-fp32 --model {model}", **(result.yours or {})})
    return rows


def verdict(results: list[CaseResult]) -> str:
    """The last line: ``PASS`` when your model matches one convention on every case, else ``FAIL``."""
    failed = [r.case.name for r in results if not r.matched]
    if failed:
        return f"FAIL your model matches neither sampling convention on {', '.join(failed)}"
    names = sorted({r.matched[0].name if len(r.matched) == 1 else "both" for r in results})
    return (f"PASS your model matches the harness MVSNet with {' / '.join(names)} on "
            f"{', '.join(r.case.name for r in results)}")


def run_model(args: argparse.Namespace, cases: tuple[str, ...]) -> int:
    """``check --model`` without --onnx / --engine: the exit status (0 a convention matched on every
    case, 1 neither on some case)."""
    from harness.preflight import CLI_FLAGS, preflight
    from harness.report.record import RunRecord
    from harness.report.write import write_run

    tolerances = Tolerances.load(args.tolerances)
    # the main job's start-of-session checks at these cases (device, weights, scene, memory, folders)
    chain = preflight(ChainConfig.from_options(namespace_values(args, "check")), cases, args.report_dir,
                      replace(CLI_FLAGS, cases="--case"))
    try:
        chain.user_model(args.model)  # import and load now: a bad --model is a usage error (exit 2)
        gate = tolerances.lookup(REFERENCE, REFERENCE, "fp32", OUTPUT_NAMES, machine=chain.machine_class(REFERENCE))
        record = RunRecord(kind="check", profile="check", config={
            "model": args.model, "weights": str(chain.weights_path), "scene": str(args.scene or "bundled"),
            "case": ",".join(cases), "align_corners": None, "device": str(chain.device),
            "compared_with": "the harness's MVSNet with align_corners=True and =False (torch-fp32)"})
        print(f"weights {chain.weights_path.name}  scene {args.scene or 'bundled synthetic-000'}  device {chain.device}  "
              f"--model {args.model}: which sampling convention it computes")
        gates = " | ".join(f"{o}: {', '.join(f'{m} ' + ('>= ' if m == 'agreement' else '<= ') + format_metric(m, v) for m, v in g.items())}"
                           for o, g in gate.items())
        print(f"matches: within the FP32 torch-vs-torch gates ({chain.machine_class(REFERENCE)}): {gates}")
        results = []
        for name in cases:
            result = compare_conventions(chain, args.model, get_case(name), tolerances)
            results.append(result)
            print("\n".join(case_lines(result)))
            record.accuracy += record_rows(result, args.model)
            record.notes.append(f"{name}: {conclusion(result)}")
            if not result.matched:
                record.failures.append(f"--model {args.model} matches neither convention on {name}")
        folder = write_run(record, args.report_dir)
        print(f"report: {folder / 'report.md'}")
    finally:
        chain.close()
    print(verdict(results))  # the last line: the verdict at a glance
    return 0 if all(r.matched for r in results) else 1


__all__ = ["CONVENTIONS", "CaseResult", "ConventionResult", "case_lines", "compare_conventions", "conclusion",
           "record_rows", "run_model", "verdict"]
