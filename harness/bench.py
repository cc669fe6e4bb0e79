"""Benchmarks: every backend on a case, timed the same way, with its parity against torch strict
FP32 measured on the same inputs. Rows go into the run record; ``report/`` renders them.

Backends (CUDA): torch eager strict FP32 (the baseline every speed-up is relative to), TF32,
autocast FP16, the fast torch path (folded batch norm, FP16, channels-last, torch.compile, CUDA
graph), ONNX Runtime's CUDA EP on the raw, simplified and FP16 graphs, and TensorRT when an
engine can run here. On the CPU: torch FP32 and ONNX Runtime's CPU EP.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harness.backends import registry
from harness.backends.base import Runner
from harness.backends.onnxruntime_runner import ort_backend
from harness.chain import Chain
from harness.compare import compare
from harness.data.cases import get_case
from harness.errors import BackendUnavailable, HarnessError, InvalidArgument
from harness.gates.limits import Tolerances
from harness.model.mvsnet import OUTPUT_NAMES
from harness.report.machine import clock_warnings, gpu_clocks
from harness.timing import TimingConfig, measure, measure_host_round_trip

if TYPE_CHECKING:
    from harness.convert.engine import EngineArtifact

#: Every backend that consumes the torch model is timed as declared in the registry (a new one,
#: e.g. ``torch-aoti``, is timed without an edit here); ONNX Runtime is timed per graph.
MODEL_BACKENDS = registry.names(consumes="model")
CUDA_BACKENDS = (*MODEL_BACKENDS, "ort-cuda-raw", "ort-cuda-simplified", "ort-cuda-default", "ort-cuda-fp16",
                 "ort-cuda-fp16-default", "trt-fp32", "trt-tf32", "trt-fp16")
CPU_BACKENDS = (*(name for name in MODEL_BACKENDS if registry.get(name).device == "cpu"),
                "ort-cpu-raw", "ort-cpu-simplified")
#: The registry's ONNX Runtime candidates that bench times per graph (raw and simplified apart).
PER_GRAPH = {"ort-cpu": ("ort-cpu-raw", "ort-cpu-simplified"), "ort-cuda": ("ort-cuda-raw", "ort-cuda-simplified")}
#: What bench_one times: the defaults of both devices and ONNX Runtime CPU on the FP16 graph.
TIMED = tuple(dict.fromkeys((*CUDA_BACKENDS, *CPU_BACKENDS, "ort-cpu-fp16")))
#: What ``bench --backends`` takes: every registry name (the vocabulary of run, check, doctor and
#: pytest) and the per-graph names.
KNOWN_BACKENDS = tuple(dict.fromkeys((*registry.names(), *TIMED)))
BASELINE = "torch-fp32"


def timed_backends(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` with each per-graph registry name replaced by its graphs (``ort-cpu`` -> ``ort-cpu-raw``,
    ``ort-cpu-simplified``)."""
    return tuple(dict.fromkeys(timed for name in names for timed in PER_GRAPH.get(name, (name,))))
#: Timed for comparison, parity reported but not asserted by the benchmark suite: autocast runs
#: the sampling-grid projection in FP16 (H100/H200: depth p99 3.6 mm at the seed shape, NaN at
#: the DTU shape), so it is not a deployable configuration of this model.
DIAGNOSTIC = frozenset({"torch-fp16"})
SEED_PIXELS = 512 * 640  # graphs for larger cases are exported with dynamic shapes from a small example


@dataclass(frozen=True)
class BenchSpec:
    backend: str
    case: str
    workaround: str = "precomputed"
    exporter: str = "torchscript"

    @property
    def precision(self) -> str:
        if self.backend in MODEL_BACKENDS:
            return registry.get(self.backend).precision
        if self.backend.endswith("fp16") or "-fp16-" in self.backend:
            return "fp16"
        # ort-cuda-default: ONNX Runtime as shipped allows TF32
        return "tf32" if self.backend.endswith(("tf32", "-default")) else "fp32"


def default_backends(device: torch.device) -> tuple[str, ...]:
    return CUDA_BACKENDS if device.type == "cuda" else CPU_BACKENDS


def is_dynamic(chain: Chain, spec: BenchSpec) -> bool:
    """Whether the spec's graph and engine use a dynamic-shape profile: always above the seed
    shape (tracing a DTU-sized forward on the CPU costs minutes), and when the chain asks
    (--harness-trt-dynamic / --trt-dynamic). One place decides, so the engine timed by the
    harness and the one handed to trtexec are the same."""
    case = get_case(spec.case)
    return chain.config.trt_dynamic or case.height * case.width > SEED_PIXELS


def spec_engine(chain: Chain, spec: BenchSpec) -> EngineArtifact:
    """The engine a TensorRT benchmark spec times (simplified graph)."""
    return chain.engine(spec.case, spec.workaround, spec.exporter, "simplified", spec.backend.split("-", 1)[1],
                        is_dynamic(chain, spec))


def make_runner(chain: Chain, spec: BenchSpec) -> tuple[Runner, dict[str, torch.Tensor]]:
    """A fresh runner (closed by the caller) and the feed it takes, on the chain's device; made by
    the registry's factory. Bench names map onto registry backends: ``ort-<target>-<graph>`` is the
    ONNX Runtime backend on the raw, simplified or FP16 (simplified) graph, ``ort-cuda-default``
    ONNX Runtime as shipped on the simplified graph, ``ort-cuda-fp16-default`` ONNX Runtime as
    shipped on the FP16 graph: the reference the ``ort-cuda-fp16`` leg's options are timed against
    in the same run (the harness's stream must not cost ORT's own speed)."""
    if spec.backend not in TIMED:
        raise InvalidArgument("benchmark backend", "unknown backend", observed=spec.backend,
                              expected=f"one of {', '.join(TIMED)}")
    device = chain.device
    dynamic = is_dynamic(chain, spec)
    family, _, rest = spec.backend.partition("-")
    if spec.backend in MODEL_BACKENDS:
        return registry.make_runner(spec.backend, chain.model, device=device, validate_values=False,
                                    **chain.model_context(spec.backend), **registry.get(spec.backend).bench_settings), \
            chain.reference_feed(spec.case)
    feed = chain.workaround_feed(spec.case, spec.workaround)
    if family == "ort":
        target, _, graph = rest.partition("-")
        registry.require(ort_backend(target))  # what is missing is the runtime on that device
        precision = "fp16" if graph.startswith("fp16") else "fp32"
        name = ort_backend(target, precision, "default" if graph == "default" else "strict")
        variant = "simplified" if graph in ("simplified", "fp16", "fp16-default", "default") else "raw"
        artifact = chain.onnx(spec.case, spec.workaround, spec.exporter, variant, precision, dynamic)
        as_shipped = {"cuda_options": "default"} if graph == "fp16-default" else {}
        return registry.make_runner(name, artifact.path, label=graph, validate_values=False, tuned=True,
                                    **as_shipped), feed
    if family == "trt" and rest in ("fp32", "tf32", "fp16"):
        engine = spec_engine(chain, spec)
        return registry.make_runner(spec.backend, engine.path, validate_values=False,
                                    **chain.trt_settings(engine)), feed
    raise AssertionError(f"unhandled benchmark backend {spec.backend}")  # the table above lists only handled ones


def trtexec_major() -> int:
    """The trtexec flag set to use: TensorRT-RTX engines get full TensorRT 11's (strongly typed)."""
    from harness.backends import trt_api

    info = trt_api.bound()
    return 11 if info.is_rtx else info.major


def engine_info(chain: Chain, spec: BenchSpec) -> dict[str, Any]:
    """Build facts of a TensorRT leg's engine and the equivalent trtexec command."""
    from harness.convert.trtexec import trtexec_command

    dynamic = is_dynamic(chain, spec)
    precision = spec.backend.split("-", 1)[1]
    engine = spec_engine(chain, spec)
    onnx = chain.onnx(spec.case, spec.workaround, spec.exporter, "simplified",
                      "fp16" if precision == "fp16" else "fp32", dynamic)
    timing_cache = engine.meta.get("timing_cache")
    return {
        "engine": {"trt": engine.meta.get("trt"), "mib": engine.meta.get("engine_mib"),
                   "build_seconds": engine.meta.get("build_seconds"), "cache": engine.cache_status,
                   "layers": engine.meta.get("network_layers"), "inspector": engine.meta.get("inspector")},
        # TensorRT-RTX engines: the command full TensorRT 11 would run (strongly typed, like RTX)
        "trtexec": trtexec_command(onnx.path, engine.settings, engine.profile, trtexec_major(), engine.path,
                                   None if timing_cache is None else Path(str(timing_cache)),
                                   cuda_graph=chain.config.trt_cuda_graph),
    }


def _on(device: torch.device, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(device).contiguous() for k, v in feed.items()}


def _skipped(row: dict[str, Any], exc: BackendUnavailable, log: Callable[[str], None]) -> dict[str, Any]:
    row["skipped"] = f"{exc.backend}: {exc.missing}"
    log(f"  {row['backend']:<22} skipped: {row['skipped']}")
    return row


def bench_one(chain: Chain, spec: BenchSpec, timing: TimingConfig, tolerances: Tolerances,
              reference: dict[str, torch.Tensor] | None, log: Callable[[str], None] = print,
              repeat: int = 1) -> dict[str, Any]:
    """Time one backend on one case; returns the record row (``skipped`` with a reason if it
    cannot run here)."""
    device = chain.device
    row: dict[str, Any] = {"case": spec.case, "backend": spec.backend, "precision": spec.precision,
                           "workaround": spec.workaround, "exporter": spec.exporter, "device": str(device),
                           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    started = time.perf_counter()
    runner: Runner | None = None
    try:
        runner, host_feed = make_runner(chain, spec)
        if spec.backend.startswith("trt-"):
            row.update(engine_info(chain, spec))  # the build happened; record it even if it cannot run
        runner.prepare()
    except BackendUnavailable as exc:
        if runner is not None:
            runner.close()
        return _skipped(row, exc, log)
    try:
        feed = _on(device, host_feed)
        try:
            outputs = runner.infer(feed)  # first call: compiles, captures graphs, picks algorithms
        except BackendUnavailable as exc:  # found only now (e.g. a package its loader cannot load)
            return _skipped(row, exc, log)  # the runner is closed below
        row["prepare_s"] = round(time.perf_counter() - started, 2)
        if reference is not None:
            gates = tolerances.lookup(BASELINE, runner.name, spec.precision, OUTPUT_NAMES,
                                      machine=chain.machine_class(spec.backend))
            diffs = compare(reference, outputs, gates, depth_values=feed["depth_values"])
            row["parity_passed"] = all(diffs.values())
            depth, conf = diffs["depth"].metrics, diffs["photometric_confidence"].metrics
            row["depth_max_abs_mm"] = depth["max_abs"]
            row["depth_max_sq_err"] = depth["max_sq_err"]
            row["depth_p99_abs_mm"] = depth["p99_abs"]
            row["depth_frac_over_1mm"] = depth["frac_over_1mm"]
            row["depth_nan"] = depth["nan"]
            row["conf_max_sq_err"] = conf["max_sq_err"]
            row["parity_failures"] = {f"{name}.{metric}": observed for name, d in diffs.items()
                                      for metric, (observed, _) in d.failures.items()}
        before = gpu_clocks(device.index or 0) if device.type == "cuda" else {}
        runs = [measure(lambda: runner.infer(feed), device, timing) for _ in range(max(1, repeat))]
        after = gpu_clocks(device.index or 0) if device.type == "cuda" else {}
        stats = sorted(runs, key=lambda r: r.median_ms)[len(runs) // 2]  # the run with the median median
        if len(runs) > 1:
            medians = [r.median_ms for r in runs]
            row["repeat_medians_ms"] = medians
            row["repeat_spread"] = (max(medians) - min(medians)) / stats.median_ms
        e2e = measure_host_round_trip(runner.infer, host_feed, device,
                                      TimingConfig(timing.warmup_ms, timing.warmup_rounds, 5, 0.2))
        row.update(stats.summary())
        row["e2e_median_ms"] = e2e.median_ms
        row["cuda_graph"] = bool(getattr(runner, "cuda_graph", False))
        row["clocks"] = {"before": before, "after": after}
        row["warnings"] = stats.warnings(timing) + clock_warnings(before, after)
        row["runner"] = runner.describe()
        if spec.backend.startswith("trt-"):  # trtexec's figure for the same engine, beside ours
            from harness.convert.trtexec import run_trtexec

            engine = spec_engine(chain, spec)
            row["trtexec_gpu_compute"] = run_trtexec(engine.path, engine.profile, trtexec_major(),
                                                     chain.config.trt_cuda_graph)
        row["_outputs"] = outputs  # kept in memory for heat maps; never serialised
        spread = f"  spread {row['repeat_spread']:5.1%}" if "repeat_spread" in row else ""
        log(f"  {spec.backend:<22} median {stats.median_ms:8.2f} ms  p99 {stats.p99_ms:8.2f}  "
            f"CoV {stats.cov:5.1%}{spread}  parity {'ok' if row.get('parity_passed', True) else 'FAIL'}")
    except HarnessError as exc:
        row["error"] = str(exc)
        log(f"  {spec.backend:<22} error: {exc}")
    finally:
        if runner is not None:
            runner.close()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def run_benchmarks(chain: Chain, cases: tuple[str, ...], backends: tuple[str, ...], timing: TimingConfig,
                   tolerances: Tolerances, workaround: str = "precomputed", exporter: str = "torchscript",
                   log: Callable[[str], None] = print, repeat: int = 1,
                   rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every backend on every case; the baseline (torch strict FP32) always runs first. Rows are
    appended to ``rows`` (a new list when None) as each backend finishes, so a caller interrupted
    mid-way keeps the finished ones."""
    ordered = (BASELINE, *[b for b in backends if b != BASELINE])
    rows = [] if rows is None else rows
    for case in cases:
        log(f"case {case} ({get_case(case).shape_id}) on {chain.device}")
        reference = chain.torch_runner("fp32").infer(chain.reference_feed(case))
        for backend in ordered:
            rows.append(bench_one(chain, BenchSpec(backend, case, workaround, exporter), timing, tolerances,
                                  reference, log, repeat))
        base = next((r for r in rows if r["case"] == case and r["backend"] == BASELINE and "median_ms" in r), None)
        for row in rows:
            if row["case"] == case and "median_ms" in row and base is not None:
                row["speedup_vs_torch_fp32"] = base["median_ms"] / row["median_ms"]
    return rows


def fastest(rows: list[dict[str, Any]], case: str) -> dict[str, Any] | None:
    """The fastest backend on ``case`` whose parity passed."""
    timed = [r for r in rows if r["case"] == case and "median_ms" in r and r.get("parity_passed", True)]
    return min(timed, key=lambda r: r["median_ms"]) if timed else None
