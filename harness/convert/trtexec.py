"""The trtexec command that builds and times the same engine as the harness.

Same ONNX file, shapes (static, or the min/opt/max profile), workspace, builder optimisation
level, TF32 setting and timing cache; timing like the harness (warm-up 200 ms, at least 10
iterations and 3 s, percentiles 90/95/99, no CUDA graph, inputs already on the device). The flags
follow the TensorRT major version: 10.x needs ``--stronglyTyped``; 11.x is strongly typed
and uses a CUDA graph unless told ``--noCudaGraph``. (pip wheels ship no trtexec; it comes with
the TensorRT tarball or NVIDIA's containers.)
"""

from __future__ import annotations

import shlex
from pathlib import Path

from harness.convert.engine import BuildSettings, Profile


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def trtexec_command(
    onnx_path: Path,
    settings: BuildSettings,
    profile: Profile,
    trt_major: int,
    engine_path: Path | None = None,
    timing_cache: Path | None = None,
    cuda_graph: bool = False,
) -> str:
    args = ["trtexec", f"--onnx={onnx_path}"]
    if engine_path is not None:
        args.append(f"--saveEngine={engine_path}")
    if profile.is_static:
        args.append("--shapes=" + ",".join(f"{name}:{_dims(opt)}" for name, _, opt, _ in profile.shapes))
    else:
        bounds = {"--minShapes": [(n, lo) for n, lo, _, _ in profile.shapes],
                  "--optShapes": [(n, opt) for n, _, opt, _ in profile.shapes],
                  "--maxShapes": [(n, hi) for n, _, _, hi in profile.shapes]}
        for flag, rows in bounds.items():
            args.append(f"{flag}=" + ",".join(f"{name}:{_dims(shape)}" for name, shape in rows))
    args.append(f"--memPoolSize=workspace:{settings.workspace_mib}M")
    args.append(f"--builderOptimizationLevel={settings.optimization_level}")
    if settings.precision != "tf32":
        args.append("--noTF32")
    if trt_major == 10:
        args.append("--stronglyTyped")  # precision comes from the graph, as in the harness
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    args += ["--warmUp=200", "--iterations=10", "--duration=3", "--percentile=90,95,99"]
    if trt_major >= 11:
        if not cuda_graph:
            args.append("--noCudaGraph")  # 11.x captures a CUDA graph by default
    else:
        args.append("--noDataTransfers")  # 10.x times copies by default; the harness does not
        if cuda_graph:
            args.append("--useCudaGraph")
    return " ".join(shlex.quote(a) for a in args)
