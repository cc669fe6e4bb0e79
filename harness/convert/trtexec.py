"""The trtexec command that builds and times the same engine as the harness.

Same ONNX file, shapes (static, or the min/opt/max profile), workspace, builder optimisation
level, TF32 setting and timing cache; timing like the harness (warm-up 200 ms, at least 10
iterations and 3 s, percentiles 90/95/99, no CUDA graph, inputs already on the device). The flags
follow the TensorRT major version: 10.x needs ``--stronglyTyped``; 11.x is strongly typed
and uses a CUDA graph unless told ``--noCudaGraph``. (pip wheels ship no trtexec; it comes with
the TensorRT tarball or NVIDIA's containers.)
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
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


_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+)%\))\s*=\s*([\d.eE+-]+)\s*ms")


def parse_gpu_compute(output: str) -> dict[str, float] | None:
    """trtexec's "GPU Compute Time: min = .. ms, ..., percentile(99%) = .. ms" as
    ``{min_ms, max_ms, mean_ms, median_ms, p90_ms, p95_ms, p99_ms}`` (None when absent)."""
    line = next((ln for ln in output.splitlines() if "GPU Compute Time:" in ln), None)
    if line is None:
        return None
    stats: dict[str, float] = {}
    for name, percent, value in _STAT.findall(line.split("GPU Compute Time:", 1)[1]):
        stats[f"p{percent}_ms" if percent else f"{name}_ms"] = float(value)
    return stats or None


def timing_command(engine_path: Path, profile: Profile, trt_major: int, cuda_graph: bool = False) -> list[str]:
    """trtexec timing an already built engine with the harness's shapes and timing rules."""
    shapes = ",".join(f"{name}:{_dims(opt)}" for name, _, opt, _ in profile.shapes)
    args = ["trtexec", f"--loadEngine={engine_path}", f"--shapes={shapes}", "--warmUp=200", "--iterations=10",
            "--duration=3", "--percentile=90,95,99"]
    if trt_major >= 11 and not cuda_graph:
        args.append("--noCudaGraph")
    if trt_major < 11:
        args.append("--noDataTransfers")
        if cuda_graph:
            args.append("--useCudaGraph")
    return args


def run_trtexec(engine_path: Path, profile: Profile, trt_major: int, cuda_graph: bool = False,
                timeout_s: float = 180.0) -> dict[str, object] | None:
    """When ``trtexec`` is on PATH: its GPU compute time for the same engine (None otherwise)."""
    if shutil.which("trtexec") is None:
        return None
    command = timing_command(engine_path, profile, trt_major, cuda_graph)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"command": " ".join(command), "error": f"{type(exc).__name__}: {exc}"}
    stats = parse_gpu_compute(done.stdout)
    if done.returncode != 0 or stats is None:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        return {"command": " ".join(command), "error": f"exit {done.returncode}: {' | '.join(tail)}"}
    return {"command": " ".join(command), **stats}
