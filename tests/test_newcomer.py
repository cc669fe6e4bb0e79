"""What a newcomer hits (issue 12), replayed: exit codes that mean something, one clear error
instead of a flood or a traceback, nothing lost on interrupt, the bundled weights never touched.
"""

from __future__ import annotations

import hashlib
import os
import signal

import pytest
import torch

from harness import chain as chain_module
from harness.chain import BUNDLED_WEIGHTS, ChainConfig
from harness.cli import main
from harness.errors import PreflightError
from harness.gates.limits import Tolerances
from harness.model.checkpoint import load_checkpoint, save_checkpoint
from harness.preflight import CLI_FLAGS, PYTEST_FLAGS, preflight
from harness.report.record import load_record

pytest_plugins = ["pytester"]


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "shared-onnx-cache"  # shared with other modules; temporary


@pytest.fixture
def run_args(cache, tmp_path):
    reports = tmp_path / "reports"
    return ["run", "--cases", "small", "--workarounds", "precomputed", "--variants", "raw",
            "--cache-dir", str(cache), "--report-dir", str(reports)], reports


def _error(capsys) -> list[str]:
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.strip()]


# -- 1. typos are usage errors; a run that tests nothing fails ---------------------------------

@pytest.mark.parametrize(("flag", "value", "valid"), [
    ("--backends", "ort-cpux", "ort-cpu, ort-cuda"),
    ("--exporters", "dynamoo", "torchscript, dynamo"),
    ("--cases", "", "small, seed, dtu"),
    ("--cases", "dtu2", "small, seed, dtu"),
    ("--workarounds", "precomputd", "precomputed, closed_form"),
    ("--variants", "simple", "raw, simplified"),
])
def test_unknown_or_empty_names_exit_2_naming_the_cli_flag_and_the_valid_values(run_args, capsys, flag, value, valid):
    argv, reports = run_args
    assert main([*argv, flag, value]) == 2
    (line,) = _error(capsys)
    assert line.startswith(f"error: {flag} | ") and valid in line
    assert "--harness-" not in line  # the CLI's messages name the CLI's flags
    assert not reports.exists()  # nothing was written for a run that did not happen


def test_options_that_leave_no_leg_are_a_usage_error(run_args, capsys):
    argv, _ = run_args
    assert main([*argv, "--workarounds", "custom_op", "--exporters", "dynamo", "--backends", "ort-cpu"]) == 2
    assert "leave no leg to run" in _error(capsys)[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs every requested backend to be unavailable")
def test_a_run_where_no_leg_could_run_fails(run_args, capsys):
    argv, reports = run_args
    assert main([*argv, "--backends", "ort-cuda,trt-fp32"]) == 1
    out = capsys.readouterr().out
    assert "FAIL no parity leg ran" in out and "no CUDA device: ort-cuda" in out.splitlines()[-1]
    (folder,) = reports.iterdir()
    assert any("no parity leg ran" in note for note in load_record(folder).notes)


def test_bench_with_an_unknown_backend_exits_2(cache, tmp_path, capsys):
    assert main(["bench", "--cases", "small", "--backends", "ort-cpu-rawx", "--cache-dir", str(cache),
                 "--report-dir", str(tmp_path)]) == 2
    assert _error(capsys)[0].startswith("error: --backends | unknown value: ort-cpu-rawx")


# -- 2. degenerate weights fail the main job with the gate's message ----------------------------

def test_degenerate_weights_fail_the_main_job(run_args, tmp_path, capsys):
    model = load_checkpoint(BUNDLED_WEIGHTS)
    with torch.no_grad():  # a constant cost: softmax gives a flat probability volume, depth a constant
        model.cost_regularization.prob.weight.zero_()
        model.cost_regularization.prob.bias.zero_()
    weights = save_checkpoint(model, tmp_path / "flat.ckpt")
    argv, reports = run_args
    assert main([*argv, "--backends", "ort-cpu", "--weights", str(weights)]) == 1
    out = capsys.readouterr().out
    assert "FAIL reference torch-fp32 on small: probability volume is flat: weights are degenerate" in out
    assert "depth map is (nearly) constant: weights are degenerate" in out


# -- 3. checked once at session start ------------------------------------------------------------

def test_preflight_returns_a_ready_chain(cache, tmp_path):
    built = preflight(ChainConfig(cache_dir=cache, device="cpu"), ("small",), tmp_path / "reports", CLI_FLAGS)
    assert built.views("small").images.shape[0] == 3 and (tmp_path / "reports").is_dir()


@pytest.mark.parametrize(("config", "flag"), [
    ({"weights": "missing.ckpt"}, "--weights"),
    ({"device": "tpu"}, "--device"),
])
def test_preflight_names_the_fronts_flag(tmp_path, config, flag):
    config = {k: (tmp_path / v if k == "weights" else v) for k, v in config.items()}
    with pytest.raises(PreflightError) as info:
        preflight(ChainConfig(cache_dir=tmp_path / "c", **config), ("small",), None, CLI_FLAGS)
    assert flag in str(info.value)
    with pytest.raises(PreflightError) as info:
        preflight(ChainConfig(cache_dir=tmp_path / "c", **config), ("small",), None, PYTEST_FLAGS)
    assert f"--harness-{flag[2:]}" in str(info.value)


def test_unwritable_cache_and_reports_folders_stop_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PreflightError, match="the artifact cache is not writable") as info:
        preflight(ChainConfig(cache_dir=blocker / "cache"), ("small",), None, CLI_FLAGS)
    assert "--cache-dir" in str(info.value)
    with pytest.raises(PreflightError, match="the reports folder is not writable") as info:
        preflight(ChainConfig(cache_dir=tmp_path / "c"), ("small",), blocker / "reports", PYTEST_FLAGS)
    assert "--harness-report-dir" in str(info.value)


def test_the_dtu_case_is_refused_on_a_cpu_without_the_memory_it_needs(tmp_path):
    with pytest.raises(PreflightError, match="case dtu does not fit in this machine's memory") as info:
        preflight(ChainConfig(cache_dir=tmp_path / "c", device="cpu"), ("dtu",), None, CLI_FLAGS, memory_gib=8.0)
    assert "measured peak 16.6 GiB" in str(info.value)


GATE = """
from harness.compare import assert_parity


def test_parity(parity, parity_leg):
    result = parity(parity_leg)
    assert_parity(result.diffs, parity_leg.id)
"""


@pytest.mark.parametrize(("option", "first"), [
    ("--harness-weights=nowhere.ckpt", "ERROR: nowhere.ckpt | checkpoint not found"),
    ("--harness-device=tpu", "ERROR: device | the device is not usable: unknown device: tpu"),
    ("--harness-scene=nowhere", "ERROR: nowhere | scene folder not found"),
])
def test_a_bad_session_option_stops_pytest_with_one_message(pytester, cache, option, first):
    pytester.makepyfile(test_gate=GATE)
    result = pytester.runpytest("-p", "harness.plugin", "-p", "no:cacheprovider", "--harness-no-report",
                                "--harness-cache-dir", str(cache), option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR")]
    assert len(errors) == 1 and errors[0].startswith(first), result.errlines
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_read_only_reports_folder_is_one_message_not_a_traceback(run_args, tmp_path, capsys):
    argv, _ = run_args
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([*argv[:-1], str(blocker / "reports")]) == 2
    (line,) = _error(capsys)
    assert "the reports folder is not writable" in line and "--report-dir" in line


# -- 4. an interrupted run keeps what it finished ------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_main_job_writes_an_incomplete_record_and_exits_128_plus_the_signal(
        run_args, monkeypatch, capsys, signum):
    argv, reports = run_args
    real = chain_module.run_leg
    calls = []

    def run_then_signal(chain, leg, tolerances):
        calls.append(leg.id)
        if len(calls) == 2:  # the second leg is stopped by the signal
            os.kill(os.getpid(), signum)
        return real(chain, leg, tolerances)

    monkeypatch.setattr(chain_module, "run_leg", run_then_signal)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert main([*argv, "--backends", "ort-cpu,ort-cpu-fp16"]) == 128 + signum
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    # one line says it; before it only a cold cache's export progress (which test runs first is up to xdist)
    assert err[-1].startswith(f"interrupted by {signal.Signals(signum).name}: kept 1 of 2 legs"), err
    assert all(line.startswith(("exporting ONNX ", "simplifying ONNX ", "converting ONNX ")) for line in err[:-1]), err
    (folder,) = reports.iterdir()
    record = load_record(folder)
    assert record.config["incomplete"] is True and len(record.parity) == 1
    assert any(note.startswith("incomplete:") for note in record.notes)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # the handlers are put back


# -- 5. the bundled weights are never written ---------------------------------------------------

def test_train_needs_an_explicit_out(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--steps", "1"])
    assert info.value.code == 2 and "--out" in capsys.readouterr().err


def test_no_command_touches_the_bundled_weights(cache, tmp_path, capsys):
    before = _sha256(BUNDLED_WEIGHTS)
    tiny = ["--steps", "1", "--batch", "1", "--pool", "2", "--height", "64", "--width", "96", "--num-depth", "16",
            "--device", "cpu"]
    assert main(["train", *tiny, "--out", str(tmp_path / "trained.ckpt")]) == 0
    assert main(["make-weights", str(tmp_path / "init.ckpt")]) == 0
    assert main(["make-scene", str(tmp_path / "scene"), "--views", "3", "--height", "128", "--width", "160"]) == 0
    assert main(["run", "--cases", "small", "--backends", "ort-cpu", "--workarounds", "precomputed", "--variants",
                 "raw", "--cache-dir", str(cache), "--report-dir", str(tmp_path / "r")]) == 0
    assert main(["accuracy", "--cases", "small", "--scenes", "1", "--cache-dir", str(cache),
                 "--report-dir", str(tmp_path / "r")]) == 0
    assert main(["doctor"]) == 0
    assert _sha256(BUNDLED_WEIGHTS) == before
    capsys.readouterr()


# -- 6. a readable report ------------------------------------------------------------------------

def test_the_main_jobs_report_shows_gates_and_a_depth_difference_figure(run_args, capsys):
    argv, reports = run_args
    assert main([*argv, "--backends", "ort-cpu"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    gate = Tolerances.load().lookup("torch-fp32", "ort-cpu", "fp32", ("depth",), case="small")["depth"]
    (metric, limit), = gate.items()  # the calibrated depth gate, printed in the legend above the rows
    assert f"  depth: {metric} <= {limit:g}" in lines and any("agreement >=" in line for line in lines)
    assert any(line.startswith("ok   ort-cpu raw ") for line in lines) and lines[-1].startswith("PASS ")
    (folder,) = reports.iterdir()
    assert (folder / "depth-diff-small.png").is_file()
    report = (folder / "report.md").read_text()
    assert "![depth-diff-small](depth-diff-small.png)" in report and "depth gate (limit)" in report
