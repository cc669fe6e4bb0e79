"""Unit tests of harness/report/machine.py: provenance that never fails."""

from __future__ import annotations

import json

import pytest
import torch

from harness.report import machine
from harness.report.machine import git_state, machine_info, one_line, tensorrt_versions

TOP_LEVEL = {"hostname", "platform", "python", "cpu", "cpu_count", "gpus", "cuda", "cudnn", "versions", "tf32",
             "commit", "dirty"}
VERSIONS = {"torch", "onnx", "onnxsim", "onnxruntime", "onnxruntime_providers", "tensorrt", "tensorrt_rtx",
            "pycuda", "numpy"}


@pytest.fixture
def fresh_git_state():
    git_state.cache_clear()
    yield
    git_state.cache_clear()


def test_machine_info_has_the_documented_keys():
    info = machine_info()
    assert TOP_LEVEL <= set(info)
    assert VERSIONS <= set(info["versions"])
    assert set(info["tf32"]) == {"cudnn.allow_tf32", "cuda.matmul.allow_tf32"}
    assert info["versions"]["torch"] == torch.__version__
    assert isinstance(info["gpus"], list)


def test_machine_info_is_json_serialisable():
    info = machine_info()
    assert json.loads(json.dumps(info)) == info


def test_machine_info_reports_onnxruntime_providers():
    providers = machine_info()["versions"]["onnxruntime_providers"]
    assert "CPUExecutionProvider" in providers


def test_the_onnxruntime_version_is_the_imported_modules_not_another_distributions(monkeypatch):
    """With onnxruntime and onnxruntime-gpu both installed (the H200 image's CPU build under the
    carried-in GPU build) the metadata of 'onnxruntime' named 1.30.0 while 1.31.1 ran."""
    import sys
    import types

    fake = types.ModuleType("onnxruntime")
    fake.__version__ = "9.9.9"  # type: ignore[attr-defined]
    fake.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    versions = machine_info()["versions"]
    assert versions["onnxruntime"] == "9.9.9"
    assert versions["onnxruntime_providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    import importlib.metadata

    assert versions["onnxruntime_distributions"] == {"onnxruntime": importlib.metadata.version("onnxruntime")}


def test_machine_info_reports_the_tf32_flags(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert machine_info()["tf32"]["cudnn.allow_tf32"] is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only record")
def test_machine_info_on_cpu_lists_no_gpu():
    assert machine_info()["gpus"] == []


def test_machine_info_without_git_reads_null(monkeypatch, fresh_git_state):
    monkeypatch.setattr(machine.shutil, "which", lambda name: None)
    info = machine_info()
    assert info["commit"] is None
    assert info["dirty"] is None


def test_git_state_failure_reads_null(monkeypatch, fresh_git_state, tmp_path):
    monkeypatch.delenv("HARNESS_COMMIT", raising=False)
    monkeypatch.setattr(machine, "PROJECT_ROOT", tmp_path)  # not a git checkout: git exits non-zero
    assert git_state() == {"commit": None, "dirty": None}


def test_a_stated_commit_wins_over_a_copied_trees_git(monkeypatch, fresh_git_state, tmp_path):
    monkeypatch.setenv("HARNESS_COMMIT", "28aad3299cd6bcc30b79462a8275ceb0fcf346ab")
    monkeypatch.setattr(machine, "PROJECT_ROOT", tmp_path)  # a copy without .git
    assert git_state() == {"commit": "28aad3299cd6bcc30b79462a8275ceb0fcf346ab", "dirty": None,
                           "commit_source": "HARNESS_COMMIT"}
    git_state.cache_clear()
    monkeypatch.setattr(machine, "run_command", lambda cmd, cwd: "0ad798a2413b7e4deee49a3c917fe743a2aa9b6a")
    state = git_state()  # a copy whose .git is stale: both are kept, the stated one is the record's
    assert state["commit"].startswith("28aad32") and state["git_head"].startswith("0ad798a")


def test_tensorrt_versions_survive_a_broken_install(monkeypatch):
    def broken(name, *args, **kwargs):
        raise RuntimeError(f"{name}: libnvinfer.so not found")

    monkeypatch.setattr(machine.importlib, "import_module", broken)
    found = tensorrt_versions()
    assert set(found) == {"tensorrt", "tensorrt_rtx"}
    for value in found.values():
        assert value is None or str(value).startswith("error")


def test_machine_info_never_raises_when_every_probe_breaks(monkeypatch, fresh_git_state):
    def broken(name, *args, **kwargs):
        raise RuntimeError(f"{name}: broken install")

    monkeypatch.setattr(machine.importlib, "import_module", broken)
    monkeypatch.setattr(machine.shutil, "which", lambda name: None)
    info = machine_info()  # a broken onnxruntime or TensorRT install must not break provenance
    providers = info["versions"]["onnxruntime_providers"]
    assert providers is None or str(providers).startswith("error")


def test_machine_info_never_raises_when_onnxruntime_is_missing(monkeypatch):
    real = machine.importlib.import_module

    def no_ort(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(machine.importlib, "import_module", no_ort)
    assert machine_info()["versions"]["onnxruntime_providers"] is None


def _info(gpus=(), tensorrt=None, tensorrt_rtx=None):
    return {"gpus": list(gpus), "versions": {"torch": "2.x", "onnx": "1.x", "onnxsim": "0.x", "onnxruntime": "1.y",
                                            "tensorrt": tensorrt, "tensorrt_rtx": tensorrt_rtx}}


def test_one_line_mentions_no_gpu_on_cpu():
    line = one_line(_info(), "quick")
    assert line.startswith("harness: profile=quick | no GPU |")
    assert "torch 2.x" in line and "onnxruntime 1.y" in line
    assert "tensorrt none" in line
    assert "\n" not in line


def test_one_line_names_gpus_and_tensorrt():
    gpus = [{"name": "NVIDIA H100", "compute_capability": "9.0"}]
    line = one_line(_info(gpus, tensorrt="10.13"), "full")
    assert line.startswith("harness: profile=full | NVIDIA H100 (sm 9.0) |")
    assert line.endswith("tensorrt 10.13")
    assert one_line(_info(tensorrt_rtx="1.2"), "quick").endswith("tensorrt rtx 1.2")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only header")
def test_one_line_of_this_machine_says_no_gpu():
    assert "no GPU" in one_line(machine_info(), "quick")
