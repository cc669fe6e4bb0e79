"""How sensitive the gate is: every mutation of the catalogue (``harness/mutate.py``) injected into
the exported graphs of one case, run on ONNX Runtime (CPU) and judged by each check the gate has:

* ``outputs``: the leg's parity gate (fixtures/tolerances.toml, torch strict FP32 reference);
* ``stages``: per-stage errors of the mutated probe build against torch's stages;
* ``precision``: the precision audit of the mutated graph (``convert/precision.py``);
* ``golden``: ONNX Runtime's outputs against its stored outputs for the unmutated graph variant.

A bug is caught when a check that counts fails; a benign rewrite must pass every one. ``python -m
harness mutate`` prints the catch-rate table per graph precision and which check caught each.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch

from harness.chain import Chain, ChainConfig, Leg
from harness.compare import LOWER_BOUNDS, OutputDiff, compare
from harness.convert.precision import audit_precision
from harness.gates.golden import check_golden, feed_digest, golden_key, write_golden
from harness.gates.limits import Tolerances
from harness.gates.rule import MARGIN
from harness.localize import depth_step, stage_errors, torch_stages
from harness.model.mvsnet import OUTPUT_NAMES
from harness.model.precision import FP32_REGIONS
from harness.mutate import CATALOGUE, Mutation, MutationError, mutations
from harness.vocabulary import MUTATION_CHECKS

CHECKS = MUTATION_CHECKS
PRECISIONS = ("fp32", "fp16")
WORKAROUND, EXPORTER = "precomputed", "torchscript"


def ratio(metric: str, observed: float, limit: float) -> float:
    """How far over its limit a gated metric is (> 1: failed); for ``agreement`` the ratio of the
    disagreeing fractions."""
    if observed != observed:  # NaN
        return math.inf
    if metric in LOWER_BOUNDS:
        observed, limit = 1.0 - observed, 1.0 - limit
    if limit <= 0:
        return math.inf if observed > 0 else 0.0
    return observed / limit


def worst_ratio(diffs: Mapping[str, OutputDiff]) -> tuple[float, str]:
    """The largest observed/limit over every gated metric of every output, and which it was."""
    best, where = 0.0, ""
    for diff in diffs.values():
        if diff.metrics.get("nan", 0) > 0:
            return math.inf, f"{diff.name}.nan"
        for metric, limit in diff.tolerance.items():
            if metric in diff.metrics:
                r = ratio(metric, diff.metrics[metric], limit)
                if r > best:
                    best, where = r, f"{diff.name}.{metric}"
    return best, where


@dataclass(frozen=True)
class CheckResult:
    caught: bool
    margin: float  # worst observed/limit (inf for the audit's yes/no); < 1 when it passed
    detail: str = ""
    yes_no: bool = False  # a finding, not a measured value (the precision audit)

    @property
    def inside_noise(self) -> bool:
        """The bug's statistic is no larger than the worst benign value the limit was derived
        from (limit = worst x MARGIN): no limit could catch it here without failing good graphs."""
        return not self.yes_no and not self.caught and self.margin <= 1.0 / MARGIN

    def cell(self) -> str:
        if self.yes_no:
            return "FAIL" if self.caught else "ok"
        return f"{self.margin:.3g}x" + ("!" if self.caught else "~" if self.inside_noise else "")


@dataclass(frozen=True)
class Outcome:
    mutation: Mutation
    precision: str
    checks: Mapping[str, CheckResult] = field(default_factory=dict)
    error: str = ""

    def caught(self, counting: Sequence[str] = CHECKS) -> bool:
        return any(self.checks[c].caught for c in counting if c in self.checks)

    def caught_by(self, counting: Sequence[str] = CHECKS) -> list[str]:
        return [c for c in counting if c in self.checks and self.checks[c].caught]

    def margin(self, counting: Sequence[str] = CHECKS) -> float:
        return max((self.checks[c].margin for c in counting if c in self.checks), default=0.0)

    def undetectable(self, counting: Sequence[str] = CHECKS) -> bool:
        """Not caught, and inside the benign noise of every measured check that counts."""
        measured = [self.checks[c] for c in counting if c in self.checks and not self.checks[c].yes_no]
        return not self.caught(counting) and bool(measured) and all(r.inside_noise for r in measured)

    def correct(self, counting: Sequence[str] = CHECKS) -> bool:
        return not self.error and self.caught(counting) != self.mutation.benign

    def row(self) -> dict[str, Any]:
        """The JSON record: per check, caught, margin (``"inf"`` for a yes/no finding) and detail."""
        return {"mutation": self.mutation.name, "graph_precision": self.precision, "benign": self.mutation.benign,
                "variant": self.mutation.variant, "error": self.error,
                "checks": {c: {"caught": r.caught, "margin": r.margin if math.isfinite(r.margin) else "inf",
                               "detail": r.detail} for c, r in self.checks.items()}}


class Sensitivity:
    """Runs mutations on one case; base graphs, torch stages and golden baselines are made once."""

    def __init__(self, chain: Chain, tolerances: Tolerances, case: str = "small",
                 golden_dir: Path | None = None, work_dir: Path | None = None) -> None:
        self.chain, self.tolerances, self.case = chain, tolerances, case
        self._tmp = tempfile.TemporaryDirectory(prefix="harness-mutate-")
        self.work = Path(work_dir or self._tmp.name)
        self.golden_dir = golden_dir or self.work / "golden"
        self.own_golden = golden_dir is None  # baselined here from the unmutated graphs
        self._graphs: dict[tuple, onnx.ModelProto] = {}
        self.feed = chain.workaround_feed(case, WORKAROUND)
        self.depth_values = chain.feed(case)["depth_values"]
        self.reference = chain.reference_outputs(case)
        self.reference_stages = torch_stages(chain, case)

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Sensitivity:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pieces ----------------------------------------------------------------------------------
    def leg(self, variant: str, precision: str) -> Leg:
        return Leg("ort-cpu" + ("-fp16" if precision == "fp16" else ""), variant, WORKAROUND, EXPORTER, self.case)

    def graph(self, variant: str, precision: str, probes: bool = False) -> onnx.ModelProto:
        key = (variant, precision, probes)
        if key not in self._graphs:
            self._graphs[key] = self.chain.onnx(self.case, WORKAROUND, EXPORTER, variant, precision,
                                                probes=probes).load()
        return self._graphs[key]


    def run_graph(self, model: onnx.ModelProto, name: str, every_output: bool = False) -> dict[str, torch.Tensor]:
        """Outputs of ``model`` on the case's feed (ONNX Runtime CPU; every output for a probe build)."""
        path = self.work / f"{name}.onnx"
        onnx.save(model, str(path))
        runner = self.chain.onnx_file_runner(path, label=name, validate_values=not every_output)
        try:
            if every_output:
                return runner.run_all(self.feed)  # type: ignore[attr-defined]
            return runner.infer(self.feed)
        finally:
            runner.close()
            path.unlink()

    def baseline_golden(self, precisions: Sequence[str] = PRECISIONS, workarounds: Sequence[str] = (WORKAROUND,),
                        exporters: Sequence[str] = (EXPORTER,)) -> list[Path]:
        """Store ONNX Runtime CPU outputs of every unmutated graph variant in the golden directory."""
        from harness.convert.onnx_export import EXPORTERS
        from harness.convert.workarounds import EXPORTERS_FOR

        written = []
        for workaround in workarounds:
            feed = self.chain.workaround_feed(self.case, workaround)
            for exporter in (e for e in exporters if e in EXPORTERS_FOR.get(workaround, EXPORTERS)):
                for precision in precisions:
                    for variant in ("raw", "simplified"):
                        artifact = self.chain.onnx(self.case, workaround, exporter, variant, precision)
                        runner = self.chain.onnx_file_runner(artifact.path, label=f"golden-{variant}-{precision}")
                        try:
                            outputs = runner.infer(feed)
                        finally:
                            runner.close()
                        meta = {"onnx_sha256": artifact.sha256, "runtime": self.chain.ort_runtime("cpu"),
                                "feed": feed_digest(feed), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                        key = golden_key(self.case, workaround, exporter, variant, precision)
                        written.append(write_golden(self.golden_dir, key, outputs, meta))
        return written

    # -- checks ----------------------------------------------------------------------------------
    def check_outputs(self, outputs: dict[str, torch.Tensor], leg: Leg) -> CheckResult:
        tolerance = self.tolerances.lookup(leg.reference, leg.candidate, leg.precision, OUTPUT_NAMES, case=self.case,
                                           machine=self.chain.machine_class(leg.candidate))
        diffs = compare(self.reference, outputs, tolerance, depth_values=self.depth_values)
        margin, where = worst_ratio(diffs)
        return CheckResult(not all(diffs.values()), margin, where)

    def check_stages(self, stages: dict[str, torch.Tensor], leg: Leg) -> CheckResult:
        limits = self.tolerances.stage_limits(leg.candidate, leg.precision, self.case,
                                              self.chain.machine_class(leg.candidate))
        step = depth_step(self.depth_values) if "depth" in limits else None
        rows = stage_errors(self.reference_stages, stages, limits, depth_step=step)
        worst = max(rows, key=lambda r: r.relative / r.limit)
        first = next((r.stage for r in rows if not r.passed), "")
        return CheckResult(bool(first), worst.relative / worst.limit, first or worst.stage)

    def check_precision(self, model: onnx.ModelProto, precision: str) -> CheckResult:
        audit = audit_precision(model, FP32_REGIONS, whole_graph=precision == "fp32")
        detail = audit.findings[0].row() if audit.findings else ""
        return CheckResult(not audit.passed, math.inf if audit.findings else 0.0, detail, yes_no=True)

    def check_golden(self, outputs: dict[str, torch.Tensor], variant: str, precision: str) -> CheckResult:
        tolerance = self.tolerances.lookup("golden", "ort-cpu", precision, OUTPUT_NAMES)
        key = golden_key(self.case, WORKAROUND, EXPORTER, variant, precision)
        result = check_golden(self.golden_dir, key, outputs, tolerance, self.feed, self.chain.ort_runtime("cpu"),
                              self.depth_values)
        if result.skipped:
            return CheckResult(False, 0.0, f"skipped: {result.skipped}")
        margin, where = worst_ratio(result.diffs)
        return CheckResult(not result.passed, margin, where)

    # -- one mutation ----------------------------------------------------------------------------
    def run(self, mutation: Mutation, precision: str, checks: Sequence[str] = CHECKS) -> Outcome:
        leg = self.leg(mutation.variant, precision)
        try:
            mutated = mutation(self.graph(mutation.variant, precision))
            results: dict[str, CheckResult] = {}
            if "stages" in checks:
                # one run of the mutated probe build gives the stages and the outputs: a probe
                # build's outputs are bit-identical to the production graph's (tests/test_sensitivity.py)
                probed = mutation(self.graph(mutation.variant, precision, probes=True))
                values = self.run_graph(probed, f"{mutation.name}-{precision}-probes", every_output=True)
                outputs = {name: values[name] for name in OUTPUT_NAMES}
                stages = {name.removeprefix("probe_"): value.float() for name, value in values.items()}
                results["stages"] = self.check_stages(stages, leg)
            elif "outputs" in checks or "golden" in checks:
                outputs = self.run_graph(mutated, f"{mutation.name}-{precision}")
            if "outputs" in checks:
                results["outputs"] = self.check_outputs(outputs, leg)
            if "golden" in checks:
                results["golden"] = self.check_golden(outputs, mutation.variant, precision)
            if "precision" in checks:
                results["precision"] = self.check_precision(mutated, precision)
        except MutationError as exc:
            return Outcome(mutation, precision, {}, str(exc))
        return Outcome(mutation, precision, {c: results[c] for c in CHECKS if c in results})

    def run_all(self, precisions: Sequence[str] = PRECISIONS, checks: Sequence[str] = CHECKS,
                names: Sequence[str] | None = None) -> list[Outcome]:
        if "golden" in checks and self.own_golden:
            self.baseline_golden(precisions)
        return [self.run(m, p, checks) for p in precisions for m in mutations(p) if names is None or m.name in names]


# -- report --------------------------------------------------------------------------------------

def catch_table(outcomes: Sequence[Outcome], counting: Sequence[str] = CHECKS) -> str:
    """One table per precision: verdict, the check(s) that caught it, each check's margin."""
    lines = []
    for precision in dict.fromkeys(o.precision for o in outcomes):
        rows = [o for o in outcomes if o.precision == precision]
        bugs = [o for o in rows if not o.mutation.benign]
        benign = [o for o in rows if o.mutation.benign]
        caught = [o for o in bugs if o.caught(counting)]
        alarms = [o for o in benign if o.caught(counting)]
        hidden = [o for o in bugs if o.undetectable(counting)]
        lines.append(f"{precision.upper()} graph: caught {len(caught)} of {len(bugs)} bugs, "
                     f"{len(hidden)} undetectable (inside benign noise), "
                     f"{len(alarms)} false alarm(s) on {len(benign)} benign rewrites (counting: {', '.join(counting)})")
        lines.append(f"  {'mutation':<32} {'expect':<6} {'verdict':<12} {'caught by':<28} "
                     + " ".join(f"{c:>10}" for c in CHECKS))
        for o in rows:
            if o.error:
                verdict, by = "ERROR", o.error[:60]
            else:
                hit = o.caught(counting)
                verdict = ("FALSE ALARM" if hit else "pass") if o.mutation.benign else \
                    ("caught" if hit else "UNDETECTABLE" if o.undetectable(counting) else "MISSED")
                by = ", ".join(o.caught_by(counting)) or "-"
            cells = " ".join(f"{o.checks[c].cell() if c in o.checks else '-':>10}" for c in CHECKS)
            lines.append(f"  {o.mutation.name:<32} {'pass' if o.mutation.benign else 'fail':<6} {verdict:<12} "
                         f"{by:<28} {cells}")
        lines.append("")
    lines.append("cells: worst observed/limit of each check (! = failed: caught; ~ = inside the benign noise the limit "
                 f"was calibrated on, i.e. at most 1/{MARGIN:g} of the limit: that check cannot tell this bug from a good "
                 "graph; inf: a limit of 0 exceeded), FAIL/ok for the precision audit")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for m in CATALOGUE.values():
            print(f"{m.name:<32} {'benign' if m.benign else 'bug':<7} {m.variant:<10} {','.join(m.precisions):<10} {m.doc}")
        return 0
    precisions = tuple(p for p in args.precisions.split(",") if p)
    counting = tuple(c for c in args.checks.split(",") if c)
    unknown = [c for c in (*counting, *precisions) if c not in (*CHECKS, *PRECISIONS)]
    if unknown:
        print(f"unknown check or precision: {', '.join(unknown)} (checks: {', '.join(CHECKS)})", file=sys.stderr)
        return 2
    chain = Chain(ChainConfig(cache_dir=args.cache_dir, device="cpu"))
    tolerances = Tolerances.load(args.tolerances)
    started = time.perf_counter()
    with Sensitivity(chain, tolerances, args.case, args.write_golden or args.golden) as sens:
        if args.write_golden is not None:
            for path in sens.baseline_golden(precisions, tuple(args.workarounds.split(",")),
                                             tuple(args.exporters.split(","))):
                print(f"wrote {path}")
            return 0
        names = tuple(n for n in args.only.split(",") if n) or None
        outcomes = sens.run_all(precisions, CHECKS, names)
    print(f"case {args.case}, ONNX Runtime CPU, golden "
          f"{args.golden if args.golden else 'baselined now from the unmutated graphs'}, "
          f"{time.perf_counter() - started:.0f} s")
    print(catch_table(outcomes, counting))
    if args.json is not None:
        args.json.write_text(json.dumps([o.row() for o in outcomes], indent=1, default=str), encoding="utf-8")
    chain.close()
    return 0 if all(o.correct(counting) for o in outcomes) else 1
