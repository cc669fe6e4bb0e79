"""Unit tests of harness/bench.py (every backend timed the same way, with parity against torch
strict FP32), of the clock checks it records (harness/report/machine.py) and of the plugin's
speed-up column (harness/plugin.py ``_add_speedups``). CPU only: the CUDA legs must skip with the
missing piece as the reason."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from harness.backends import registry
from harness.backends.onnxruntime_runner import OrtRunner
from harness.backends.torch_runner import TorchRunner
from harness.bench import (
    BASELINE,
    CPU_BACKENDS,
    CUDA_BACKENDS,
    BenchSpec,
    bench_one,
    default_backends,
    fastest,
    make_runner,
    run_benchmarks,
)
from harness.chain import Chain, ChainConfig
from harness.errors import BackendUnavailable, InvalidArgument
from harness.gates.limits import Tolerances
from harness.plugin import _add_speedups
from harness.report import machine
from harness.report.machine import clock_warnings, gpu_clocks
from harness.timing import TimingConfig

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
TINY = TimingConfig(warmup_ms=0.0, warmup_rounds=1, min_rounds=3, min_seconds=0.0)


@pytest.fixture(scope="module")
def cpu_chain(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "shared-onnx-cache"  # shared with other modules; temporary
    built = Chain(ChainConfig(cache_dir=cache, device="cpu"))
    yield built
    built.close()


@pytest.fixture(scope="module")
def tolerances() -> Tolerances:
    return Tolerances.load()


@pytest.fixture(scope="module")
def bench_rows(cpu_chain, tolerances):
    """One benchmark of the small case on the CPU: (rows, log lines)."""
    lines: list[str] = []
    rows = run_benchmarks(cpu_chain, ("small",), ("ort-cpu-raw", "ort-cpu-simplified", "ort-cuda-raw", "trt-fp16"),
                          TINY, tolerances, log=lines.append)
    return rows, lines


def _by_backend(rows: list[dict]) -> dict[str, dict]:
    return {r["backend"]: r for r in rows}


# -- specs and backend lists ------------------------------------------------------------------

@pytest.mark.parametrize(("backend", "precision"), [
    ("torch-fp32", "fp32"), ("torch-tf32", "tf32"), ("torch-fp16", "fp16"), ("torch-fast-fp16", "fp16"),
    ("ort-cuda-raw", "fp32"), ("ort-cuda-simplified", "fp32"), ("ort-cuda-fp16", "fp16"), ("ort-cpu-raw", "fp32"),
    ("ort-cuda-default", "tf32"), ("ort-cuda-fp16-default", "fp16"),
    ("trt-fp32", "fp32"), ("trt-tf32", "tf32"), ("trt-fp16", "fp16"),
])
def test_bench_spec_precision_follows_the_backend_suffix(backend, precision):
    assert BenchSpec(backend, "small").precision == precision


def test_bench_spec_defaults_to_the_precomputed_torchscript_graph():
    spec = BenchSpec("ort-cpu-raw", "seed")
    assert (spec.workaround, spec.exporter) == ("precomputed", "torchscript")


def test_default_backends_per_device():
    assert default_backends(torch.device("cpu")) == CPU_BACKENDS
    assert default_backends(torch.device("cuda")) == CUDA_BACKENDS
    assert default_backends(torch.device("cuda", 1)) == CUDA_BACKENDS
    assert CPU_BACKENDS[0] == CUDA_BACKENDS[0] == BASELINE == "torch-fp32"


# -- make_runner -------------------------------------------------------------------------------

def test_make_runner_torch_fp32_runs_the_original_three_input_call(cpu_chain):
    runner, feed = make_runner(cpu_chain, BenchSpec("torch-fp32", "small"))
    try:
        assert isinstance(runner, TorchRunner)
        assert set(feed) == {"imgs", "proj_matrices", "depth_values"}
        assert feed["imgs"].shape == (1, 3, 3, 128, 160)
        out = runner.prepare().infer(feed)
        assert out["depth"].shape == (1, 32, 40)
    finally:
        runner.close()


@pytest.mark.parametrize("graph", ["raw", "simplified"])
def test_make_runner_ort_cpu_runs_the_cached_graph(cpu_chain, graph):
    runner, feed = make_runner(cpu_chain, BenchSpec(f"ort-cpu-{graph}", "small"))
    try:
        assert isinstance(runner, OrtRunner)
        assert runner.name == f"ort-cpu-{graph}"
        assert "inverse_proj_matrices" in feed  # the precomputed workaround's feed
        assert cpu_chain.cache.root in runner.path.parents  # built into the chain's cache
        out = runner.prepare().infer(feed)
        reference = cpu_chain.reference_outputs("small")
        assert float((out["depth"] - reference["depth"]).abs().max()) < 0.1
    finally:
        runner.close()


@NO_CUDA
@pytest.mark.parametrize("backend", ["ort-cuda-raw", "ort-cuda-simplified", "ort-cuda-fp16", "ort-cuda-fp16-default"])
def test_make_runner_ort_cuda_is_unavailable_without_a_gpu(cpu_chain, backend):
    with pytest.raises(BackendUnavailable) as info:
        make_runner(cpu_chain, BenchSpec(backend, "small"))
    assert "no CUDA device" in info.value.missing
    assert info.value.backend == "ort-cuda"


def test_the_fp16_graph_is_timed_with_the_legs_options_and_as_onnx_runtime_ships(cpu_chain, monkeypatch):
    # ort-cuda-fp16 (the harness's stream) and ort-cuda-fp16-default (no provider option) on one graph
    made = []
    monkeypatch.setattr(registry, "require", lambda name: None)
    monkeypatch.setattr(registry, "make_runner", lambda name, path, **settings: made.append((name, path, settings)))
    monkeypatch.setattr(type(cpu_chain), "onnx", lambda self, *a: type("A", (), {"path": a})())
    for backend in ("ort-cuda-fp16", "ort-cuda-fp16-default"):
        make_runner(cpu_chain, BenchSpec(backend, "small"))
    (name1, graph1, settings1), (name2, graph2, settings2) = made
    assert name1 == name2 == "ort-cuda-fp16" and graph1 == graph2 and graph1[3:5] == ("simplified", "fp16")
    assert "cuda_options" not in settings1 and settings2["cuda_options"] == "default"
    assert "ort-cuda-fp16-default" in CUDA_BACKENDS


@NO_CUDA
@pytest.mark.parametrize("backend", ["torch-fast-fp16", "torch-tf32", "torch-fp16"])
def test_make_runner_cuda_torch_paths_are_unavailable_on_cpu(cpu_chain, backend):
    with pytest.raises(BackendUnavailable) as info:
        make_runner(cpu_chain, BenchSpec(backend, "small"))
    assert "CUDA device" in info.value.missing
    assert info.value.backend == backend


@NO_CUDA
@pytest.mark.parametrize("backend", ["trt-fp32", "trt-tf32", "trt-fp16"])
def test_make_runner_trt_is_unavailable_naming_what_is_missing(cpu_chain, backend):
    with pytest.raises(BackendUnavailable) as info:
        make_runner(cpu_chain, BenchSpec(backend, "small"))
    assert "tensorrt not importable" in info.value.missing or "no CUDA device" in info.value.missing


@pytest.mark.parametrize("backend", ["tvm-fp32", "torch-int8", "trt-int8", "ort-cpu-bogus", "ort-tpu-raw"])
def test_make_runner_refuses_an_unknown_backend(cpu_chain, backend):
    with pytest.raises(InvalidArgument) as info:
        make_runner(cpu_chain, BenchSpec(backend, "small"))
    message = str(info.value)
    assert backend in message
    assert "torch-fp32" in message and "ort-cpu-raw" in message  # names the accepted backends


# -- run_benchmarks ----------------------------------------------------------------------------

def test_run_benchmarks_runs_the_baseline_first_then_the_requested_backends(bench_rows):
    rows, _ = bench_rows
    assert [r["backend"] for r in rows] == ["torch-fp32", "ort-cpu-raw", "ort-cpu-simplified", "ort-cuda-raw",
                                            "trt-fp16"]
    assert all(r["case"] == "small" for r in rows)


@pytest.mark.parametrize("backend", ["torch-fp32", "ort-cpu-raw", "ort-cpu-simplified"])
def test_run_benchmarks_times_each_cpu_backend_with_parity(bench_rows, backend):
    row = _by_backend(bench_rows[0])[backend]
    assert "error" not in row and "skipped" not in row
    assert row["clock"] == "perf_counter"
    assert row["rounds"] == 3
    assert 0 < row["min_ms"] <= row["median_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["e2e_median_ms"] > 0
    assert row["parity_passed"] is True
    assert row["depth_max_abs_mm"] < 0.1
    assert row["precision"] == "fp32" and row["device"] == "cpu" and row["gpu"] is None
    assert row["speedup_vs_torch_fp32"] == pytest.approx(_by_backend(bench_rows[0])["torch-fp32"]["median_ms"]
                                                         / row["median_ms"])
    assert row["clocks"] == {"before": {}, "after": {}}
    assert isinstance(row["warnings"], list)
    assert row["runner"]["name"] == backend
    assert row["cuda_graph"] is False
    assert row["_outputs"]["depth"].shape == (1, 32, 40)


def test_run_benchmarks_baseline_speedup_is_one(bench_rows):
    base = _by_backend(bench_rows[0])["torch-fp32"]
    assert base["speedup_vs_torch_fp32"] == 1.0
    assert base["depth_max_abs_mm"] == 0.0


@NO_CUDA
def test_run_benchmarks_skipped_rows_carry_the_reason(bench_rows):
    rows, lines = bench_rows
    ort = _by_backend(rows)["ort-cuda-raw"]
    assert ort["skipped"] == "ort-cuda: no CUDA device"
    trt = _by_backend(rows)["trt-fp16"]
    assert trt["skipped"].startswith("trt: ")
    for row in (ort, trt):
        assert "median_ms" not in row and "speedup_vs_torch_fp32" not in row
        assert row["precision"] in ("fp32", "fp16")
    assert any("ort-cuda-raw" in line and "skipped: ort-cuda: no CUDA device" in line for line in lines)


def test_run_benchmarks_logs_one_line_per_backend(bench_rows):
    rows, lines = bench_rows
    assert lines[0].startswith("case small (3x128x160xD48) on cpu")
    timed = [line for line in lines if " median " in line]
    assert len(timed) == 3 and all("parity ok" in line for line in timed)


def test_run_benchmarks_repeat_reports_the_spread_of_the_medians(cpu_chain, tolerances):
    (row,) = run_benchmarks(cpu_chain, ("small",), ("torch-fp32",), TINY, tolerances, log=lambda _: None, repeat=2)
    medians = row["repeat_medians_ms"]
    assert len(medians) == 2
    assert row["median_ms"] in medians
    assert row["repeat_spread"] == pytest.approx((max(medians) - min(medians)) / row["median_ms"])
    assert row["repeat_spread"] >= 0


def test_run_benchmarks_without_repeat_has_no_spread(bench_rows):
    assert all("repeat_spread" not in r and "repeat_medians_ms" not in r for r in bench_rows[0])


def test_bench_one_records_a_harness_error_as_an_error_row(cpu_chain):
    no_tables = Tolerances({}, "empty.toml")  # no tolerance for torch-vs-torch: a ConfigError
    reference = cpu_chain.reference_outputs("small")
    row = bench_one(cpu_chain, BenchSpec("torch-fp32", "small"), TINY, no_tables, reference, log=lambda _: None)
    assert "no gates for this machine class" in row["error"]
    assert "median_ms" not in row


def test_bench_one_without_a_reference_times_without_parity(cpu_chain, tolerances):
    row = bench_one(cpu_chain, BenchSpec("torch-fp32", "small"), TINY, tolerances, None, log=lambda _: None)
    assert row["median_ms"] > 0
    assert "parity_passed" not in row and "depth_max_abs_mm" not in row


# -- fastest -----------------------------------------------------------------------------------

def _row(backend: str, median: float, case: str = "seed", **extra) -> dict:
    return {"case": case, "backend": backend, "median_ms": median, **extra}


def test_fastest_picks_the_lowest_median_of_the_case():
    rows = [_row("torch-fp32", 60.0, parity_passed=True), _row("ort-cuda-raw", 20.0, parity_passed=True),
            _row("trt-fp16", 5.0, case="dtu", parity_passed=True)]
    assert fastest(rows, "seed")["backend"] == "ort-cuda-raw"


def test_fastest_ignores_rows_whose_parity_failed():
    rows = [_row("torch-fp32", 60.0, parity_passed=True), _row("trt-fp16", 5.0, parity_passed=False),
            _row("ort-cuda-raw", 20.0, parity_passed=True)]
    assert fastest(rows, "seed")["backend"] == "ort-cuda-raw"


def test_fastest_ignores_skipped_rows_and_counts_rows_without_parity_as_passed():
    rows = [{"case": "seed", "backend": "trt-fp16", "skipped": "no TensorRT"}, _row("torch-fp32", 60.0)]
    assert fastest(rows, "seed")["backend"] == "torch-fp32"


def test_fastest_is_none_without_a_passing_timed_row():
    assert fastest([_row("trt-fp16", 5.0, parity_passed=False)], "seed") is None
    assert fastest([], "seed") is None
    assert fastest([_row("torch-fp32", 1.0)], "dtu") is None


# -- plugin speed-ups ----------------------------------------------------------------------------

def test_add_speedups_is_relative_to_torch_fp32_of_the_same_case_and_device():
    rows = [
        {"case": "small", "device": "cuda", "backend": "torch-fp32", "median_ms": 40.0},
        {"case": "small", "device": "cuda", "backend": "trt-fp16", "median_ms": 5.0},
        {"case": "seed", "device": "cuda", "backend": "torch-fp32", "median_ms": 300.0},
        {"case": "seed", "device": "cuda", "backend": "trt-fp16", "median_ms": 30.0},
        {"case": "small", "device": "cpu", "backend": "torch-fp32", "median_ms": 400.0},
        {"case": "small", "device": "cpu", "backend": "ort-cpu-raw", "median_ms": 200.0},
    ]
    _add_speedups(rows)
    assert [r["speedup_vs_torch_fp32"] for r in rows] == [1.0, 8.0, 1.0, 10.0, 1.0, 2.0]


def test_add_speedups_leaves_rows_without_a_baseline_or_a_median_alone():
    rows = [
        {"case": "small", "device": "cuda", "backend": "trt-fp16", "median_ms": 5.0},  # no cuda baseline
        {"case": "small", "device": "cpu", "backend": "torch-fp32", "median_ms": 400.0},
        {"case": "small", "device": "cpu", "backend": "ort-cuda-raw", "skipped": "no CUDA device"},
        {"case": "dtu", "device": "cpu", "backend": "ort-cpu-raw", "median_ms": 100.0},  # no dtu baseline
    ]
    _add_speedups(rows)
    assert "speedup_vs_torch_fp32" not in rows[0]
    assert rows[1]["speedup_vs_torch_fp32"] == 1.0
    assert "speedup_vs_torch_fp32" not in rows[2]
    assert "speedup_vs_torch_fp32" not in rows[3]


# -- clocks ------------------------------------------------------------------------------------

def test_clock_warnings_are_empty_for_locked_unthrottled_clocks():
    clocks = {"sm_mhz": 1980, "sm_max_mhz": 1980, "throttle_mask": 0}
    assert clock_warnings(clocks, clocks) == []


def test_clock_warnings_are_empty_without_clock_readings():
    assert clock_warnings({}, {}) == []
    assert clock_warnings({"sm_mhz": "[N/A]"}, {"sm_mhz": "[N/A]", "sm_max_mhz": "[N/A]"}) == []


def test_clock_warnings_flag_a_clock_that_moved():
    warnings = clock_warnings({"sm_mhz": 1980, "sm_max_mhz": 1980}, {"sm_mhz": 1755, "sm_max_mhz": 1980})
    assert any("moved 1980 -> 1755 MHz" in w for w in warnings)


def test_clock_warnings_flag_a_clock_below_90_percent_of_its_maximum():
    clocks = {"sm_mhz": "1400", "sm_max_mhz": "1980", "throttle_mask": "0x0"}
    (warning,) = clock_warnings(clocks, clocks)
    assert "below 90%" in warning and "1400" in warning


def test_clock_warnings_name_the_throttle_reasons():
    before = {"sm_mhz": 1980, "sm_max_mhz": 1980}
    after = {**before, "throttle_mask": "0x0000000000000044"}  # power cap + hardware thermal
    (warning,) = clock_warnings(before, after)
    assert warning.startswith("clock throttled")
    assert "power cap" in warning and "thermal (hardware)" in warning
    assert clock_warnings(before, {**before, "throttle_mask": 0x1}) == []  # GPU idle is no throttle


def test_gpu_clocks_read_nvidia_smi_when_nvml_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    monkeypatch.setattr(machine, "run_command", lambda cmd, cwd=None: "1980, 1980, 2619, 41, 0x0000000000000000")
    clocks = gpu_clocks(0)
    assert clocks == {"sm_mhz": "1980", "sm_max_mhz": "1980", "mem_mhz": "2619", "temperature_c": "41",
                      "throttle_mask": "0x0000000000000000", "source": "nvidia-smi"}
    assert clock_warnings(clocks, clocks) == []


def test_gpu_clocks_are_empty_without_nvml_or_nvidia_smi(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(machine, "run_command", lambda cmd, cwd=None: None)
    assert gpu_clocks(0) == {}


class _EngineRecorder:
    """A chain stand-in that records the engines asked for (no build)."""

    def __init__(self, trt_dynamic: bool) -> None:
        from types import SimpleNamespace

        self.config = SimpleNamespace(trt_dynamic=trt_dynamic)
        self.asked: list[tuple] = []

    def engine(self, *args):
        self.asked.append(args)
        return args


@pytest.mark.parametrize(("case_name", "trt_dynamic", "dynamic"), [
    ("seed", False, False), ("dtu", False, True), ("seed", True, True), ("small", True, True),
])
def test_the_benchmark_and_trtexec_time_the_same_engine(case_name, trt_dynamic, dynamic):
    """One function picks the engine (suites/test_benchmark.py used to ask for the static one while
    the bench timed a dynamic one for dtu or --harness-trt-dynamic)."""
    from harness.bench import is_dynamic, spec_engine

    chain = _EngineRecorder(trt_dynamic)
    spec = BenchSpec("trt-fp16", case_name)
    assert is_dynamic(chain, spec) is dynamic  # type: ignore[arg-type]
    assert spec_engine(chain, spec) == (case_name, "precomputed", "torchscript", "simplified", "fp16", dynamic)  # type: ignore[arg-type]
    suite = (Path(__file__).resolve().parents[1] / "suites" / "test_benchmark.py").read_text()
    assert "spec_engine(chain, spec)" in suite and "chain.engine(" not in suite


def test_bench_one_skips_a_backend_that_finds_out_at_its_first_call(cpu_chain, tolerances, monkeypatch):
    """torch-aoti learns that its package cannot be loaded here only when the first call builds it
    (H200, torch 2.11+cu130: the loader segfaults): a skipped row with the reason, not a crash."""
    def refuse(self, feed):
        raise BackendUnavailable("torch-aoti", "loading the package crashed the process (SIGSEGV)", fix="use another torch")

    monkeypatch.setattr(TorchRunner, "_infer", refuse)
    row = bench_one(cpu_chain, BenchSpec("torch-fp32", "small"), TINY, tolerances, None, log=lambda _: None)
    assert row["skipped"] == "torch-aoti: loading the package crashed the process (SIGSEGV)"
    assert "median_ms" not in row and "error" not in row


def test_the_bench_times_the_fast_path_with_its_bench_settings(cpu_chain, monkeypatch):
    """torch-fast-fp16 is timed at its best compile (max-autotune-no-cudagraphs) while run and
    pytest compile it in the default mode; the gate's runner settings stay untouched."""
    from harness import bench
    from harness.backends import registry

    made = {}
    monkeypatch.setattr(registry, "make_runner", lambda name, artifact, **settings: made.update(settings) or "runner")
    runner, _ = bench.make_runner(cpu_chain, BenchSpec("torch-fast-fp16", "small"))
    assert runner == "runner" and made["compile_mode"] == "max-autotune-no-cudagraphs"
    assert "compile_mode" not in registry.get("torch-fast-fp16").settings  # run and pytest: the default mode
