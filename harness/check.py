"""``python -m harness check``: gate the conversion the user already has.

The user's ONNX graph (``--onnx``, on ONNX Runtime CPU/CUDA and, where TensorRT can run, as a
TensorRT FP32 engine built from it) and/or serialized engine (``--engine``) run on the same
inputs as the torch reference (the harness's MVSNet, or the user's model code with ``--model``),
at the graph's static input shapes unless ``--case`` names one or several (a graph with dynamic
axes runs at each; a static graph whose shape a case does not match is refused naming its shape),
with the gates of
fixtures/tolerances.toml. The graph's tensors are bound to MVSNet's roles by
``harness.model.io`` (never by a silent guess), its opset, producer and TensorRT operator audit
are reported, and an engine's plan header is read before anything deserialises it.

A graph whose sampling grid is computed by MatMul/Gemm/Einsum nodes gets a TF32 warning naming
them, with the depth drift ONNX Runtime CUDA's TF32 default causes (measured where the CUDA
provider is available) and the two fixes (``harness.check_tf32``).

When a leg fails, the known conversion bugs are tried as explanations and named: the other
sampling convention (``align_corners``), the two 4x4 inputs swapped, GridSample nodes whose mode
is not bilinear. Exit status: 0 every leg within its gates, 1 a parity failure, 2 bad input.

``--model`` without ``--onnx``/``--engine`` says which sampling convention the user's code computes
and what the other costs (``harness.check_model``).

The pytest front (``--harness-onnx`` ...) runs the same legs through ``plan_user_legs`` and
``run_user_leg`` (suites/test_user_artifacts.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harness.chain import Chain, ChainConfig
from harness.check_tf32 import tf32_exposure
from harness.compare import OutputDiff, compare
from harness.convert.plan_header import PlanHeader, read_plan_header
from harness.convert.user_graph import GraphFacts, conv_weights_differing, inspect_onnx, probe_graph
from harness.data.cases import CASES, Case, get_case
from harness.errors import (
    BackendUnavailable,
    GraphRuntimeError,
    HarnessError,
    Interrupted,
    InvalidArgument,
    ParityError,
    UnsupportedOperator,
)
from harness.gates.limits import Tolerances
from harness.model.inputs import check_image_size, check_num_depth
from harness.model.io import (
    IoBinding,
    bind_io,
    check_against,
    parse_io_map,
    static_case_shape,
)
from harness.model.mvsnet import OUTPUT_NAMES
from harness.options import namespace_values
from harness.vocabulary import CHECK_BACKENDS

if TYPE_CHECKING:
    from harness.verdict import LegTable

ONNX_BACKENDS = CHECK_BACKENDS
ENGINE_BACKEND = "trt"
BILINEAR = ("bilinear", "linear")  # GridSample's mode before and after opset 20's rename


@dataclass(frozen=True)
class UserTarget:
    """One user artifact, bound and checked against its case."""

    kind: str  # onnx or engine
    path: Path
    case: Case
    binding: IoBinding | None  # None: an engine whose tensors are only known after deserialising it
    facts: GraphFacts | None = None
    header: PlanHeader | None = None
    notes: tuple[str, ...] = ()

    @property
    def stem(self) -> str:
        return self.path.stem

    def artifact(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": f"user-{self.kind}", "path": str(self.path), "case": self.case.shape_id}
        if self.binding is not None:
            info["io"] = self.binding.io_map()
            info["io_bound_by"] = self.binding.how
            info["inverse"] = "input (precomputed)" if self.binding.with_inverse else "in the graph"
        if self.facts is not None:
            info.update({"opset": self.facts.opset, "producer": self.facts.producer, "nodes": self.facts.node_count,
                         "trt_findings": len(self.facts.audit.get("trt_findings", [])),
                         "grid_sample": "; ".join(f"{g['node']} mode={g['mode']} align_corners={g['align_corners']}"
                                                  for g in self.facts.grid_samples)})
        if self.header is not None:
            header = self.header.as_dict()
            info.update({"built_with_tensorrt": header["built_with_tensorrt"], "plan_bytes": header["size_bytes"],
                         "plan_serialization": header["serialization"],
                         "plan_unconfirmed": ", ".join(header["unconfirmed"])})
        return info


def _case_from(shape: tuple[int, int, int, int]) -> Case:
    views, height, width, depth = shape
    for case in CASES.values():
        if (case.views, case.height, case.width, case.num_depth) == shape:
            return case
    check_image_size(height, width, "graph input imgs")
    check_num_depth(depth, "graph input depth_values")
    return Case(f"graph{views}x{height}x{width}xD{depth}", views, height, width, depth)


def prepare_onnx(path: Path, io_map: str | None = None, case: str | None = None) -> UserTarget:
    """Read, bind and shape-check the user's graph; the case is ``case`` or the graph's static shapes."""
    facts = inspect_onnx(path)
    binding = bind_io(facts.inputs, facts.outputs, parse_io_map(io_map), str(path))
    static = static_case_shape(binding, facts.inputs)
    notes = [f"tensors bound ({binding.how}): {binding.io_map()}"]
    if case is not None:
        this = get_case(case)
    elif static is not None:
        this = _case_from(static)
        notes.append(f"case {this.name} ({this.shape_id}) from the graph's static input shapes")
    else:
        raise InvalidArgument(str(path), "the graph's input shapes are dynamic and no case was given",
                              observed="; ".join(s.describe() for s in facts.inputs), expected="a case to run it at",
                              fix=f"pass --case (one of {', '.join(CASES)})")
    if static is not None:
        named = next((c.name for c in CASES.values() if (c.views, c.height, c.width, c.num_depth) == static), None)
        fix = (f"the graph is static, exported for {'{}x{}x{}xD{}'.format(*static)} (views x H x W x D): leave out "
               f"--case (its static shapes are used{f': case {named}' if named else ''}), or re-export it "
               f"with dynamic_axes over H, W and D to run case {this.name} ({this.shape_id})")
    else:
        fix = f"run it at the shape it was exported for, or re-export it for case {this.name} ({this.shape_id})"
    check_against(binding, facts.inputs, facts.outputs, this.input_shapes(binding.with_inverse), str(path), this.name, fix)
    if facts.opset < 16:
        notes.append(f"opset {facts.opset}: ONNX has GridSample only from opset 16")
    return UserTarget("onnx", Path(path), this, binding, facts, None, tuple(notes))


def prepare_engine(path: Path, case: str | None = None, onnx_target: UserTarget | None = None) -> UserTarget:
    """Read the plan header (TensorRT version, serialization); the tensors are bound after
    deserialisation, or like the ONNX given beside it (the engine built from it)."""
    header = read_plan_header(path)
    notes = [f"plan header: built with TensorRT {header.version_text} (serialization {header.serialization}); "
             "hardware compatibility and profile shapes are not in the confirmed header layout"]
    if case is not None:
        this = get_case(case)
    elif onnx_target is not None:
        this = onnx_target.case
    else:
        this = get_case("small")
        notes.append("engine shapes are known only after deserialising it: case small assumed (pass --case)")
    binding = onnx_target.binding if onnx_target is not None else None
    if onnx_target is not None:
        notes.append(f"tensors bound like {onnx_target.path.name} (pass the ONNX the engine was built from)")
    return UserTarget("engine", Path(path), this, binding, None, header, tuple(notes))


@dataclass(frozen=True)
class UserLeg:
    target: UserTarget
    backend: str  # ort-cpu, ort-cuda, trt-fp32 (ONNX) or trt (engine)
    reference: str = "torch-fp32"

    @property
    def id(self) -> str:
        return f"user-{self.target.kind}-{self.target.stem}-{self.backend}-vs-{self.reference}-{self.target.case.name}"


def plan_user_legs(targets: list[UserTarget], backends: tuple[str, ...] = ONNX_BACKENDS) -> list[UserLeg]:
    legs = []
    for target in targets:
        if target.kind == "onnx":
            legs += [UserLeg(target, b) for b in backends if b in ONNX_BACKENDS]
        else:
            legs.append(UserLeg(target, ENGINE_BACKEND))
    return legs


@dataclass(frozen=True)
class UserResult:
    leg: UserLeg
    diffs: dict[str, OutputDiff]
    diagnosis: tuple[str, ...] = ()
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    stage_failed: bool = False  # a stage over its measured limit (counted where measured)

    @property
    def passed(self) -> bool:
        return all(self.diffs.values()) and not self.stage_failed

    def row(self) -> dict[str, Any]:
        target = self.leg.target
        return {
            "id": self.leg.id, "case": target.case.name, "candidate": self.leg.backend, "reference": self.leg.reference,
            "workaround": "precomputed" if target.binding and target.binding.with_inverse else "user",
            "exporter": target.facts.producer if target.facts else "user", "variant": f"user-{target.kind}",
            "precision": "fp32", "passed": self.passed, "seconds": round(self.seconds, 2),
            "metrics": {n: dict(d.metrics) for n, d in self.diffs.items()},
            "tolerance": {n: dict(d.tolerance) for n, d in self.diffs.items()},
            "artifact": target.artifact(), "diagnosis": list(self.diagnosis), **self.extra,
        }


def _runner(chain: Chain, leg: UserLeg, io_map: str | None = None):  # type: ignore[no-untyped-def]
    target = leg.target
    binding = target.binding
    if target.kind == "engine":
        if binding is None:  # bound by the engine's own tensor names once deserialised
            return chain.user_engine_runner(target.path, leg.id, io_map=parse_io_map(io_map))
        return chain.user_engine_runner(target.path, leg.id, binding.input_roles(), binding.output_roles())
    assert binding is not None
    inputs, outputs = binding.input_roles(), binding.output_roles()
    if leg.backend.startswith("ort-"):
        return chain.user_onnx_runner(target.path, inputs, outputs, leg.backend.split("-")[1], leg.id)
    assert target.facts is not None
    return chain.user_onnx_trt_runner(target.path, inputs, outputs, target.case, target.facts.audit, leg.id)


def run_user_leg(chain: Chain, leg: UserLeg, tolerances: Tolerances, model: str | None = None,
                 io_map: str | None = None) -> UserResult:
    """Run one leg; a failing one gets its diagnosis. Raises BackendUnavailable when it cannot run here."""
    started = time.perf_counter()
    runner = _runner(chain, leg, io_map)
    target = leg.target
    feed_all = chain.case_feed(target.case)
    feed = {role: feed_all[role] for role in runner.input_names}
    candidate = runner.infer(feed)
    case = target.case.name
    machine = chain.machine_class(leg.backend)  # the gates of this machine class (calibrated per class)
    tolerance = tolerances.lookup(leg.reference, leg.backend, "fp32", OUTPUT_NAMES, case=case, machine=machine)
    depth_values = feed_all["depth_values"]
    extra: dict[str, Any] = {}
    stage_failed = False
    if (model is None and target.kind == "onnx" and target.binding is not None and chain.config.align_corners
            and tolerances.stages_measured(leg.backend, "fp32", case, machine)):
        # stage errors count in the verdict where their noise was measured: ONNX Runtime CPU at the
        # small case, against the harness MVSNet in its default convention (align_corners=True)
        rows, nodes = graph_stages(chain, target, feed, tolerances.stage_limits(leg.backend, "fp32", case, machine))
        stage_failed = any(not r.passed for r in rows)
        extra["stages"] = {r.stage: {"relative": r.relative, "limit": r.limit, "passed": r.passed} for r in rows}
    # after the stages: on a CPU chain their torch run already gave these outputs (Chain.user_reference_stages)
    reference = chain.user_reference_outputs(target.case, model)
    diffs = compare(reference, candidate, tolerance, depth_values=depth_values)
    diagnosis: tuple[str, ...] = ()
    if stage_failed or not all(diffs.values()):
        diagnosis = tuple(diagnose(chain, leg, runner, feed, tolerance, model,
                                   tolerances.stage_limits(leg.backend, "fp32", case, machine)))
    return UserResult(leg, diffs, diagnosis, time.perf_counter() - started, extra, stage_failed)


def diagnose(chain: Chain, leg: UserLeg, runner, feed: dict[str, torch.Tensor],  # type: ignore[no-untyped-def]
             tolerance: dict[str, dict[str, float]], model: str | None,
             stage_limits: dict[str, float] | None = None) -> list[str]:
    """Known conversion bugs that explain a failure, each checked by running it, never assumed."""
    target = leg.target
    depth_values = feed["depth_values"]
    notes = []
    mismatch = weights_mismatch(chain, target.path) if target.kind == "onnx" else ""
    if mismatch:  # a graph exported with other weights fails every stage: say so first
        notes.append(mismatch)
    ran: list[str] = []  # the known bugs tried in this call, and those that were not, with why
    not_run: list[str] = []
    if target.facts is None:
        not_run.append("sampling mode (an engine's nodes are not readable)")
    else:
        ran.append("sampling mode")
        for g in target.facts.grid_samples:
            if g["mode"] not in BILINEAR:
                notes.append(f"GridSample node {g['node']} samples with mode '{g['mode']}': MVSNet's homography warp "
                             "samples bilinearly (TensorRT reads opset-20 'linear' as NEAREST: NVIDIA/TensorRT#4646)")
    if mismatch:  # the other weights explain the difference: the checks below would compare against them
        return notes
    if model is not None:
        not_run.append("align_corners (with --model the convention is your code's)")
    else:
        ran.append("align_corners")
        ours = chain.config.align_corners
        other = chain.user_reference_outputs(target.case, None, not ours)
        if all(compare(other, runner.infer(feed), tolerance, depth_values=depth_values).values()):
            flag = "true" if not ours else "false"
            where = "; ".join(f"{g['node']} align_corners={g['align_corners']}" for g in target.facts.grid_samples) \
                if target.facts is not None else "the engine"
            notes.append(f"the graph passes against the reference with align_corners={not ours} and fails with "
                         f"align_corners={ours}: it samples with the other convention ({where}). MVSNet_pytorch's "
                         "code on torch >= 1.3 samples with False, the published checkpoints were trained with True. "
                         f"To gate the graph as exported: --align-corners {flag} (pytest: --harness-align-corners "
                         f"{flag}); to fix it, export with align_corners={ours}")
    if target.binding is None or not target.binding.with_inverse:
        not_run.append("swapped 4x4 inputs (the graph takes no inverse projections)" if target.binding is not None
                       else "swapped 4x4 inputs (an engine's tensors are bound only once deserialised)")
    else:
        ran.append("swapped 4x4 inputs")
        swapped = dict(feed)
        swapped["proj_matrices"], swapped["inverse_proj_matrices"] = feed["inverse_proj_matrices"], feed["proj_matrices"]
        reference = chain.user_reference_outputs(target.case, model)
        if all(compare(reference, runner.infer(swapped), tolerance, depth_values=depth_values).values()):
            proj = target.binding.graph_name("proj_matrices")
            inv = target.binding.graph_name("inverse_proj_matrices")
            fixed = target.binding.io_map().replace(f"{proj}=proj_matrices", "\0").replace(
                f"{inv}=inverse_proj_matrices", f"{inv}=proj_matrices").replace("\0", f"{proj}=inverse_proj_matrices")
            notes.append(f"inputs in the wrong order: the graph's '{proj}' takes the inverse projections and '{inv}' "
                         f"the projections (it passes with the two swapped). Fix the export's input_names, or gate "
                         f"it as exported with --io-map {fixed}")
    if model is None and target.facts is not None and target.binding is not None:  # probes: the harness's MVSNet
        table = localise_graph(chain, target, feed, stage_limits)
        if table:
            notes.append(table)
    if not notes:
        notes.append(no_bug_found(ran, not_run))
    return notes


def weights_mismatch(chain: Chain, path: Path) -> str:
    """A line when the graph's convolution weights are not the checkpoint's (--weights), else ''."""
    from harness.model.checkpoint import read_state_dict

    state = {name: t.detach().cpu().float().numpy() for name, t in read_state_dict(chain.weights_path).items()
             if t.is_floating_point()}
    differing, total = conv_weights_differing(path, state)
    if not differing:
        return ""
    return (f"the graph's weights are not the checkpoint's (--weights {chain.weights_path}): {differing} of {total} "
            "convolution weights differ. Pass the checkpoint the graph was exported with as --weights, or re-export "
            "the graph with this one")


def no_bug_found(ran: list[str], not_run: list[str]) -> str:
    """The diagnosis when no known bug explains a failure: the checks that ran, never more, and
    those that did not with why."""
    text = (f"no known conversion bug of those checked ({', '.join(ran)}) explains the difference" if ran
            else "no known conversion bug could be checked")
    if not_run:
        text += f"; not checked: {'; '.join(not_run)}"
    return (text + "; compare the graph stage by stage with the harness's probe build "
            "(python -m harness run --cases <case>, which localises per stage)")


def graph_stages(chain: Chain, target: UserTarget, feed: dict[str, torch.Tensor],
                 limit: float | dict[str, float]) -> tuple[list[Any], str]:
    """The user's graph stage by stage against the harness MVSNet's probes (ONNX Runtime CPU, a
    probe copy exposing the GridSample and Softmax outputs): the StageError rows and which node
    gave each stage; no rows when the graph exposes none."""
    import tempfile

    from harness.localize import stage_errors

    assert target.binding is not None
    with tempfile.TemporaryDirectory(prefix="harness-probe-") as folder:
        probe = Path(folder) / f"{target.stem}-probes.onnx"
        stages = probe_graph(target.path, probe)
        if not stages:
            return [], ""
        roles = target.binding.input_roles()
        values = chain.user_onnx_all_outputs(probe, {roles[r]: t.cpu() for r, t in feed.items()})
    reference = chain.user_reference_stages(target.case)
    candidate = {}
    for name, stage in stages.items():
        ref = reference.get(stage)
        if ref is not None and name in values and values[name].numel() == ref.numel():
            candidate[stage] = values[name].float().reshape(ref.shape)  # GridSample's [B, C, D*h, w] view
    wanted = {k: v for k, v in reference.items() if k in candidate}
    if not wanted:
        return [], ""
    nodes = ", ".join(f"{stage} = {name}" for name, stage in stages.items() if stage in candidate)
    return stage_errors(wanted, candidate, limit), nodes


def localise_graph(chain: Chain, target: UserTarget, feed: dict[str, torch.Tensor],
                   limit: float | dict[str, float] | None = None) -> str:
    """Stage table of the user's graph against the harness MVSNet's probes: the first of warped
    source volumes / probability volume whose error exceeds its limit ([stages].fp32 unless given)."""
    from harness.localize import localisation_table

    rows, nodes = graph_stages(chain, target, feed, Tolerances.load().stage_limits("ort-cpu", "fp32") if limit is None else limit)
    if not rows:
        return ""
    return localisation_table(rows, f"stage errors of {target.path.name} ({nodes}; relative max |error|):")


def audit_user_graph(target: UserTarget) -> list[str]:
    """The precision audit (harness.convert.precision) of a user's ONNX graph against MVSNet's
    FP32 regions, its tensors found through the graph's binding: an empty list when every region
    stays FP32 (and, for a graph with no FP16 tensor at all, no weight was stored through FP16),
    else one line per finding."""
    import onnx

    from harness.convert.graph import FLOAT_TYPES, LOW_PRECISION, tensor_types
    from harness.convert.precision import audit_precision
    from harness.model.precision import FP32_REGIONS

    assert target.binding is not None
    names = {**target.binding.input_roles(), **{role: name for name, role in target.binding.output_roles().items()}}
    model = onnx.load(str(target.path))
    mixed = any(t in LOW_PRECISION for t in tensor_types(model).values() if t in FLOAT_TYPES)
    audit = audit_precision(model, FP32_REGIONS, names, whole_graph=not mixed)
    return [f.row() for f in audit.findings]


def replay_folder(root: Path, target: UserTarget, legs: list[UserLeg]) -> Path:
    """Where a graph's replay goes: ``root`` itself for one graph at one case, else
    ``root/<graph stem>/`` (several graphs), ``root/<case>/`` (several cases) or both joined
    (``root/<graph stem>-<case>/``)."""
    graphs = {leg.target.path for leg in legs if leg.target.kind == "onnx"}
    cases = {leg.target.case.name for leg in legs if leg.target.kind == "onnx"}
    parts = [target.stem] * (len(graphs) > 1) + [target.case.name] * (len(cases) > 1)
    return root / "-".join(parts) if parts else root


def save_user_replay(chain: Chain, result: UserResult, folder: Path, model: str | None) -> Path:
    """Save a user graph's inputs and torch reference, named as the graph names its tensors, with
    the leg's gates, for Polygraphy and trtexec (``harness.report.replay``), into ``folder``
    (``replay_folder``); a folder already there is never overwritten (``-2``, ``-3`` ...
    instead). Returns the path of ``commands.sh``."""
    from harness.default_model import resolve
    from harness.report.replay import depth_step_of, reference_fractions, save_replay

    target = result.leg.target
    assert target.binding is not None
    feed = chain.case_feed(target.case)
    reference = chain.user_reference_outputs(target.case, model)
    outputs = target.binding.output_roles()  # graph name -> role
    replay = save_replay(
        folder, onnx_path=target.path,
        inputs={name: feed[role] for role, name in target.binding.input_roles().items()},
        reference={name: reference[role] for name, role in outputs.items()},
        gates={name: dict(result.diffs[role].tolerance) for name, role in outputs.items()},
        depth_step=depth_step_of(feed["depth_values"]), subject=result.leg.id, on_exists="suffix",
        fractions=reference_fractions(reference, feed["depth_values"], resolve(None).kinds()))  # by role
    return Path(replay.commands)


# -- the command -----------------------------------------------------------------------------------

#: The case of ``check --model`` alone when no --case is given: the bundled scene's ground truth is
#: meaningful there (at small, 32x40 depth pixels, every convention is off by millimetres).
MODEL_CASE = "seed"


def parse_cases(text: str | None) -> tuple[str, ...] | None:
    """``--case``: None (the graph's static shapes), or one or more case names, comma separated."""
    if text is None:
        return None
    names = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise InvalidArgument("--case", "unknown case" if unknown else "empty list", observed=", ".join(unknown) or repr(text),
                              expected=f"one or more of {', '.join(CASES)}, comma separated",
                              fix="pass --case small (several, e.g. --case small,seed, for a graph with dynamic axes)")
    return names


def run(args: argparse.Namespace) -> int:
    from harness.report.markdown import record_verdict
    from harness.report.record import RunRecord
    from harness.report.write import write_run
    from harness.verdict import LegTable

    if not args.onnx and not args.engine and not args.model:
        raise InvalidArgument("check", "nothing to check", observed="no --onnx, no --engine and no --model",
                              expected="one or more of them",
                              fix="python -m harness check --onnx mvsnet.onnx [--engine mvsnet.trt] "
                              "(or --model MODULE:CALLABLE alone: which sampling convention your code computes)")
    from harness.preflight import CLI_FLAGS, preflight

    cases = parse_cases(args.case)  # check's own flag, not run's --cases nor pytest's
    if args.model and args.align_corners is not None:  # the user's grid_sample call is their code, not ours
        raise InvalidArgument("--align-corners", "cannot be combined with --model", observed=f"--align-corners "
                              f"{args.align_corners} --model {args.model}",
                              expected="--align-corners without --model (it sets the harness MVSNet's sampling "
                              "convention; with --model the convention is whatever your code's grid_sample uses)",
                              fix="leave out --align-corners, or leave out --model to gate against the harness's MVSNet")
    align_corners = None if args.model else args.align_corners or "true"  # None: the user's code decides
    backends = tuple(v.strip() for v in args.backends.split(",") if v.strip())
    unknown = [b for b in backends if b not in ONNX_BACKENDS]
    if unknown or not backends:
        raise InvalidArgument("--backends", "unknown or no backend", observed=", ".join(unknown) or "empty list",
                              expected=f"a comma list of {', '.join(ONNX_BACKENDS)}", fix=f"--backends {','.join(ONNX_BACKENDS)}")
    if not args.onnx and not args.engine:
        from harness.check_model import run_model

        return run_model(args, cases or (MODEL_CASE,))
    tolerances = Tolerances.load(args.tolerances)
    # the same start-of-session checks as the main job (device, weights, cache and reports writable)
    chain = preflight(ChainConfig.from_options(namespace_values(args, "check")), (), args.report_dir,
                      replace(CLI_FLAGS, cases="--case"))
    targets = [prepare_onnx(Path(p), args.io_map, case) for p in args.onnx or [] for case in cases or (None,)]
    first_onnx = {t.case.name: t for t in reversed(targets)}  # per case: the engine is bound like it
    targets += [prepare_engine(Path(p), case, first_onnx.get(case) if case else next(iter(targets), None))
                for p in args.engine or [] for case in cases or (None,)]
    if args.model:
        chain.user_model(args.model)  # import and load now: a bad --model is a usage error (exit 2)
    reference = f"--model {args.model}" if args.model else f"harness MVSNet, align_corners={align_corners}"
    record = RunRecord(kind="check", profile="check", config={
        "onnx": [str(p) for p in args.onnx or []], "engine": [str(p) for p in args.engine or []],
        "weights": str(chain.weights_path), "model": args.model or f"the harness's MVSNet (harness.model.mvsnet) "
        f"with {chain.weights_path}", "scene": str(args.scene or "bundled"),
        "case": ",".join(cases) if cases else None, "io_map": args.io_map, "align_corners": align_corners, "device": str(chain.device)})
    print(f"weights {chain.weights_path.name}  scene {args.scene or 'bundled synthetic-000'}  device {chain.device}  "
          f"reference torch-fp32 ({reference})")
    failed = 0
    failures: list[str] = []
    warnings: list[str] = []  # reported, never failing: e.g. a sampling grid exposed to TF32
    shown: dict[tuple[str, Path], set[str]] = {}  # per artifact: the notes printed (several cases: once each)
    for target in targets:
        first = (target.kind, target.path) not in shown
        seen = shown.setdefault((target.kind, target.path), set())
        if first:
            facts = f": {target.facts.summary()}" if target.facts else ""
            print(f"{target.kind} {target.path}{facts}")
        if cases is not None and len(cases) > 1:
            print(f"  case {target.case.name} ({target.case.shape_id})")
        for note in target.notes:
            if note not in seen:
                print(f"  {note}")
        record.artifacts.append(target.artifact())
        record.notes += [f"{target.path.name}: {n}" for n in target.notes if n not in seen]
        seen.update(target.notes)
        if target.kind == "onnx" and target.binding is not None and first:  # the graph's facts: once
            findings = audit_user_graph(target)
            verdict = ("FP32 regions intact (projection and grid, GridSample, variance, softmax and regression)"
                       if not findings else f"FAIL: {len(findings)} FP32-only operations in or through FP16")
            print(f"  precision audit: {verdict}")
            record.notes.append(f"{target.path.name}: precision audit: {verdict}")
            if findings:
                failed += 1
                record.failures.append(f"precision audit of {target.path.name}")
                failures.append("\n".join([f"FAIL precision audit of {target.path.name}: FP32-only operations run in "
                                           "or are rounded through FP16 (keep them FP32: explicit Casts around them, "
                                           "or exclude them from AutoCast)", *("  -> " + f for f in findings[:8])]))
            exposure = tf32_exposure(chain, target, measure=any(b.startswith("ort-cuda") for b in backends))
            print(f"  TF32: {exposure.verdict()}")
            record.artifacts[-1]["tf32_exposure"] = exposure.as_dict()
            record.notes.append(f"{target.path.name}: TF32: {exposure.verdict()}")
            if exposure.exposed:
                record.notes.append(f"{target.path.name}: TF32: {exposure.drift_line()}")
                warnings.append(exposure.section())
    table = LegTable()
    replayed: dict[tuple[Path, str], Path] = {}  # ONNX target (graph, case) -> its replay's commands.sh
    legs = plan_user_legs(targets, backends)
    try:
        failed += _run_legs(chain, args, legs, tolerances, record, failures, replayed, table)
    except Interrupted as exc:  # keep the finished legs, marked incomplete
        record.config["incomplete"] = True
        record.notes.append(f"incomplete: {exc.problem} after {len(record.parity)} of {len(legs)} legs")
        folder = write_run(record, args.report_dir)
        chain.close()
        print(f"{exc.problem}: kept {len(record.parity)} of {len(legs)} legs, marked incomplete: "
              f"{folder / 'report.md'}", file=sys.stderr)
        return 128 + exc.signum
    for text in (*warnings, *failures):
        print(text)
        record.localisation.append(text)
    folder = write_run(record, args.report_dir)
    print(f"report: {folder / 'report.md'}")
    chain.close()
    print(record_verdict(record))  # the last line: the verdict at a glance
    return 1 if failed else 0


def _run_legs(chain: Chain, args: argparse.Namespace, legs: list[UserLeg], tolerances: Tolerances, record: Any,
              failures: list[str], replayed: dict[tuple[Path, str], Path], table: LegTable) -> int:
    """Run ``legs`` in order, appending each finished one to ``record.parity``; the failure count."""
    failed = 0
    for leg in legs:
        try:
            result = run_user_leg(chain, leg, tolerances, args.model, args.io_map)
        except BackendUnavailable as exc:
            record.skipped[leg.backend] = exc.missing
            record.notes.append(f"skipped {leg.id}: {exc.missing}")
            continue
        except (UnsupportedOperator, ParityError, GraphRuntimeError) as exc:  # the graph itself is at fault
            failed += 1
            failures.append(f"FAIL {leg.id}:\n  -> {exc}")
            record.parity.append({"id": leg.id, "case": leg.target.case.name, "candidate": leg.backend,
                                  "reference": leg.reference, "variant": f"user-{leg.target.kind}", "passed": False,
                                  "metrics": {}, "tolerance": {}, "artifact": leg.target.artifact(),
                                  "diagnosis": [str(exc)]})
            print("\n".join(table.lines(record.parity[-1], {})))
            continue
        row = result.row()
        key = (leg.target.path, leg.target.case.name)
        if args.save_polygraphy and leg.target.kind == "onnx" and key not in replayed:
            replayed[key] = save_user_replay(chain, result, replay_folder(Path(args.save_polygraphy), leg.target, legs),
                                             args.model)
            print(f"replay for Polygraphy / trtexec: {replayed[key]}")
        if key in replayed:
            row["replay"] = str(replayed[key])
        record.parity.append(row)
        failed += not result.passed
        print("\n".join(table.lines(row, result.diffs)))
        if not result.passed:  # the gates in full on the console; report.md's parity table has them already
            print("\n".join([f"FAIL {leg.id}:", *("  " + d.row() for d in result.diffs.values())]))
            if result.diagnosis:
                failures.append("\n".join([f"FAIL {leg.id}:", *("  -> " + n for n in result.diagnosis)]))
    return failed


__all__ = ["GraphFacts", "HarnessError", "UserLeg", "UserResult", "UserTarget", "diagnose",
           "inspect_onnx", "plan_user_legs", "prepare_engine", "prepare_onnx", "run", "run_user_leg"]
