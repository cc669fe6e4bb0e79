"""``python -m harness <command>``: the main job and the data/weights generators.

Commands:
  run           every available backend on the bundled scene (or yours): a parity table on the
                terminal and a new reports/<utc-stamp>/ with report.md and run.json
  make-scene    render a synthetic DTU-format scene (the bundled one is seed 0)
  make-weights  write the seeded plane-sweep initialisation as an MVSNet_pytorch checkpoint
  bench         time every backend (CUDA events; perf_counter on CPU) with parity, write a report
  compare       one cross-GPU table from run records; --fail-on median:5% gates against baselines
  accuracy      accuracy of the weights on held-out synthetic scenes
  train         train MVSNet on synthetic scenes (GPU)
  doctor        what this machine can run, and why not (--require trt,ort-cuda)
  check         gate your own ONNX graph / TensorRT engine / model code (--onnx, --engine, --model)
  mutate        inject conversion bugs into the small-case graphs; which check catches each
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.chain import OPTION_NAMES
from harness.errors import BackendUnavailable, HarnessError, Interrupted, InvalidArgument
from harness.options import add_cli_options, namespace_values, option

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
    row = option(name, command)
    return _choices(row.flag(command), getattr(args, row.dest(command)), row.allowed(OPTION_NAMES))


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
    from harness.chain import ChainConfig, plan_legs, run_leg
    from harness.model.sanity import degenerate_reasons
    from harness.preflight import CLI_FLAGS, preflight
    from harness.report.markdown import record_verdict
    from harness.report.plots import depth_difference_maps
    from harness.report.record import RunRecord
    from harness.report.write import write_run
    from harness.tolerances import Tolerances
    from harness.verdict import LegTable, panel_caption

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
    failed = 0
    skipped: dict[str, str] = {}
    results = []
    interrupted: Interrupted | None = None
    try:
        with _signals_interrupt():
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
        print(f"interrupted by {signal.Signals(interrupted.signum).name}: kept {len(record.parity)} of {len(legs)} "
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
    from harness.bench import CPU_BACKENDS, CUDA_BACKENDS, default_backends, fastest, run_benchmarks
    from harness.chain import ChainConfig
    from harness.convert.workarounds import EXPORTABLE
    from harness.preflight import CLI_FLAGS, preflight
    from harness.report.plots import depth_difference_maps, latency_plot
    from harness.report.record import RunRecord
    from harness.report.write import write_run
    from harness.timing import PROFILES
    from harness.tolerances import Tolerances

    cases = _listed(args, "bench", "cases")
    known = tuple(dict.fromkeys(CUDA_BACKENDS + CPU_BACKENDS))
    requested = _choices("--backends", args.backends, known) if args.backends is not None else None
    _choices("--workaround", args.workaround, tuple(EXPORTABLE))
    chain = preflight(ChainConfig.from_options(namespace_values(args, "bench")), cases, args.report_dir, CLI_FLAGS)
    backends = requested or default_backends(chain.device)
    rows = run_benchmarks(chain, cases, backends, PROFILES[args.profile], Tolerances.load(args.tolerances),
                          args.workaround, args.exporter, repeat=args.repeat)
    record = RunRecord(kind="bench", profile=args.profile, config={
        "cases": cases, "backends": backends, "workaround": args.workaround, "exporter": args.exporter,
        "device": str(chain.device), "weights": str(chain.weights_path), "timing": PROFILES[args.profile].__dict__,
        "label": args.label, "repeat": args.repeat,
    })
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
    for note in record.notes:
        print(note)
    print(f"report: {folder / 'report.md'}")
    chain.close()
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
    """The torch model on held-out synthetic scenes (seeds never used in training)."""
    from harness.accuracy import held_out_accuracy, summarize
    from harness.chain import ChainConfig
    from harness.data.cases import get_case
    from harness.preflight import CLI_FLAGS, preflight
    from harness.report.record import RunRecord
    from harness.report.write import write_run
    from harness.train import HELD_OUT_SEEDS

    cases = _listed(args, "accuracy", "cases")
    chain = preflight(ChainConfig.from_options(namespace_values(args, "accuracy")), (), args.report_dir, CLI_FLAGS)
    seeds = list(HELD_OUT_SEEDS[args.first:args.first + args.scenes])
    if not seeds:
        raise InvalidArgument("--scenes", "no held-out scene selected", observed=f"--first {args.first} --scenes {args.scenes}",
                              expected=f"--first below {len(HELD_OUT_SEEDS)} and --scenes >= 1", fix="pass --scenes 20")
    record = RunRecord(kind="accuracy", profile="held-out", config={
        "weights": str(chain.weights_path), "cases": args.cases, "seeds": f"{seeds[0]}..{seeds[-1]}",
        "device": str(chain.device)})
    print(f"weights {chain.weights_path.name}  held-out seeds {seeds[0]}..{seeds[-1]}  device {chain.device}")
    for case_name in cases:
        case = get_case(case_name)
        rows = held_out_accuracy(chain.model, case, seeds, chain.device)
        record.accuracy.extend({"backend": "torch-fp32", **r} for r in rows)
        total = summarize(rows)
        interval = 2.5 * case.interval_scale
        note = (f"{case_name} ({case.shape_id}), {len(rows)} held-out scenes: mean abs error {total['mae_mm']:.2f} mm "
                f"({total['mae_mm'] / interval:.2f} depth intervals), thres2mm {total['thres2mm']:.1%}, "
                f"thres4mm {total['thres4mm']:.1%}, thres8mm {total['thres8mm']:.1%}, mean confidence "
                f"{total['mean_confidence']:.3f} (flat volume: {4 / case.num_depth:.3f})")
        record.notes.append(note)
        print(note)
    folder = write_run(record, args.report_dir)
    print(f"report: {folder / 'report.md'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from harness.chain import resolve_device
    from harness.train import TrainConfig, train

    config = TrainConfig(steps=args.steps, batch=args.batch, views=args.views, height=args.height, width=args.width,
                         num_depth=args.num_depth, lr=args.lr, pool=args.pool, seed=args.seed, init=args.init,
                         max_minutes=args.max_minutes)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run every available backend on a scene and write a report")
    add_cli_options(run, "run", OPTION_NAMES)  # every option of run is one pytest has too (harness.options)
    run.set_defaults(func=cmd_run)

    bench = sub.add_parser("bench", help="time every backend and write a report")
    add_cli_options(bench, "bench", OPTION_NAMES)
    bench.add_argument("--backends", default=None, help="comma list (default: every backend for the device)")
    bench.add_argument("--profile", choices=("quick", "full"), default="quick",
                       help="quick: >=10 rounds and >=1 s; full: >=20 rounds and >=3 s (default: quick)")
    bench.add_argument("--workaround", default="precomputed", help="for ONNX/TensorRT legs (default: precomputed)")
    bench.add_argument("--exporter", default="torchscript", help="for ONNX/TensorRT legs (default: torchscript)")
    bench.add_argument("--label", default="", help="free text stored in the record (e.g. the machine)")
    bench.add_argument("--repeat", type=int, default=1,
                       help="measure each backend N times and report the spread of the medians (default: 1)")
    bench.set_defaults(func=cmd_bench)

    cmp = sub.add_parser("compare", help="cross-GPU table from run records; regression gate")
    cmp.add_argument("records", nargs="+", help="run.json files (or their folders)")
    cmp.add_argument("--baseline", nargs="*", default=[str(PROJECT_ROOT / "reports" / "baselines")],
                     help="baseline records or folders (default: reports/baselines/)")
    cmp.add_argument("--fail-on", default=None, help="e.g. median:5%%: exit 1 when a backend is slower than the "
                     "baseline of the same GPU model by more (default: no gate)")
    cmp.add_argument("--out", type=Path, default=PROJECT_ROOT / "reports", help="(default: reports/)")
    cmp.set_defaults(func=cmd_compare)

    acc = sub.add_parser("accuracy", help="accuracy of the weights on held-out synthetic scenes")
    add_cli_options(acc, "accuracy", OPTION_NAMES)
    acc.add_argument("--scenes", type=int, default=20, help="number of held-out scenes (default: 20)")
    acc.add_argument("--first", type=int, default=20,
                     help="index of the first held-out seed; the first 16 validated training (default: 20)")
    acc.set_defaults(func=cmd_accuracy)

    tr = sub.add_parser("train", help="train MVSNet on synthetic scenes (GPU)")
    add_cli_options(tr, "train")
    tr.add_argument("--out", type=Path, required=True,
                    help="checkpoint to write (required: training never replaces the bundled "
                         "fixtures/weights/mvsnet-default.ckpt unless you name it here)")
    tr.add_argument("--steps", type=int, default=3000, help="(default: 3000)")
    tr.add_argument("--batch", type=int, default=4, help="(default: 4)")
    tr.add_argument("--views", type=int, default=3, help="(default: 3)")
    tr.add_argument("--height", type=int, default=256, help="(default: 256)")
    tr.add_argument("--width", type=int, default=320, help="(default: 320)")
    tr.add_argument("--num-depth", type=int, default=192, help="(default: 192)")
    tr.add_argument("--lr", type=float, default=1e-3, help="(default: 1e-3)")
    tr.add_argument("--pool", type=int, default=2000, help="pre-rendered training scenes (default: 2000)")
    tr.add_argument("--seed", type=int, default=0, help="(default: 0)")
    tr.add_argument("--init", choices=("plane-sweep", "random"), default="plane-sweep", help="(default: plane-sweep)")
    tr.add_argument("--resume", action="store_true", help="continue from <out>.state.pt (default: off)")
    tr.add_argument("--max-minutes", type=float, default=0.0, help="stop and save after this much time (default: none)")
    tr.set_defaults(func=cmd_train)

    from harness import check, doctor, sensitivity

    doctor.add_parser(sub)
    check.add_parser(sub)
    sensitivity.add_parser(sub)

    scene = sub.add_parser("make-scene", help="render a synthetic DTU-format scene")
    scene.add_argument("folder", type=Path, help="new folder for images/, cams/, depths/, masks/ and pair.txt")
    scene.add_argument("--seed", type=int, default=0, help="scene seed; the bundled scene is seed 0 (default: 0)")
    scene.add_argument("--views", type=int, default=5, help="number of views, the first is the reference (default: 5)")
    scene.add_argument("--height", type=int, default=512, help="image height in pixels (default: 512)")
    scene.add_argument("--width", type=int, default=640, help="image width in pixels (default: 640)")
    scene.set_defaults(func=cmd_make_scene)

    weights = sub.add_parser("make-weights", help="write the seeded plane-sweep initialisation as a checkpoint")
    weights.add_argument("path", type=Path, help="checkpoint file to write (MVSNet_pytorch format)")
    weights.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")
    weights.set_defaults(func=cmd_make_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 every check passed; 1 a check failed (parity, a regression); 2 bad input or
    usage; 128 + N stopped by signal N (130 SIGINT, 143 SIGTERM)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Interrupted as exc:
        print(f"interrupted by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("interrupted by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
