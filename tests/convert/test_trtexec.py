"""The trtexec equivalent of the harness's build and timing, and reading trtexec's figures back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness.convert import trtexec
from harness.convert.engine import BuildSettings, Profile
from harness.data.cases import get_case

NAMES = ("imgs", "proj_matrices", "inverse_proj_matrices", "depth_values")
TRT10_SUMMARY = """[I] === Performance summary ===
[I] Throughput: 243.1 qps
[I] Latency: min = 4.1 ms, max = 4.6 ms, mean = 4.2 ms, median = 4.2 ms, percentile(90%) = 4.3 ms, percentile(95%) = 4.4 ms, percentile(99%) = 4.5 ms
[I] GPU Compute Time: min = 2.89282 ms, max = 2.92041 ms, mean = 2.9013 ms, median = 2.90137 ms, percentile(90%) = 2.90405 ms, percentile(95%) = 2.90479 ms, percentile(99%) = 2.90625 ms
[I] D2H Latency: min = 0 ms, max = 0 ms, mean = 0 ms, median = 0 ms, percentile(99%) = 0 ms
"""


def _static() -> Profile:
    case = get_case("seed")
    return Profile.static({n: case.input_shapes(True)[n] for n in NAMES})


def test_parse_gpu_compute_reads_every_statistic_of_the_gpu_line_only():
    stats = trtexec.parse_gpu_compute(TRT10_SUMMARY)
    assert stats == {"min_ms": 2.89282, "max_ms": 2.92041, "mean_ms": 2.9013, "median_ms": 2.90137,
                     "p90_ms": 2.90405, "p95_ms": 2.90479, "p99_ms": 2.90625}


def test_parse_gpu_compute_without_the_line_is_none():
    assert trtexec.parse_gpu_compute("[I] Throughput: 1 qps\n") is None


def test_build_command_matches_the_harness_settings_per_major_version():
    ten = trtexec.trtexec_command(Path("m.onnx"), BuildSettings("fp32"), _static(), 10, Path("m.engine"), Path("t.cache"))
    assert "--noTF32" in ten and "--stronglyTyped" in ten and "--noDataTransfers" in ten
    assert "--memPoolSize=workspace:4096M" in ten and "--builderOptimizationLevel=3" in ten
    assert "--shapes=imgs:1x3x3x512x640" in ten and "--timingCacheFile=t.cache" in ten
    eleven = trtexec.trtexec_command(Path("m.onnx"), BuildSettings("tf32"), _static(), 11)
    assert "--noTF32" not in eleven and "--stronglyTyped" not in eleven and "--noCudaGraph" in eleven
    graphed = trtexec.trtexec_command(Path("m.onnx"), BuildSettings("fp16"), _static(), 11, cuda_graph=True)
    assert "--noCudaGraph" not in graphed


def test_dynamic_profile_gives_min_opt_max_shapes():
    case = get_case("seed")
    profile = Profile.around(case, NAMES, get_case("small"), case)
    command = trtexec.trtexec_command(Path("m.onnx"), BuildSettings("fp16"), profile, 10)
    assert "--minShapes=imgs:1x3x3x128x160" in command and "--optShapes=imgs:1x3x3x512x640" in command
    assert "--maxShapes=" in command and "--shapes=" not in command


def test_run_trtexec_is_none_without_trtexec_on_path(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert trtexec.run_trtexec(Path("m.engine"), _static(), 10) is None


def test_run_trtexec_times_the_same_engine_and_reads_its_gpu_compute(monkeypatch):
    seen = {}

    def fake_run(command, **kwargs):
        seen["command"] = command
        return subprocess.CompletedProcess(command, 0, TRT10_SUMMARY, "")

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/trtexec")
    monkeypatch.setattr(subprocess, "run", fake_run)
    result = trtexec.run_trtexec(Path("/c/model.engine"), _static(), 10)
    assert result is not None and result["median_ms"] == 2.90137 and result["p99_ms"] == 2.90625
    assert "--loadEngine=/c/model.engine" in seen["command"] and "--noDataTransfers" in seen["command"]


def test_run_trtexec_reports_a_failure_with_its_output(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/trtexec")
    monkeypatch.setattr(subprocess, "run", lambda command, **k: subprocess.CompletedProcess(command, 1, "", "bad engine"))
    result = trtexec.run_trtexec(Path("m.engine"), _static(), 11)
    assert result is not None and result["error"].startswith("exit 1") and "bad engine" in result["error"]
