"""Benchmarks on pytest-benchmark: every backend, GPU-synchronised, with CUDA-event statistics
in ``extra_info`` (min, median, mean, std, p90/p95/p99, CoV, clocks) and parity against torch
strict FP32 on the same inputs. ``--benchmark-json``, ``--benchmark-compare`` and
``--benchmark-compare-fail=median:5%`` work as usual. Speed targets live in the reports
(``python -m harness bench``), never in assertions here.
"""

from __future__ import annotations

import json

import pytest
import torch

from harness.bench import BASELINE, CPU_BACKENDS, CUDA_BACKENDS, DIAGNOSTIC, BenchSpec, make_runner
from harness.compare import compare
from harness.errors import BackendUnavailable
from harness.gpus import ROW_FIELD, physical_gpu
from harness.model.mvsnet import OUTPUT_NAMES
from harness.report.machine import clock_warnings, gpu_clocks
from harness.timing import PROFILES, TimingStats

pytestmark = pytest.mark.benchmark
BACKENDS = tuple(dict.fromkeys(CPU_BACKENDS + CUDA_BACKENDS))


@pytest.fixture(scope="session")
def bench_reference(chain):
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def get(case: str) -> dict[str, torch.Tensor]:
        if case not in cache:
            cache[case] = chain.torch_runner("fp32").infer(chain.reference_feed(case))
        return cache[case]

    return get


@pytest.mark.parametrize("backend", BACKENDS)
def test_benchmark(benchmark, request, chain, case, backend, tolerances, harness_options, bench_reference,
                   record_property):
    if hasattr(request.config, "workerinput") and physical_gpu() is None:
        pytest.skip("benchmarks never run under pytest-xdist unless each worker owns a GPU (--harness-gpus): "
                    "parallel workers disturb each other's timings")
    device = chain.device
    if backend not in (CUDA_BACKENDS if device.type == "cuda" else CPU_BACKENDS):
        pytest.skip(f"{backend}: not a benchmark on {device.type} (no CUDA device)" if device.type == "cpu"
                    else f"{backend}: CPU-only benchmark")
    spec = BenchSpec(backend, case.name)
    try:
        runner, host_feed = make_runner(chain, spec)
        runner.prepare()
    except BackendUnavailable as exc:
        pytest.skip(f"{exc.backend}: {exc.missing}")
    feed = {k: v.to(device).contiguous() for k, v in host_feed.items()}
    try:
        try:
            outputs = runner.infer(feed)  # the first call compiles and loads: some backends find out here
        except BackendUnavailable as exc:
            pytest.skip(f"{exc.backend}: {exc.missing}")  # the runner is closed below
        gates = tolerances.lookup(BASELINE, runner.name, spec.precision, OUTPUT_NAMES,
                                  machine=chain.machine_class(spec.backend))
        diffs = compare(bench_reference(case.name), outputs, gates, depth_values=feed["depth_values"])
        samples: list[float] = []

        def target() -> None:
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                runner.infer(feed)
                end.record()
                end.synchronize()  # GPU-synchronised: pytest-benchmark's host clock sees the whole run
                samples.append(start.elapsed_time(end))
            else:
                runner.infer(feed)

        timing = PROFILES[harness_options.profile]
        before = gpu_clocks(device.index or 0) if device.type == "cuda" else {}
        benchmark.pedantic(target, rounds=timing.min_rounds, warmup_rounds=timing.warmup_rounds, iterations=1)
        after = gpu_clocks(device.index or 0) if device.type == "cuda" else {}
        if device.type == "cuda":
            stats = TimingStats.from_samples(samples[timing.warmup_rounds:] or samples, "cuda-events")
        else:
            stats = TimingStats.from_samples([t * 1000.0 for t in benchmark.stats.stats.data], "perf_counter")
        row = {"case": case.name, "backend": backend, "precision": spec.precision, "device": str(device),
               ROW_FIELD: physical_gpu(),
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               **stats.summary(), "parity_passed": all(diffs.values()),
               "depth_max_abs_mm": diffs["depth"].metrics["max_abs"],
               "warnings": stats.warnings(timing) + clock_warnings(before, after), "clocks": {"before": before, "after": after}}
        if backend.startswith("trt-"):  # trtexec on PATH: its GPU compute time for the same engine
            from harness.bench import engine_info, spec_engine, trtexec_major
            from harness.convert.trtexec import run_trtexec

            row.update(engine_info(chain, spec))
            engine = spec_engine(chain, spec)  # the engine the harness timed, dynamic or not
            row["trtexec_gpu_compute"] = run_trtexec(engine.path, engine.profile, trtexec_major(),
                                                     chain.config.trt_cuda_graph)
        benchmark.extra_info.update({k: v for k, v in row.items() if k != "clocks"})
        record_property("harness_timing", json.dumps(row, default=str))
    finally:
        runner.close()
    if backend not in DIAGNOSTIC:  # diagnostic backends are timed; their parity is reported only
        assert all(diffs.values()), "\n".join(d.row() for d in diffs.values())
