"""``python -m harness <command>``: the main job and the data/weights generators.

Commands:
  run           every available backend on the bundled scene (or yours): a parity table on the
                terminal and a new reports/<utc-stamp>/ with report.md and run.json
  make-scene    render a synthetic DTU-format scene (the bundled one is seed 0)
  make-weights  write the seeded plane-sweep initialisation as an MVSNet_pytorch checkpoint
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from harness.chain import CANDIDATES
from harness.errors import BackendUnavailable, HarnessError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _csv(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def cmd_run(args: argparse.Namespace) -> int:
    from harness.chain import Chain, ChainConfig, plan_legs, run_leg
    from harness.report.record import RunRecord, write_run
    from harness.tolerances import Tolerances

    chain = Chain(ChainConfig(weights=args.weights, scene=args.scene, cache_dir=args.cache_dir,
                              device=args.device, opset=args.opset, trt_flavour=args.trt, trt_dynamic=args.trt_dynamic))
    tolerances = Tolerances.load(args.tolerances)
    legs = plan_legs(_csv(args.cases), _csv(args.workarounds), _csv(args.exporters), _csv(args.variants),
                     _csv(args.backends))
    record = RunRecord(kind="run", profile="run", config={
        "cases": args.cases, "backends": args.backends, "workarounds": args.workarounds, "exporters": args.exporters,
        "variants": args.variants, "device": str(chain.device), "weights": str(chain.weights_path),
        "scene": str(args.scene or "bundled"), "opset": args.opset,
    })
    print(f"weights {chain.weights_path.name}  scene {args.scene or 'bundled synthetic-000'}  device {chain.device}")
    print(f"{'leg':<72} {'depth mm^2':>10} {'conf':>10} {'result':>7}")
    failed = 0
    skipped: dict[str, str] = {}
    for leg in legs:
        if leg.candidate in skipped:
            continue
        started = time.perf_counter()
        try:
            result = run_leg(chain, leg, tolerances)
        except BackendUnavailable as exc:
            skipped[leg.candidate] = exc.missing
            continue
        row = result.row()
        row["seconds"] = round(time.perf_counter() - started, 2)
        record.parity.append(row)
        failed += not result.passed
        print(f"{leg.id:<72} {result.diffs['depth'].metrics['max_sq_err']:>10.3g} "
              f"{result.diffs['photometric_confidence'].metrics['max_sq_err']:>10.3g} "
              f"{'ok' if result.passed else 'FAIL':>7}")
    for backend, reason in skipped.items():
        print(f"skipped {backend}: {reason}")
        record.notes.append(f"skipped {backend}: {reason}")
    for case in _csv(args.cases):
        record.accuracy.extend(_accuracy_rows(chain, case))
    folder = write_run(record, args.report_dir)
    print(f"report: {folder / 'report.md'}")
    chain.close()
    return 1 if failed else 0


def _accuracy_rows(chain, case: str) -> list[dict[str, Any]]:
    from harness.metrics import depth_metrics

    views = chain.views(case)
    if views.depth is None or views.mask is None:
        return []
    out = chain.reference_outputs(case)
    metrics = depth_metrics(out["depth"][0].cpu(), views.depth, views.mask, out["photometric_confidence"][0].cpu())
    return [{"case": case, "backend": "torch-fp32", **metrics}]


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
    run.add_argument("--weights", type=Path, default=None, help="MVSNet_pytorch checkpoint (default: bundled weights)")
    run.add_argument("--scene", type=Path, default=None, help="DTU-format scene folder (default: bundled scene)")
    run.add_argument("--cases", default="seed", help="comma list of small, seed, dtu (default: seed)")
    run.add_argument("--backends", default=",".join(CANDIDATES),
                     help=f"candidates (default: all of {','.join(CANDIDATES)}; unavailable ones are skipped with the reason)")
    run.add_argument("--workarounds", default="precomputed,closed_form", help="(default: precomputed,closed_form)")
    run.add_argument("--exporters", default="torchscript", help="torchscript and/or dynamo (default: torchscript)")
    run.add_argument("--variants", default="raw,simplified", help="ONNX graphs (default: raw,simplified)")
    run.add_argument("--device", default="auto", help="torch reference device: auto, cpu, cuda (default: auto)")
    run.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    run.add_argument("--cache-dir", type=Path, default=None, help="artifact cache (default: ~/.cache/mvsnet-trt-harness)")
    run.add_argument("--tolerances", type=Path, default=None, help="tolerances TOML (default: fixtures/tolerances.toml)")
    run.add_argument("--report-dir", type=Path, default=PROJECT_ROOT / "reports", help="(default: reports/)")
    run.add_argument("--trt", default="auto", choices=("auto", "tensorrt", "tensorrt_rtx"),
                     help="TensorRT module (default: auto: tensorrt, else tensorrt_rtx)")
    run.add_argument("--trt-dynamic", action="store_true", help="engines with a dynamic H/W/D profile (default: static)")
    run.set_defaults(func=cmd_run)

    scene = sub.add_parser("make-scene", help="render a synthetic DTU-format scene")
    scene.add_argument("folder", type=Path)
    scene.add_argument("--seed", type=int, default=0)
    scene.add_argument("--views", type=int, default=5)
    scene.add_argument("--height", type=int, default=512)
    scene.add_argument("--width", type=int, default=640)
    scene.set_defaults(func=cmd_make_scene)

    weights = sub.add_parser("make-weights", help="write the seeded plane-sweep initialisation as a checkpoint")
    weights.add_argument("path", type=Path)
    weights.add_argument("--seed", type=int, default=0)
    weights.set_defaults(func=cmd_make_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
