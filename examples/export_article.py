"""The source article's conversion, end to end, then gated by the harness.

1. export MVSNet the article's way: the inverse projections computed outside the network and fed
   as a fourth input, its I/O names (``in_imgs, in_proj_matrices, in_inverse_proj_matrices,
   in_depth_values -> out_depth, out_confidence``), ``opset_version=16`` with the TorchScript
   exporter (torch >= 2.9 defaults to the dynamo exporter, which writes opset 18 when asked for
   16), then onnx-simplifier;
2. print the trtexec command that builds ``mvsnet.trt`` from it (the article's
   ``--workspace=6000`` is ``--memPoolSize=workspace:6000`` since TensorRT 8.4);
3. run ``python -m harness check --onnx mvsnet.onnx`` on it.

    python examples/export_article.py --out build/ --case small

The network is the harness's MVSNet (same function and checkpoint keys as MVSNet_pytorch) with
the article's patch: ``homo_warping`` takes the precomputed inverse. ``--align-corners false``
exports what MVSNet_pytorch's code computes on torch >= 1.3 (see the README).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import torch
from torch import nn

from harness.errors import HarnessError, InvalidArgument
from harness.vocabulary import CASES

ARTICLE_INPUTS = ["in_imgs", "in_proj_matrices", "in_inverse_proj_matrices", "in_depth_values"]
ARTICLE_OUTPUTS = ["out_depth", "out_confidence"]


class ArticleMVSNet(nn.Module):
    """MVSNet patched the article's way: four inputs, the inverse fed, a (depth, confidence) tuple."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, imgs, proj_matrices, inverse_proj_matrices, depth_values):  # type: ignore[no-untyped-def]
        out = self.model(imgs, proj_matrices, depth_values, inverse_proj_matrices)
        return out["depth"], out["photometric_confidence"]


def article_inputs(case: str, scene: Path | None = None) -> tuple[torch.Tensor, ...]:
    """The case's tensors in the article's input order (the inverse precomputed in float64)."""
    from harness.data.cases import case_feed, case_views, get_case

    this = get_case(case)
    feed = case_feed(this, case_views(this, scene), with_inverse=True)
    return feed["imgs"], feed["proj_matrices"], feed["inverse_proj_matrices"], feed["depth_values"]


def export(path: Path, case: str = "small", weights: Path | None = None, align_corners: bool = True,
           input_names: list[str] | None = None, simplify: bool = True, model: nn.Module | None = None) -> Path:
    """Export the article's graph to ``path`` (``input_names`` in the article's order unless given;
    ``model``: the loaded checkpoint, else ``weights`` is loaded). No partial file stays behind."""
    import onnx
    import onnxsim

    from harness.chain import BUNDLED_WEIGHTS
    from harness.model.checkpoint import load_checkpoint

    model = model or load_checkpoint(weights or BUNDLED_WEIGHTS, align_corners=align_corners)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_suffix(".raw.onnx")
    try:
        torch.onnx.export(ArticleMVSNet(model).eval(), article_inputs(case), str(raw), opset_version=16, dynamo=False,
                          input_names=input_names or ARTICLE_INPUTS, output_names=ARTICLE_OUTPUTS)
        if not simplify:
            raw.replace(path)
            return path
        simplified, ok = onnxsim.simplify(onnx.load(str(raw)))
        if not ok:
            raise RuntimeError("onnxsim could not validate the simplified graph")
        onnx.save(simplified, str(path))
        return path
    finally:
        raw.unlink(missing_ok=True)


def trtexec_command(onnx_path: Path, engine_path: Path) -> str:
    return f"trtexec --onnx={onnx_path} --saveEngine={engine_path} --memPoolSize=workspace:6000"


SCRIPT = "examples/export_article.py"


class _Refusing(argparse.ArgumentParser):
    """argparse's usage errors as the harness's one-line message (exit 2 from ``main``), not a usage
    screen."""

    def error(self, message: str) -> NoReturn:
        raise InvalidArgument(SCRIPT, "bad arguments", observed=message,
                              expected=f"the options of {SCRIPT} --help, and those of python -m harness check",
                              fix=f"python {SCRIPT} --help")


def parse_arguments(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """This script's options, and the rest for ``python -m harness check``: every one checked here,
    before any export (a typo must not be found after minutes of work)."""
    parser = _Refusing(prog=SCRIPT, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="Other options go to python -m harness check (--report-dir, --backends ...). Exit "
                              "codes: those of check; 2 bad arguments (one line, nothing written).")
    parser.add_argument("--out", type=Path, default=Path("build"), help="folder for mvsnet.onnx (default: build/)")
    parser.add_argument("--case", default="small", help=f"export shape: {', '.join(CASES)} (default: small)")
    parser.add_argument("--weights", type=Path, default=None, help="checkpoint (default: bundled weights)")
    parser.add_argument("--align-corners", choices=("true", "false"), default="true",
                        help="the exported graph's sampling convention (default: true)")
    parser.add_argument("--no-check", action="store_true", help="export only (default: run harness check)")
    args, check_args = parser.parse_known_args(argv)
    if args.case not in CASES:
        raise InvalidArgument("--case", "unknown case", observed=args.case, expected=f"one of {', '.join(CASES)}",
                              fix="pass --case small")
    if args.out.exists() and not args.out.is_dir():
        raise InvalidArgument("--out", "not a folder", observed=str(args.out), expected="a folder, new or existing",
                              fix="pass --out with a folder for mvsnet.onnx")
    from harness.cli import command_parser

    if args.no_check and check_args:
        raise InvalidArgument(SCRIPT, "options for check with --no-check", observed=" ".join(check_args),
                              expected="no check options when nothing is checked", fix="drop them or --no-check")
    command_parser("check", _Refusing).parse_args(check_command(args, check_args))
    return args, check_args


def check_command(args: argparse.Namespace, check_args: list[str]) -> list[str]:
    """The arguments of ``python -m harness check`` on the exported graph."""
    weights = ["--weights", str(args.weights)] if args.weights else []
    return ["--onnx", str(args.out / "mvsnet.onnx"), *weights, "--align-corners", args.align_corners, *check_args]


def main(argv: list[str] | None = None) -> int:
    """Exit codes: those of ``python -m harness check``; 2 bad arguments or weights (one line on
    stderr, nothing written)."""
    try:
        args, check_args = parse_arguments(argv)
        from harness.model.checkpoint import load_checkpoint

        model = load_checkpoint(args.weights, align_corners=args.align_corners == "true") if args.weights else None
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    created = not args.out.exists()
    try:
        onnx_path = export(args.out / "mvsnet.onnx", args.case, args.weights, args.align_corners == "true", model=model)
    except BaseException:
        if created:  # nothing left behind: no empty (or half-written) output folder
            shutil.rmtree(args.out, ignore_errors=True)
        raise
    print(f"exported {onnx_path} (opset 16, the article's I/O names, simplified)")
    print("build the engine with:")
    print(f"  {trtexec_command(onnx_path, args.out / 'mvsnet.trt')}")
    if args.no_check:
        return 0
    from harness.cli import main as harness_main

    argv_check = ["check", *check_command(args, check_args)]
    print("$ python -m harness " + " ".join(argv_check))
    return harness_main(argv_check)


if __name__ == "__main__":
    sys.exit(main())
