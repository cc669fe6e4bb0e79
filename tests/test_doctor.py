"""Unit tests of harness/doctor.py (``python -m harness doctor``).

Most tests run on a simulated CPU-only machine (``cpu_machine``: torch sees no CUDA device and is
a CPU build, no nvidia-smi, neither TensorRT module importable), so they read the same on a GPU
runner; one test checks the unpatched facts and runs only where the machine really is CPU-only.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
import shutil
import sys

import pytest
import torch

from harness import doctor
from harness.backends import trt_api
from harness.cli import build_parser

DOCUMENTED_KEYS = {"python", "platform", "nvidia_smi", "gpus", "torch", "onnx", "onnxsim", "pycuda", "onnxruntime",
                   "tensorrt", "cache", "allocator", "backends", "registry", "required", "unavailable_required"}
H100_GPU = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "memory_gib": 79.1}]


def doctor_main(*argv: str) -> int:
    """``python -m harness doctor ARGV`` through the CLI's parser (its function runs doctor.run)."""
    args = build_parser().parse_args(["doctor", *argv])
    return args.func(args)


def _no_tensorrt(monkeypatch) -> None:
    monkeypatch.setattr(trt_api, "_bound", None)
    monkeypatch.setattr(trt_api, "trt", None)
    monkeypatch.delenv(trt_api.ENV_FLAVOUR, raising=False)
    for name in trt_api.FLAVOURS:  # None in sys.modules halts the import, as if not installed
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def cpu_machine(monkeypatch, tmp_path):
    """No GPU, a CPU build of torch, no nvidia-smi, no TensorRT; returns an empty cache folder."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    real_which = shutil.which
    monkeypatch.setattr(doctor.shutil, "which", lambda cmd, *a, **k: None if cmd == "nvidia-smi" else real_which(cmd, *a, **k))
    _no_tensorrt(monkeypatch)
    return tmp_path / "cache"


def _json(capsys, *argv: str) -> tuple[int, dict, str]:
    status = doctor_main("--json", *argv)
    out, err = capsys.readouterr()
    return status, json.loads(out), err


def test_screen_reports_what_a_cpu_only_machine_can_run(cpu_machine, capsys):
    assert doctor_main("--cache-dir", str(cpu_machine)) == 0
    out = capsys.readouterr().out
    assert "GPU          none visible to torch" in out
    assert "driver       nvidia-smi not found" in out
    assert f"torch        {torch.__version__} (CPU build)" in out
    assert "CPUExecutionProvider" in out.split("onnxruntime")[1].splitlines()[0]
    assert "TensorRT     tensorrt not importable" in out
    backends = out.split("\nbackends: ")[1].split("\n\n")[0].splitlines()[1:]
    references = out.split("\nreferences: ")[1].split("\n\n")[0].splitlines()[1:]
    assert "  ort-cpu           onnx   fp32  available" in backends
    assert "  torch-fp32        model  fp32  available" in references
    assert "no CUDA device (torch" in out and "is a CPU build; nvidia-smi not found)" in out
    assert "  trt-fp32          engine fp32  tensorrt not importable" in backends


def test_require_trt_fails_naming_tensorrt_not_importable(cpu_machine, capsys):
    assert doctor_main("--require", "trt", "--cache-dir", str(cpu_machine)) == 1
    err = capsys.readouterr().err
    assert "required backend trt is unavailable: tensorrt not importable" in err


def test_require_ort_cuda_fails_naming_no_cuda_device(cpu_machine, capsys):
    assert doctor_main("--require", "ort-cuda", "--cache-dir", str(cpu_machine)) == 1
    err = capsys.readouterr().err
    assert "required backend ort-cuda is unavailable: no CUDA device" in err
    assert "trt" not in err  # only the required backends are named


def test_require_of_available_backends_passes(cpu_machine, capsys):
    assert doctor_main("--require", "torch-cpu, ort-cpu", "--cache-dir", str(cpu_machine)) == 0
    out, err = capsys.readouterr()
    assert "required backends available: torch-cpu, ort-cpu" in out and err == ""


def test_unknown_required_name_exits_2_naming_the_valid_ones(cpu_machine, capsys):
    assert doctor_main("--require", "trt,tensorrt,gpu") == 2
    out, err = capsys.readouterr()
    assert out == ""  # refused before probing anything
    assert "unknown backend: tensorrt, gpu" in err
    assert "a comma list of torch-fp32, torch-tf32, torch-fp16, torch-fast-fp16, ort-cpu," in err  # the registry's
    assert "--harness-" not in err


def test_json_holds_the_documented_keys(cpu_machine, capsys):
    status, facts, err = _json(capsys, "--require", "trt,ort-cpu", "--cache-dir", str(cpu_machine))
    assert status == 1 and "tensorrt not importable" in err
    assert set(facts) == DOCUMENTED_KEYS
    assert all(f"``{key}``" in doctor.__doc__ for key in DOCUMENTED_KEYS)
    assert facts["gpus"] == [] and facts["nvidia_smi"]["found"] is False
    assert facts["torch"]["build"] == "cpu" and facts["torch"]["cuda_available"] is False
    assert "CPUExecutionProvider" in facts["onnxruntime"]["providers"] and facts["onnxruntime"]["error"] is None
    assert facts["tensorrt"]["blocker"] == "tensorrt not importable" and facts["tensorrt"]["flavour"] is None
    assert list(facts["backends"]) == list(doctor.BACKENDS)
    assert facts["backends"]["trt"] == {"available": False, "reason": "tensorrt not importable"}
    assert facts["required"] == ["trt", "ort-cpu"]
    assert facts["unavailable_required"] == {"trt": "tensorrt not importable"}
    assert facts["onnx"]["version"] and facts["onnxsim"]["version"]


@pytest.mark.parametrize("error", [ImportError("libcublasLt.so.12: cannot open shared object file"),
                                   RuntimeError("CUDA driver version is insufficient")], ids=["import", "runtime"])
def test_broken_onnxruntime_is_reported_not_raised(cpu_machine, capsys, monkeypatch, error):
    real_import = importlib.import_module

    def import_module(name, package=None):
        if name == "onnxruntime":
            raise error
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", import_module)
    status, facts, err = _json(capsys, "--require", "ort-cpu", "--cache-dir", str(cpu_machine))
    assert status == 1
    reason = facts["backends"]["ort-cpu"]["reason"]
    assert str(error) in reason and type(error).__name__ in reason and reason in err
    assert facts["onnxruntime"]["providers"] == [] and facts["onnxruntime"]["error"] == reason
    assert facts["backends"]["torch-cpu"]["available"]
    assert doctor_main("--cache-dir", str(cpu_machine)) == 0
    assert str(error) in capsys.readouterr().out


def test_cache_size_is_measured_in_mib(cpu_machine, capsys):
    (cpu_machine / "onnx" / "abc").mkdir(parents=True)
    (cpu_machine / "onnx" / "abc" / "model.onnx").write_bytes(b"\0" * (3 * 2**19))  # 1.5 MiB
    _, facts, _ = _json(capsys, "--cache-dir", str(cpu_machine))
    assert facts["cache"] == {"path": str(cpu_machine), "exists": True, "size_mib": 1.5}
    assert doctor_main("--cache-dir", str(cpu_machine / "absent")) == 0
    assert "absent (0.0 MiB, not created yet)" in capsys.readouterr().out


def test_default_cache_dir_is_the_harness_one(cpu_machine, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cpu_machine))
    _, facts, _ = _json(capsys)
    assert facts["cache"]["path"] == str(cpu_machine) and facts["cache"]["exists"] is False


def test_tensorrt_on_a_gpu_is_available(cpu_machine, capsys, monkeypatch):
    fake = sys.modules["fake_tensorrt"]  # registered by tests/conftest.py
    fake.install(monkeypatch, fake.FakeTensorRT("tensorrt"))
    fake.fake_cuda(monkeypatch, cc="9.0")
    monkeypatch.setattr(doctor, "torch_gpus", lambda: H100_GPU)
    assert doctor_main("--require", "trt,torch-cuda", "--cache-dir", str(cpu_machine)) == 0
    out = capsys.readouterr().out
    assert f"TensorRT     tensorrt {fake.DEFAULT_VERSIONS['tensorrt']}; engines run here" in out
    assert "NVIDIA H100 80GB HBM3 (sm 9.0, 79.1 GiB)" in out
    assert re.search(r"\n  ort-cuda +onnx +fp32 +\S", out)  # the registry's own check (torch.cuda is not faked there)


def test_tensorrt_rtx_on_hopper_names_the_blocker(cpu_machine, capsys, monkeypatch):
    fake = sys.modules["fake_tensorrt"]  # registered by tests/conftest.py
    fake.install(monkeypatch, fake.FakeTensorRT("tensorrt_rtx"))
    fake.fake_cuda(monkeypatch, cc="9.0")
    monkeypatch.setattr(doctor, "torch_gpus", lambda: H100_GPU)
    status, facts, err = _json(capsys, "--require", "trt", "--cache-dir", str(cpu_machine))
    assert status == 1
    blocker = "TensorRT-RTX cannot run engines on compute capability 9.0"
    assert facts["tensorrt"]["flavour"] == "tensorrt_rtx" and facts["tensorrt"]["engine_runs_here"] is False
    assert facts["tensorrt"]["compute_capability"] == "9.0" and facts["tensorrt"]["blocker"] == blocker
    assert f"trt is unavailable: {blocker}" in err


def test_tensorrt_without_a_gpu_names_no_cuda_device(cpu_machine, capsys, monkeypatch):
    fake = sys.modules["fake_tensorrt"]  # registered by tests/conftest.py
    fake.install(monkeypatch, fake.FakeTensorRT("tensorrt"))
    _, facts, _ = _json(capsys, "--cache-dir", str(cpu_machine))
    assert facts["tensorrt"]["version"] == fake.DEFAULT_VERSIONS["tensorrt"]
    assert facts["backends"]["trt"]["reason"].startswith("no CUDA device")


def test_gpu_seen_by_the_driver_but_not_by_a_cpu_torch_says_what_to_install(cpu_machine, capsys, monkeypatch):
    outputs = {"--query-gpu=name,driver_version": "NVIDIA H200, 580.159.04\n",
               "": "| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04   CUDA Version: 13.0 |\n"}
    monkeypatch.setattr(doctor.shutil, "which", lambda cmd, *a, **k: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(doctor, "run_command", lambda cmd: outputs[cmd[1] if len(cmd) > 1 else ""])
    _, facts, _ = _json(capsys, "--cache-dir", str(cpu_machine))
    assert facts["nvidia_smi"] == {"found": True, "driver": "580.159.04", "cuda": "13.0", "gpus": ["NVIDIA H200"],
                                   "error": None}
    assert facts["backends"]["torch-cuda"]["reason"] == (
        f"no CUDA device (torch {torch.__version__} is a CPU build; nvidia-smi sees NVIDIA H200: "
        "install a CUDA build of torch)")


def test_every_option_says_its_default():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    command = sub.choices["doctor"]
    options = [a for a in command._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in options} == {"require", "json", "cache_dir"}
    assert all(a.help and "(default:" in a.help for a in options)
    assert next(a.help for a in sub._choices_actions if a.dest == "doctor")


@pytest.mark.skipif(torch.cuda.is_available() or torch.version.cuda is not None or shutil.which("nvidia-smi") is not None
                    or any(importlib.util.find_spec(f) is not None for f in trt_api.FLAVOURS),
                    reason="describes a CPU-only machine without TensorRT (this one has a GPU, CUDA torch or TensorRT)")
def test_this_cpu_machine_unpatched(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(trt_api, "_bound", None)  # forget a fake bound by another test
    monkeypatch.delenv(trt_api.ENV_FLAVOUR, raising=False)
    assert doctor_main("--cache-dir", str(tmp_path)) == 0
    assert doctor_main("--require", "trt", "--cache-dir", str(tmp_path)) == 1
    assert doctor_main("--require", "ort-cuda", "--cache-dir", str(tmp_path)) == 1
    out, err = capsys.readouterr()
    assert "none visible to torch" in out and "(CPU build)" in out and "CPUExecutionProvider" in out
    assert "tensorrt not importable" in err and "ort-cuda is unavailable: no CUDA device" in err


def test_the_screen_shows_one_vocabulary_the_candidates_run_takes_and_the_references_apart(cpu_machine, capsys):
    """One vocabulary: the backends section is exactly what run --backends (and pytest) accept, the
    torch references (torch-tf32 ...: refused by run) are listed apart, labelled as such, and the
    runtime families (torch-cpu, trt ...) are not on the screen."""
    from harness.backends import registry
    from harness.chain import OPTION_NAMES

    assert doctor_main("--cache-dir", str(cpu_machine)) == 0
    out = capsys.readouterr().out
    backends = out.split("\nbackends: ")[1].split("\n\n")[0].splitlines()
    references = out.split("\nreferences: ")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in backends[1:]] == list(OPTION_NAMES["backends"])
    assert "run --backends" in backends[0] and "never candidates" in references[0]
    assert [line.split()[0] for line in references[1:]] == [n for n in registry.names() if n not in OPTION_NAMES["backends"]]
    assert "torch-tf32" in references[-2] and "torch-tf32" not in "\n".join(backends)
    assert "  torch-fast-fp16   model  fp16  no CUDA device (torch " in "\n".join(backends)  # the probed why
    assert any(line.startswith("  torch-aoti        model  fp32  ") for line in backends)
    assert not any(line.startswith(("  torch-cpu ", "  trt ")) for line in out.splitlines())


def test_require_takes_registry_names(cpu_machine, capsys):
    assert doctor_main("--require", "torch-fast-fp16", "--cache-dir", str(cpu_machine)) == 1
    assert "required backend torch-fast-fp16 is unavailable: no CUDA device" in capsys.readouterr().err
    assert doctor_main("--require", "ort-cpu-fp16,torch-fp32", "--cache-dir", str(cpu_machine)) == 0
    assert doctor_main("--require", "torch-cpu", "--cache-dir", str(cpu_machine)) == 0  # a family: deprecated alias
