"""``python -m harness <command>``: the main job, the user's own conversion and the generators.

``COMMANDS`` lists every subcommand with its one-line summary, an example and its exit codes
(``--help`` shows them). The parser builds without importing torch, ONNX or the chain: each
command's function imports what it needs, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import BackendUnavailable, HarnessError, Interrupted, InvalidArgument
from harness.hostmem import keep_freed_blocks
from harness.options import ALL, ALL_WORD, add_cli_options, namespace_values, option
from harness.vocabulary import CASES, CHECK_BACKENDS, MUTATION_CHECKS, OPTION_NAMES

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _csv(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _choices(flag: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The comma list of ``flag``, every value one of ``allowed``: an empty list or an unknown
    name is a usage error naming the flag and the valid values (a typo must never turn a run
    into one that tests nothing)."""
    values = _csv(text)
    if not values:
        raise InvalidArgument(flag, "empty list", observed=repr(text), expected=f"one or more of {', '.join(allowed)}",
                              fix=f"pass {flag} {allowed[0]}")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise InvalidArgument(flag, "unknown value" + ("s" if len(bad) > 1 else ""), observed=", ".join(bad),
                              expected=f"any of {', '.join(allowed)}", fix=f"pass {flag} with names from that list")
    return values


def _listed(args: argparse.Namespace, command: str, name: str) -> tuple[str, ...]:
    """The comma list of option ``name`` of ``command``, checked against the names its row allows."""
    from harness.chain import OPTION_NAMES as OWNED  # the owners' tables (the parser's copies: harness.vocabulary)

    row = option(name, command)
    value, allowed = getattr(args, row.dest(command)), row.allowed(OWNED)
    if value == ALL_WORD and row.default is ALL:  # the default of a list the parser was built without
        return allowed
    return _choices(row.flag(command), value, allowed)


def _one(args: argparse.Namespace, command: str, name: str) -> str:
    """The one name option ``name`` of ``command`` holds (a comma list elsewhere, one value here)."""
    values = _listed(args, command, name)
    if len(values) > 1:
        flag = option(name, command).flag(command)
        raise InvalidArgument(flag, f"{command} takes one", observed=", ".join(values), expected="one name",
                              fix=f"pass {flag} {values[0]} (one {command} per value)")
    return values[0]


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGINT) raise ``Interrupted`` in the main thread for the block, so a run can
    keep what it finished; the previous handlers come back afterwards."""
    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_run(args: argparse.Namespace) -> int:
    from harness.backends.registry import main_job_defaults
    from harness.chain import ChainConfig, plan_legs, resolve_device, run_leg
    from harness.gates.limits import Tolerances
    from harness.model.sanity import degenerate_reasons
    from harness.preflight import CLI_FLAGS, preflight
    from harness.report.markdown import record_verdict
    from harness.report.plots import depth_difference_maps
    from harness.report.record import RunRecord
    from harness.report.write import write_run
    from harness.verdict import LegTable, panel_caption

    left_out: tuple[str, ...] = ()
    if args.backends is None:  # the default: every candidate, less the GPU default's exceptions on a GPU
        everything = main_job_defaults(on_gpu=False)
        chosen = main_job_defaults(on_gpu=resolve_device(args.device).type == "cuda")
        left_out = tuple(name for name in everything if name not in chosen)
        args.backends = ",".join(chosen)
    cases, workarounds, exporters, variants, backends = (
        _listed(args, "run", name) for name in ("cases", "workarounds", "exporters", "variants", "backends"))
    legs = plan_legs(cases, workarounds, exporters, variants, backends)
    if not legs:
        raise InvalidArgument("run", "these options leave no leg to run", observed=f"--workarounds {args.workarounds} "
                              f"--exporters {args.exporters} --backends {args.backends}",
                              expected="at least one possible combination (custom_op: torchscript exporter, ONNX Runtime only)",
                              fix="add --exporters torchscript or another workaround")
    tolerances = Tolerances.load(args.tolerances)
    chain = preflight(ChainConfig.from_options(namespace_values(args, "run")), cases, args.report_dir, CLI_FLAGS)
    record = RunRecord(kind="run", profile="run", config={
        "cases": args.cases, "backends": args.backends, "workarounds": args.workarounds, "exporters": args.exporters,
        "variants": args.variants, "device": str(chain.device), "weights": str(chain.weights_path),
        "scene": str(args.scene or "bundled"), "opset": args.opset,
    })
    print(f"weights {chain.weights_path.name}  scene {args.scene or 'bundled synthetic-000'}  device {chain.device}")
    if left_out:
        note = (f"not in the default on a GPU: {', '.join(left_out)} (a GPU leg runs the same graph; "
                f"--backends all runs every backend)")
        print(note)
        record.notes.append(note)
    failed = 0
    skipped: dict[str, str] = {}
    results = []
    interrupted: Interrupted | None = None
    try:
        with _signals_interrupt():
            chain.warm(leg.candidate for leg in legs)  # e.g. torch-aoti's loader probe, while other legs run
            for case in cases:  # the reference first: degenerate weights make every leg pass vacuously
                reasons = degenerate_reasons(chain.reference_outputs(case), chain.feed(case)["depth_values"])
                for reason in reasons:
                    print(f"FAIL reference torch-fp32 on {case}: {reason}")
                    record.notes.append(f"FAIL reference torch-fp32 on {case}: {reason}")
                    record.failures.append(f"reference torch-fp32 on {case} degenerate")
                failed += bool(reasons)
            table = LegTable()
            for leg in legs:
                if leg.candidate in skipped:
                    continue
                started = time.perf_counter()
                try:
                    result = run_leg(chain, leg, tolerances)
                except BackendUnavailable as exc:
                    skipped[leg.candidate] = exc.missing
                    continue
                chain.release(leg)  # one candidate session alive at a time (memory at the seed shape)
                results.append(result)
                row = result.row()
                row["seconds"] = round(time.perf_counter() - started, 2)
                record.parity.append(row)
                failed += not result.passed
                print("\n".join(table.lines(row, result.diffs)))
    except Interrupted as exc:
        interrupted = exc
        record.config["incomplete"] = True
        record.incomplete = f"{exc.problem} after {len(record.parity)} of {len(legs)} legs"
        record.notes.append(f"incomplete: {record.incomplete}")
    record.skipped = dict(skipped)
    for backend, reason in skipped.items():
        record.notes.append(f"skipped {backend}: {reason}")
    if interrupted is None:
        if not record.parity:
            failed += 1
            note = (f"FAIL no parity leg ran: every requested backend is unavailable here "
                    f"({', '.join(sorted(skipped))}); pass --backends with one that runs (python -m harness doctor)")
            print(note)
            record.notes.append(note)
            record.failures.append("no parity leg ran")
        for case in cases:
            record.accuracy.extend(_accuracy_rows(chain, case, results))

    def figures(folder: Path) -> list[Path]:
        drawn = []
        for case in cases:
            shown = {f"{r.leg.candidate} {r.leg.variant}\n{r.leg.workaround}, {r.leg.exporter}": r
                     for r in results if r.leg.case == case and "depth" in r.outputs}
            if shown:
                drawn.append(depth_difference_maps(
                    chain.reference_outputs(case)["depth"], {name: r.outputs["depth"] for name, r in shown.items()},
                    folder / f"depth-diff-{case}.png", f"|depth - torch strict FP32| (mm), case {case}",
                    captions={name: panel_caption(r.diffs, "depth", r.passed) for name, r in shown.items()},
                    failed={name for name, r in shown.items() if not r.passed}))
        return [p for p in drawn if p is not None]

    folder = write_run(record, args.report_dir, figures=figures)
    chain.close()
    if interrupted is not None:
        print(f"{interrupted.problem}: kept {len(record.parity)} of {len(legs)} "
              f"legs, marked incomplete: {folder / 'report.md'}", file=sys.stderr)
        print(record_verdict(record))
        return 128 + interrupted.signum
    print(f"report: {folder / 'report.md'}")
    print(record_verdict(record))  # the last line: the verdict at a glance
    return 1 if failed else 0


def _accuracy_rows(chain, case: str, results: list) -> list[dict[str, Any]]:  # type: ignore[type-arg]
    """Accuracy against ground truth of the reference and of every leg that ran (when the scene
    has ground truth)."""
    from harness.accuracy import backend_accuracy

    views = chain.views(case)
    if views.depth is None or views.mask is None:
        return []
    rows = [backend_accuracy(chain, None, case)]
    rows += [backend_accuracy(chain, r.leg, case, r.outputs) for r in results if r.leg.case == case]
    return rows


TARGET_SPEEDUP = 6.0  # issue target: fastest backend >= 6x torch eager strict FP32 at the seed shape


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench import KNOWN_BACKENDS, default_backends, fastest, run_benchmarks, timed_backends
    from harness.chain import ChainConfig
    from harness.gates.limits import Tolerances
    from harness.preflight import CLI_FLAGS, preflight
    from harness.report.plots import depth_difference_maps, latency_plot
    from harness.report.record import RunRecord
    from harness.report.write import write_run
    from harness.timing import PROFILES

    cases = _listed(args, "bench", "cases")
    requested = timed_backends(_choices("--backends", args.backends, KNOWN_BACKENDS)) if args.backends else None
    workaround, exporter = (_one(args, "bench", name) for name in ("workarounds", "exporters"))
    chain = preflight(ChainConfig.from_options(namespace_values(args, "bench")), cases, args.report_dir, CLI_FLAGS)
    backends = requested or default_backends(chain.device)
    rows: list[dict[str, Any]] = []
    interrupted: Interrupted | None = None
    try:
        run_benchmarks(chain, cases, backends, PROFILES[args.profile], Tolerances.load(args.tolerances),
                       workaround, exporter, repeat=args.repeat, rows=rows)
    except Interrupted as exc:  # keep the finished rows, marked incomplete
        interrupted = exc
    record = RunRecord(kind="bench", profile=args.profile, config={
        "cases": cases, "backends": backends, "workaround": workaround, "exporter": exporter,
        "device": str(chain.device), "weights": str(chain.weights_path), "timing": PROFILES[args.profile].__dict__,
        "label": args.label, "repeat": args.repeat,
    })
    if interrupted is not None:
        record.config["incomplete"] = True
        record.notes.append(f"incomplete: {interrupted.problem} after {len(rows)} benchmark rows")
    outputs = {}
    for row in rows:
        out = row.pop("_outputs", None)
        if out is not None:
            outputs[(row["case"], row["backend"])] = out["depth"]
        record.timing.append(row)
    for case in cases:
        best = fastest(rows, case)
        if best is not None and best.get("speedup_vs_torch_fp32"):
            reached = best["speedup_vs_torch_fp32"]
            record.notes.append(f"{case}: fastest backend {best['backend']} at {best['median_ms']:.2f} ms = "
                                f"{reached:.2f}x torch eager strict FP32 (target {TARGET_SPEEDUP:.0f}x: "
                                f"{'met' if reached >= TARGET_SPEEDUP else 'not met'})")
        for row in rows:
            if row["case"] == case and row.get("skipped"):
                record.notes.append(f"{case}: {row['backend']} skipped: {row['skipped']}")
    def figures(folder: Path) -> list[Path]:
        drawn = []
        for case in cases:
            drawn.append(latency_plot(rows, case, folder / f"latency-{case}.png",
                                      f"MVSNet {case} on {rows[0].get('gpu') or 'CPU'}"))
            reference = outputs.get((case, "torch-fp32"))
            others = {b: d for (c, b), d in outputs.items() if c == case and b != "torch-fp32"}
            if reference is not None:
                drawn.append(depth_difference_maps(reference, others, folder / f"depth-diff-{case}.png",
                                                   f"|depth - torch strict FP32| (mm), case {case}"))
        return [p for p in drawn if p is not None]

    folder = write_run(record, args.report_dir, figures=figures)
    chain.close()
    if interrupted is not None:
        print(f"{interrupted.problem}: kept {len(rows)} benchmark rows, marked incomplete: {folder / 'report.md'}",
              file=sys.stderr)
        return 128 + interrupted.signum
    for note in record.notes:
        print(note)
    print(f"report: {folder / 'report.md'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.fileio import atomic_write_text, new_run_dir, utc_stamp
    from harness.report.compare_runs import Gate, cross_gpu_table, gate_records, gpu_name, load_baselines
    from harness.report.markdown import to_markdown
    from harness.report.plots import cross_gpu_plot
    from harness.report.record import load_record

    gate = Gate.parse(args.fail_on) if args.fail_on else None  # refuse a bad gate before writing anything
    records = [(Path(p), load_record(p)) for p in args.records]
    table = cross_gpu_table([r for _, r in records])
    if table.empty:
        print("error: the records hold no timing rows (run `python -m harness bench` first)", file=sys.stderr)
        return 2
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    folder = new_run_dir(args.out, f"{utc_stamp()}-compare")
    gpus = list(dict.fromkeys(gpu_name(r) for _, r in records))
    from harness.report.compare_runs import timing_rows

    flat = [row for _, r in records for row in timing_rows(r)]
    parts = ["# Cross-GPU comparison\n", "Records: " + ", ".join(str(p) for p, _ in records) + "\n",
             to_markdown(table, "{:.2f}")]
    for case in dict.fromkeys(row["case"] for row in flat):
        plot = cross_gpu_plot(flat, gpus, case, folder / f"cross-gpu-{case}.png")
        if plot:
            parts.append(f"![{case}]({plot.name})\n")
    status = 0
    if gate is not None:
        baselines = load_baselines([Path(b) for b in args.baseline])
        found, notes = gate_records(records, baselines, gate)
        for note in notes:
            print(note)
        if found:
            import pandas as pd

            frame = pd.DataFrame(found)
            print(f"\nREGRESSIONS ({gate.metric} worse than +{gate.fraction:.0%} against the baseline of the same GPU):")
            print(frame.to_string(index=False))
            parts += [f"## Regressions ({args.fail_on})\n", to_markdown(frame)]
            status = 1
        else:
            print(f"no regression beyond {args.fail_on}")
    atomic_write_text(folder / "comparison.md", "\n".join(parts))
    print(f"report: {folder / 'comparison.md'}")
    return status


def cmd_accuracy(args: argparse.Namespace) -> int:
    """The torch model on held-out synthetic scenes of a family (seeds never used in training)."""
    import json

    from harness.accuracy import held_out_accuracy, summarize
    from harness.chain import ChainConfig
    from harness.data.cases import get_case
    from harness.data.families import held_out_seeds
    from harness.fileio import atomic_write_text, check_writable
    from harness.preflight import CLI_FLAGS, preflight
    from harness.report.record import RunRecord
    from harness.report.write import write_run

    cases = _listed(args, "accuracy", "cases")
    family_seeds = held_out_seeds(args.family)
    seeds = list(family_seeds[args.first:args.first + args.scenes]) if args.first >= 0 else []
    if not seeds:
        raise InvalidArgument("--scenes", "no held-out scene selected", observed=f"--first {args.first} --scenes {args.scenes}",
                              expected=f"0 <= --first < {len(family_seeds)} and --scenes >= 1", fix="pass --first 20 --scenes 20")
    if args.json is not None:
        check_writable(args.json.parent)
    chain = preflight(ChainConfig.from_options(namespace_values(args, "accuracy")), (), args.report_dir, CLI_FLAGS)
    record = RunRecord(kind="accuracy", profile="held-out", config={
        "weights": str(chain.weights_path), "cases": args.cases, "family": args.family,
        "seeds": f"{seeds[0]}..{seeds[-1]}", "device": str(chain.device)})
    print(f"weights {chain.weights_path.name}  family {args.family}  held-out seeds {seeds[0]}..{seeds[-1]}  "
          f"device {chain.device}")
    results = []
    for case_name in cases:
        case = get_case(case_name)
        rows = held_out_accuracy(chain.model, case, seeds, chain.device, family=args.family)
        record.accuracy.extend({"backend": "torch-fp32", **r} for r in rows)
        total = summarize(rows)
        results.append({"case": case_name, "shape": case.shape_id, "family": args.family, "scenes": len(rows),
                        "seeds": [seeds[0], seeds[-1]], **total})
        interval = 2.5 * case.interval_scale
        note = (f"{case_name} ({case.shape_id}), {len(rows)} held-out {args.family} scenes: mean abs error {total['mae_mm']:.2f} mm "
                f"({total['mae_mm'] / interval:.2f} depth intervals), thres2mm {total['thres2mm']:.1%}, "
                f"thres4mm {total['thres4mm']:.1%}, thres8mm {total['thres8mm']:.1%}, mean confidence "
                f"{total['mean_confidence']:.3f} (flat volume: {4 / case.num_depth:.3f})")
        record.notes.append(note)
        print(note)
    folder = write_run(record, args.report_dir)
    print(f"report: {folder / 'report.md'}")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({"weights": str(chain.weights_path), "results": results}, indent=2))
        print(f"summary: {args.json}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from harness.chain import resolve_device
    from harness.train import TrainConfig, train

    config = TrainConfig(steps=args.steps, batch=args.batch, views=args.views, min_views=args.min_views,
                         height=args.height, width=args.width, num_depth=args.num_depth, lr=args.lr, pool=args.pool,
                         seed=args.seed, init=args.init, max_minutes=args.max_minutes, family=args.family,
                         save_every=args.save_every, validate_every=args.validate_every)
    device = resolve_device(args.device)
    if device.type != "cuda":
        print("warning: training on the CPU is very slow; use a CUDA machine", file=sys.stderr)
    torch.backends.cudnn.benchmark = True
    summary = train(config, args.out, device, resume=args.resume)
    print(f"wrote {args.out} ({summary['train_s']} s)")
    return 0


def cmd_make_scene(args: argparse.Namespace) -> int:
    from harness.data.scenes import write_scene
    from harness.data.synthetic import SceneSpec, render_scene

    spec = SceneSpec(seed=args.seed, num_views=args.views, height=args.height, width=args.width)
    folder = write_scene(render_scene(spec), args.folder)
    print(f"wrote {folder} ({spec})")
    return 0


def cmd_make_weights(args: argparse.Namespace) -> int:
    from harness.model.checkpoint import save_checkpoint
    from harness.model.init import plane_sweep_init
    from harness.model.mvsnet import MVSNet

    path = save_checkpoint(plane_sweep_init(MVSNet(), args.seed), args.path,
                           extra={"init": f"harness.model.init.plane_sweep_init(seed={args.seed})"})
    print(f"wrote {path}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.doctor import run

    return run(args)


def cmd_check(args: argparse.Namespace) -> int:
    from harness.check import run

    return run(args)


def cmd_mutate(args: argparse.Namespace) -> int:
    from harness.sensitivity import run

    return run(args)


# -- the subcommands' arguments (declared here, without importing torch: --help answers at once) --

def _run_arguments(run: argparse.ArgumentParser) -> None:
    add_cli_options(run, "run", OPTION_NAMES)  # every option of run is one pytest has too (harness.options)


def _bench_arguments(bench: argparse.ArgumentParser) -> None:
    add_cli_options(bench, "bench", OPTION_NAMES)
    bench.add_argument("--backends", default=None,
                       help="comma list of the backends python -m harness doctor lists, candidates and torch "
                            "references; ort-cpu and ort-cuda are timed per graph (ort-cpu-raw, ort-cpu-simplified "
                            "...) (default: every backend for the device)")
    for old, name in (("--workaround", "workarounds"), ("--exporter", "exporters")):  # deprecated spellings
        bench.add_argument(old, dest=name, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    bench.add_argument("--label", default="", help="free text stored in the record (e.g. the machine)")
    bench.add_argument("--repeat", type=int, default=1,
                       help="measure each backend N times and report the spread of the medians (default: 1)")


def _compare_arguments(cmp: argparse.ArgumentParser) -> None:
    cmp.add_argument("records", nargs="+", help="run.json files (or their folders)")
    cmp.add_argument("--baseline", nargs="*", default=[str(PROJECT_ROOT / "reports" / "baselines")],
                     help="baseline records or folders (default: reports/baselines/)")
    cmp.add_argument("--fail-on", default=None, help="e.g. median:5%%: exit 1 when a backend is slower than the "
                     "baseline of the same GPU model by more (default: no gate)")
    cmp.add_argument("--out", type=Path, default=PROJECT_ROOT / "reports", help="(default: reports/)")


def _accuracy_arguments(acc: argparse.ArgumentParser) -> None:
    add_cli_options(acc, "accuracy", OPTION_NAMES)
    acc.add_argument("--scenes", type=int, default=20, help="number of held-out scenes (default: 20)")
    acc.add_argument("--first", type=int, default=20,
                     help="index of the first held-out seed of the family; the first 16 validated training (default: 20)")
    acc.add_argument("--json", type=Path, default=None, metavar="FILE",
                     help="also write the per-case summaries (mean abs error, thres2/4/8mm) as JSON here (default: none)")


def _train_arguments(tr: argparse.ArgumentParser) -> None:
    add_cli_options(tr, "train", OPTION_NAMES)
    tr.add_argument("--out", type=Path, required=True,
                    help="checkpoint to write (required: training never replaces the bundled "
                         "fixtures/weights/mvsnet-default.ckpt unless you name it here)")
    tr.add_argument("--steps", type=int, default=3000, help="(default: 3000)")
    tr.add_argument("--batch", type=int, default=4, help="(default: 4)")
    tr.add_argument("--views", type=int, default=5, help="views rendered per scene, the most a step uses (default: 5)")
    tr.add_argument("--min-views", type=int, default=3,
                    help="the fewest views a step uses; each step draws its count up to --views (default: 3)")
    tr.add_argument("--height", type=int, default=256, help="(default: 256)")
    tr.add_argument("--width", type=int, default=320, help="(default: 320)")
    tr.add_argument("--num-depth", type=int, default=192, help="(default: 192)")
    tr.add_argument("--lr", type=float, default=1e-3, help="(default: 1e-3)")
    tr.add_argument("--pool", type=int, default=2000, help="pre-rendered training scenes (default: 2000)")
    tr.add_argument("--seed", type=int, default=0, help="(default: 0)")
    tr.add_argument("--init", choices=("plane-sweep", "random"), default="plane-sweep", help="(default: plane-sweep)")
    tr.add_argument("--save-every", type=int, default=250,
                    help="steps per chunk: checkpoint, <out>.state.pt and one log line after each (default: 250)")
    tr.add_argument("--validate-every", type=int, default=250,
                    help="steps between validations on 16 held-out scenes (default: 250)")
    tr.add_argument("--resume", action="store_true",
                    help="continue from <out>.state.pt, same options (only --steps, --max-minutes, --save-every, "
                         "--validate-every may change); without the file, start at step 1 (default: off)")
    tr.add_argument("--max-minutes", type=float, default=0.0,
                    help="stop and save after this much training time, resumes included (default: 0, no limit)")


def _doctor_arguments(doctor: argparse.ArgumentParser) -> None:
    doctor.add_argument("--require", default="", metavar="NAMES",
                        help="comma list of the backends doctor lists (the candidates run, bench, check and "
                             "pytest take, or the torch references): exit 1 naming each unavailable one and why "
                             "(default: none required)")
    doctor.add_argument("--json", action="store_true", help="print the facts as JSON (default: a text screen)")
    add_cli_options(doctor, "doctor")  # --cache-dir (harness.options)


def _check_arguments(check: argparse.ArgumentParser) -> None:
    add_cli_options(check, "check")  # what pytest's --harness-onnx/-engine gate has too (harness.options)
    check.add_argument("--case", default=None, help=f"comma list of {', '.join(CASES)}: several run a graph exported "
                       "with dynamic axes at each (a static graph runs only at its own shapes) (default: the graph's "
                       "static shapes; --model alone: seed)")
    check.add_argument("--backends", default=",".join(CHECK_BACKENDS),
                       help=f"for --onnx: comma list of {','.join(CHECK_BACKENDS)} (default: all; unavailable "
                            "ones are skipped with the reason)")
    check.add_argument("--save-polygraphy", type=Path, default=None, metavar="DIR",
                       help="write DIR/inputs.json, DIR/reference_outputs.json (Polygraphy's formats, the graph's "
                            "own tensor names), the raw files trtexec reads and DIR/commands.sh with the leg's gates "
                            "as Polygraphy and trtexec tolerances; DIR/<graph stem>/ for several graphs, DIR/<case>/ for "
                            "several cases (DIR/<graph stem>-<case>/ for both) (default: none)")


def _mutate_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--case", default="small", help="input case (default: small)")
    cmd.add_argument("--precisions", default="fp32,fp16", help="graph precisions (default: fp32,fp16)")
    cmd.add_argument("--checks", default=",".join(MUTATION_CHECKS),
                     help=f"checks that count in the verdict (default: {','.join(MUTATION_CHECKS)})")
    cmd.add_argument("--only", default="", help="comma list of mutation names (default: the whole catalogue)")
    cmd.add_argument("--golden", type=Path, default=None,
                     help="stored golden outputs (default: baselined now from the unmutated graphs)")
    cmd.add_argument("--write-golden", type=Path, default=None, metavar="DIR",
                     help="re-baseline: store ONNX Runtime outputs of every unmutated graph variant in DIR and exit "
                          "(default: off)")
    cmd.add_argument("--workarounds", default="precomputed",
                     help="with --write-golden: the graphs' inverse workarounds (default: precomputed)")
    cmd.add_argument("--exporters", default="torchscript",
                     help="with --write-golden: the graphs' exporters (default: torchscript)")
    add_cli_options(cmd, "mutate")  # --tolerances, --cache-dir (harness.options)
    cmd.add_argument("--json", type=Path, default=None, help="also write the outcomes as JSON here (default: none)")
    cmd.add_argument("--list", action="store_true", help="list the catalogue and exit (default: off)")


def _make_scene_arguments(scene: argparse.ArgumentParser) -> None:
    scene.add_argument("folder", type=Path, help="new folder for images/, cams/, depths/, masks/ and pair.txt")
    scene.add_argument("--seed", type=int, default=0, help="scene seed; the bundled scene is seed 0 (default: 0)")
    scene.add_argument("--views", type=int, default=5, help="number of views, the first is the reference (default: 5)")
    scene.add_argument("--height", type=int, default=512, help="image height in pixels (default: 512)")
    scene.add_argument("--width", type=int, default=640, help="image width in pixels (default: 640)")


def _make_weights_arguments(weights: argparse.ArgumentParser) -> None:
    weights.add_argument("path", type=Path, help="checkpoint file to write (MVSNet_pytorch format)")
    weights.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")


def _calibrate_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--family", default="calibration", choices=("calibration", "property-rigs", "held-out"),
                     help="calibration: measure the generator's scene folders and the named cases and write a "
                          "record; property-rigs: the same over rigs of the property suite's full-profile space "
                          "(rendered in memory); held-out: judge by the current limits (default: calibration)")
    cmd.add_argument("--seeds", default=None, help="generator seeds, e.g. 1-50 (default: 1-50 calibration, "
                                                  "1-60,1001-1040 property-rigs (from 1001: edge-biased rigs), "
                                                  "10001-10020 held-out)")
    cmd.add_argument("--named-cases", default="small,seed",
                     help="named cases on the bundled scene in the calibration corpus (default: small,seed)")
    cmd.add_argument("--work", type=Path, default=None,
                     help="work folder (scenes, samples.jsonl: resumable) (default: reports/calibration/<class>-<family>)")
    cmd.add_argument("--record", type=Path, default=None,
                     help="where the record goes (default: fixtures/calibration/<class>/calibration-<utc>.json)")
    cmd.add_argument("--derive", action="store_true",
                     help="write the tolerances file from the committed records and exit (default: off)")
    cmd.add_argument("--no-stages", action="store_true", help="skip the per-stage probe builds (default: off)")
    cmd.add_argument("--no-golden", action="store_true",
                     help="skip ONNX Runtime CPU one thread vs default (the golden gates' noise) (default: off)")
    cmd.add_argument("--no-mutations", action="store_true",
                     help="skip the catalogue's bugs in the report's figures (default: off)")
    cmd.add_argument("--backends-only", default="",
                     help="comma list: calibrate only these candidate backends (default: every one available here)")
    add_cli_options(cmd, "calibrate")  # --weights, --device, --cache-dir, --tolerances, --align-corners


def cmd_calibrate(args: argparse.Namespace) -> int:
    from harness.calibrate import run

    return run(args)


@dataclass(frozen=True)
class Command:
    """One subcommand: what its ``--help`` says, its arguments and the function that runs it (which
    imports the heavy modules: torch, ONNX, the chain)."""

    name: str
    summary: str  # one line: the command list of `python -m harness --help` and the top of its own help
    example: str  # arguments after `python -m harness <name>` that work on a fresh clone
    exits: str  # what 0 and 1 mean for it (2 and 130/143 are common to all: EXITS)
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    more: tuple[str, ...] = ()  # further examples (arguments, as ``example``), each run as written by a test
    where: str = ""  # where the files the examples name come from


#: Exit codes every subcommand shares (main).
EXITS = "2 bad input or usage (one line: <subject> | <problem> ...); 130/143 stopped by SIGINT/SIGTERM"

COMMANDS: tuple[Command, ...] = (
    Command("run", "every available backend on the bundled scene (or yours) against torch strict FP32: a parity "
            "table, and a new reports/<utc-stamp>/ with report.md and run.json",
            "--cases small", "0 every leg within its gate; 1 a leg failed its gate, degenerate weights or no leg ran",
            _run_arguments, cmd_run),
    Command("bench", "time every backend (CUDA events; perf_counter on CPU) with parity, and write a report",
            "--cases small --profile quick", "0 measured (parity is reported, not gated; gate timing with compare "
            "--fail-on)", _bench_arguments, cmd_bench),
    Command("compare", "one cross-GPU table from run records; --fail-on gates against the baselines of the same GPU",
            "reports/baselines/h100.json reports/baselines/h200.json",
            "0 compared (no regression beyond --fail-on); 1 a backend regressed beyond --fail-on",
            _compare_arguments, cmd_compare),
    Command("accuracy", "accuracy of the weights on held-out synthetic scenes", "--cases small --scenes 4",
            "0 measured (reported, not gated)", _accuracy_arguments, cmd_accuracy),
    Command("train", "train MVSNet on synthetic scenes (GPU)", "--steps 5000 --max-minutes 5.5 --out my-weights.ckpt",
            "0 trained and saved", _train_arguments, cmd_train),
    Command("doctor", "what this machine can run (GPU, libraries, backends) and why not", "--require ort-cpu",
            "0 facts printed; 1 a --require'd backend is unavailable here", _doctor_arguments, cmd_doctor),
    Command("check", "gate your own ONNX graph / TensorRT engine / model code against the torch reference",
            "--onnx build/mvsnet.onnx", "0 every leg within its gate (--model alone: your code matches one "
            "sampling convention on every case); 1 a leg or the precision audit failed (--model alone: it matches "
            "neither)", _check_arguments, cmd_check,
            more=("--model 'models.mvsnet:MVSNet(refine=False)'",),
            where="build/mvsnet.onnx: python examples/export_article.py --out build writes it; models.mvsnet: "
                  "MVSNet_pytorch's code, run from its checkout (or with it on PYTHONPATH)"),
    Command("mutate", "inject the catalogue of conversion bugs into the small-case graphs; which check catches each",
            "--list", "0 every bug caught and no false alarm; 1 a bug missed or a benign change flagged",
            _mutate_arguments, cmd_mutate),
    Command("calibrate", "measure every gate's benign noise over a corpus (a record per machine class), derive the "
            "limits from the records by one rule, or count false alarms on held-out inputs",
            "--derive", "0 done (held-out: no false alarm); 1 a held-out sample over its limit",
            _calibrate_arguments, cmd_calibrate),
    Command("make-scene", "render a synthetic DTU-format scene (the bundled one is seed 0)",
            "my-scene --seed 1", "0 written", _make_scene_arguments, cmd_make_scene),
    Command("make-weights", "write the seeded plane-sweep initialisation as an MVSNet_pytorch checkpoint",
            "my-init.ckpt --seed 1", "0 written", _make_weights_arguments, cmd_make_weights),
)


def examples(command: Command) -> list[str]:
    """The command lines its help prints, each as a user would type it."""
    return [f"python -m harness {command.name} {e}" for e in (command.example, *command.more)]


def _epilog(command: Command) -> str:
    where = f"\n  ({command.where})" if command.where else ""
    return ("example:\n" + "\n".join(f"  {line}" for line in examples(command)) + where +
            f"\n\nexit codes: {command.exits}; {EXITS}")


def command_parser(name: str, parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser
                   ) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` alone (``python -m harness <name>``): for a script that
    hands its other arguments on to that command and checks them before any work."""
    command = next(c for c in COMMANDS if c.name == name)
    parser = parser_class(prog=f"python -m harness {name}", description=command.summary, epilog=_epilog(command),
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    command.arguments(parser)
    parser.set_defaults(func=command.run, command=name)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand (of ``COMMANDS``); builds without importing torch."""
    parser = argparse.ArgumentParser(prog="python -m harness", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="The parity and benchmark gate of MVSNet's PyTorch -> ONNX -> "
                                                 "TensorRT conversion: the main job, your own conversion, the "
                                                 "generators.",
                                     epilog=f"python -m harness <command> --help: its options, an example and its "
                                            f"exit codes.\nexit codes: 0 passed; 1 a check failed; {EXITS}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for command in COMMANDS:
        parser_of = sub.add_parser(command.name, help=command.summary, description=command.summary,
                                   epilog=_epilog(command), formatter_class=argparse.RawDescriptionHelpFormatter)
        command.arguments(parser_of)
        parser_of.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 every check passed; 1 a check failed (parity, a regression); 2 bad input or
    usage; 128 + N stopped by signal N (130 SIGINT, 143 SIGTERM)."""
    args = build_parser().parse_args(argv)
    keep_freed_blocks()  # glibc reuses the freed pages of big tensors instead of faulting them in again
    try:
        with _signals_interrupt():  # SIGTERM too: at any point, one line and 128 + N (a command keeps what finished)
            return int(args.func(args))
    except Interrupted as exc:
        print(exc.problem, file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("interrupted by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
