"""Divergence localisation and error attribution along the chain.

*Stage probes*: separate probe builds (``ExportConfig(probes=True)``; the timed graphs stay
untouched) expose the intermediate tensors as extra outputs: reference features, each warped
source volume, the variance volume, the regularised cost and the probability volume. Comparing
them stage by stage with the torch reference names the first stage whose error exceeds its
tolerance: "which layer?" answered at the level of MVSNet's own structure.

*Attribution*: one table per case splitting the depth error along the hops torch strict FP32 ->
torch TF32 -> ONNX Runtime FP32 -> FP16 graph (ONNX Runtime) -> TensorRT FP16, each hop against
the previous one and cumulatively against the reference, so users see which hop adds what.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from harness.backends import registry
from harness.backends.onnxruntime_runner import ort_backend
from harness.chain import Chain, Leg
from harness.compare import OutputDiff, compare
from harness.errors import BackendUnavailable, HarnessError
from harness.gates.limits import Tolerances
from harness.model.mvsnet import probing
from harness.report.markdown import attribution_table  # noqa: F401  (re-exported: localize's table)


@dataclass(frozen=True)
class StageError:
    stage: str
    max_abs: float
    reference_scale: float
    relative: float
    limit: float
    unit: str = "relative"  # or "steps" (depth, in depth-hypothesis steps)

    @property
    def passed(self) -> bool:
        return self.relative <= self.limit

    def row(self) -> str:
        verdict = "ok" if self.passed else "EXCEEDS"
        return f"{self.stage:<24} max |err| {self.max_abs:10.3g}  {self.unit:<8} {self.relative:10.3g}  " \
               f"(limit {self.limit:.0e})  {verdict}"


def torch_stages(chain: Chain, case: str) -> dict[str, torch.Tensor]:
    """The reference's stages and outputs (torch strict FP32, original three-input call)."""
    runner = chain.torch_runner("fp32")
    model = runner.model  # type: ignore[attr-defined]
    with probing(model) as probes:
        outputs = runner.infer(chain.reference_feed(case))
    return {**{k: v.cpu() for k, v in probes.items()}, **{k: v.cpu() for k, v in outputs.items()}}


def candidate_stages(chain: Chain, leg: Leg) -> dict[str, torch.Tensor]:
    """The same stages from a probe build of the candidate's graph (ONNX Runtime legs)."""
    spec = registry.get(leg.candidate)
    if spec.consumes != "onnx":
        raise BackendUnavailable(leg.candidate, "stage probes run on ONNX Runtime here (a TensorRT probe engine "
                                 "needs a GPU it can run on)", fix="localise on an ort-* leg of the same graph")
    backend = ort_backend(spec.device)  # the strict FP32 session runs either graph precision's probe build
    registry.require(backend)
    artifact = chain.onnx(leg.case, leg.workaround, leg.exporter, leg.variant, leg.graph_precision, probes=True)
    runner = registry.make_runner(backend, artifact.path, label=f"{leg.variant}-probes", validate_values=False)
    runner.prepare()
    try:
        # probe volumes are large and their count varies: a plain run on host arrays, every output
        feed = chain.workaround_feed(leg.case, leg.workaround)
        values = runner.run_all({k: v.cpu() for k, v in feed.items()})  # type: ignore[attr-defined]
    finally:
        runner.close()
    return {name.removeprefix("probe_"): value.float() for name, value in values.items()}


def stage_base(stage: str) -> str:
    """``warped_2`` -> ``warped``: per-view stages share one limit."""
    head, _, tail = stage.rpartition("_")
    return head if head and tail.isdigit() else stage


def _max_abs_diff(ref: torch.Tensor, cand: torch.Tensor) -> float:
    """max |cand - ref|, inf when the candidate has a non-finite value (max propagates NaN)."""
    if not ref.numel():
        return 0.0
    diff = cand.float() - ref.float()
    worst = float(diff.abs_().max())
    return float("inf") if worst != worst else worst


def match_views(reference: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``candidate`` with its per-view stages (``warped_<v>``) renamed to the order of source views
    that fits the reference best: the variance is symmetric in the source views, so a graph that
    visits them in another order computes the same function."""
    views = sorted(k for k in candidate if stage_base(k) == "warped" and k in reference)
    if len(views) < 2 or len(views) > 6:
        return candidate
    cost = {(v, o): _max_abs_diff(reference[v], candidate[o]) if reference[v].shape == candidate[o].shape
            else float("inf") for v in views for o in views}
    best = min(itertools.permutations(views), key=lambda order: max(cost[v, o] for v, o in zip(views, order)))
    return {**candidate, **{v: candidate[o] for v, o in zip(views, best)}}


def stage_errors(reference: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor],
                 limit: float | Mapping[str, float], depth_step: float | None = None) -> list[StageError]:
    """Per-stage relative error (max |difference| / max |reference|) in data-flow order, outputs
    last; ``limit`` comes from fixtures/tolerances.toml: one number, or one per stage (by
    ``stage_base`` name). With ``depth_step`` the ``depth`` row is in depth-hypothesis steps
    (max |difference| / step), the unit reduced-precision depth errors scale with."""
    rows = []
    candidate = match_views(reference, candidate)
    for name, ref in reference.items():
        if name not in candidate:
            continue
        cand = candidate[name]
        if cand.shape != ref.shape:
            raise HarnessError(name, "probe shape differs", observed=tuple(cand.shape), expected=tuple(ref.shape))
        worst = _max_abs_diff(ref, cand)
        scale = float(ref.float().abs().max()) or 1.0
        if name == "photometric_confidence" and ref.numel() > 1:
            # gathered at a truncated index: a flip is not a stage error
            diff = torch.nan_to_num((cand.float() - ref.float()).abs(), nan=float("inf"))
            worst = float(torch.quantile(diff.flatten(), 0.99))
        if name == "depth" and depth_step:
            scale = depth_step
        stage_limit = limit if isinstance(limit, (int, float)) else limit.get(stage_base(name), limit.get("default", 0.0))
        rows.append(StageError(name, worst, scale, worst / scale, float(stage_limit),
                               "steps" if name == "depth" and depth_step else "relative"))
    return rows


def first_failing(rows: list[StageError]) -> StageError | None:
    return next((r for r in rows if not r.passed), None)


def localisation_table(rows: list[StageError], title: str) -> str:
    failing = first_failing(rows)
    verdict = (f"first stage over its tolerance: {failing.stage}" if failing is not None
               else "every stage within tolerance")
    return "\n".join([title, *("  " + r.row() for r in rows), f"  -> {verdict}"])


def depth_step(depth_values: torch.Tensor) -> float:
    """The smallest hypothesis interval of ``[B, D]`` depth values (scene units)."""
    flat = depth_values.reshape(depth_values.shape[0], -1).double()
    return float((flat[:, 1:2] - flat[:, :1]).abs().min()) if flat.shape[1] > 1 else 0.0


def leg_stage_errors(chain: Chain, leg: Leg, tolerances: Tolerances) -> list[StageError]:
    """Per-stage errors of one leg with its limits: the case's measured per-stage gates for the
    candidate when fixtures/tolerances.toml has them (depth in steps), else [stages]."""
    limits = tolerances.stage_limits(leg.candidate, leg.precision, leg.case, chain.machine_class(leg.candidate))
    step = depth_step(chain.feed(leg.case)["depth_values"]) if "depth" in limits else None
    return stage_errors(torch_stages(chain, leg.case), candidate_stages(chain, leg), limits, depth_step=step)


def stage_diffs(rows: list[StageError]) -> dict[str, OutputDiff]:
    """Stage errors as diffs (``stage <name>``) so that they count in a parity verdict."""
    return {f"stage {r.stage}": OutputDiff(f"stage {r.stage}", {r.unit: r.relative}, {r.unit: r.limit}) for r in rows}


def localise(chain: Chain, leg: Leg, tolerances: Tolerances) -> str:
    """The per-stage table for one leg (ONNX Runtime probe build vs torch reference)."""
    rows = leg_stage_errors(chain, leg, tolerances)
    return localisation_table(rows, f"stage errors of {leg.id} (relative max |error|):")


# -- attribution ----------------------------------------------------------------------------------

HOPS = (
    ("torch-fp32", "torch strict FP32 (reference)"),
    ("torch-tf32", "torch TF32 convolutions (PyTorch default)"),
    ("ort-fp32", "ONNX Runtime FP32 graph"),
    ("ort-fp16", "ONNX Runtime FP16 graph"),
    ("trt-fp16", "TensorRT FP16 engine"),
)
#: The parity gate each hop's output is held to (against the reference): the runner family and
#: precision that fixtures/tolerances.toml keys the gate by.
HOP_GATES = {"torch-tf32": ("torch-tf32", "tf32"), "ort-fp32": ("ort-cpu", "fp32"),
             "ort-fp16": ("ort-cpu-fp16", "fp16"), "trt-fp16": ("trt-fp16", "fp16")}


def _hop_outputs(chain: Chain, hop: str, case: str) -> dict[str, torch.Tensor]:
    if hop == "torch-fp32":
        return chain.reference_outputs(case)
    if hop == "torch-tf32":
        return chain.torch_runner("tf32").infer(chain.reference_feed(case))
    target = "cuda" if chain.device.type == "cuda" else "cpu"
    if hop in ("ort-fp32", "ort-fp16"):
        precision = hop.split("-")[1]
        leg = Leg(f"ort-{target}" + ("-fp16" if precision == "fp16" else ""), "simplified", "precomputed",
                  "torchscript", case)
    else:
        leg = Leg("trt-fp16", "simplified", "precomputed", "torchscript", case)
    return chain.candidate_runner(leg).infer(chain.workaround_feed(case, leg.workaround))


def attribution(chain: Chain, case: str, tolerances: Tolerances | None = None) -> list[dict[str, Any]]:
    """Depth error of each hop against the previous available hop and against the reference.

    With ``tolerances``, every hop's output is also held to its own precision's depth gate
    against the reference (``HOP_GATES``): ``within_gate`` and, when exceeded, ``exceeded``
    (``{metric: [observed, limit]}``)."""
    feed = chain.feed(case)
    rows: list[dict[str, Any]] = []
    reference = previous = None
    previous_name = ""
    for hop, label in HOPS:
        try:
            outputs = _hop_outputs(chain, hop, case)
        except BackendUnavailable as exc:
            rows.append({"case": case, "hop": hop, "label": label, "skipped": f"{exc.backend}: {exc.missing}"})
            continue
        row: dict[str, Any] = {"case": case, "hop": hop, "label": label}
        if reference is None:
            reference = outputs
        else:
            assert previous is not None
            step = compare(previous, outputs, depth_values=feed["depth_values"])["depth"].metrics
            total = compare(reference, outputs, depth_values=feed["depth_values"])["depth"].metrics
            row.update({"from": previous_name, "hop_max_abs_mm": step["max_abs"], "hop_p99_abs_mm": step["p99_abs"],
                        "hop_frac_over_1mm": step["frac_over_1mm"], "total_max_abs_mm": total["max_abs"],
                        "total_p99_abs_mm": total["p99_abs"], "total_frac_over_1mm": total["frac_over_1mm"]})
            if tolerances is not None:
                family, precision = HOP_GATES[hop]
                gate = tolerances.lookup("torch-fp32", family, precision, ("depth",),
                                         machine=chain.machine_class(HOP_GATES[hop][0]))
                # both outputs: the depth gate counts the pixels where the reference is confident
                judged = compare(reference, outputs, gate, depth_values=feed["depth_values"])["depth"]
                row.update({"gate": f"{precision} {dict(judged.tolerance)}", "within_gate": bool(judged),
                            "exceeded": {m: [o, lim] for m, (o, lim) in judged.failures.items()}})
        rows.append(row)
        previous, previous_name = outputs, hop
    return rows


def exceeded_hops(rows: list[dict[str, Any]]) -> list[str]:
    """The hops whose output exceeds its precision's gate, in chain order."""
    return [r["hop"] for r in rows if r.get("within_gate") is False]


def assert_attribution_within_gates(rows: list[dict[str, Any]]) -> None:
    """Raise ``ParityError`` naming the first hop whose output exceeds its precision's depth gate
    (rows from ``attribution(..., tolerances)``)."""
    from harness.errors import ParityError

    unjudged = [r["hop"] for r in rows if "hop_max_abs_mm" in r and "within_gate" not in r]
    if unjudged:
        raise ParityError("attribution", "hops were not judged", observed=unjudged, expected="rows from attribution(chain, case, "
                          "tolerances)", fix="pass the session's tolerances to attribution()")
    exceeded = exceeded_hops(rows)
    if exceeded:
        first = next(r for r in rows if r["hop"] == exceeded[0])
        raise ParityError(f"attribution, case {first['case']}", f"hop {first['hop']} ({first['label']}) exceeds its "
                          "gate", observed=first["exceeded"], expected=first["gate"],
                          fix=f"the error enters at {first['hop']} (from {first['from']}); localise that leg")
