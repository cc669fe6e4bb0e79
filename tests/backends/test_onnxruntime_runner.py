"""Unit tests of harness/backends/onnxruntime_runner.py on an exported small-case graph (CPU)."""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch

from harness.backends import onnxruntime_runner
from harness.backends.onnxruntime_runner import OrtRunner, available_providers, ensure_available
from harness.backends.torch_runner import TorchRunner
from harness.compare import compare
from harness.convert.cache import ArtifactCache
from harness.convert.onnx_export import ExportConfig, OnnxFromTorch
from harness.convert.workarounds import INPUTS_WITH_INVERSE, get_workaround
from harness.data.cases import case_feed, case_views, get_case
from harness.errors import BackendUnavailable, InvalidInput
from harness.gates.limits import Tolerances
from harness.gpus import cpu_share
from harness.model.checkpoint import state_dict_digest
from harness.model.mvsnet import OUTPUT_NAMES

SMALL = get_case("small")
WORKAROUND = get_workaround("precomputed")


@pytest.fixture(scope="module")
def feed():
    return case_feed(SMALL, case_views(SMALL), with_inverse=True)


@pytest.fixture(scope="module")
def artifact(model, feed, tmp_path_factory):
    # a temporary cache shared by the test modules that only need the small graph
    cache = ArtifactCache(tmp_path_factory.getbasetemp() / "shared-onnx-cache")
    return OnnxFromTorch(model, state_dict_digest(model), feed, ExportConfig(), WORKAROUND, cache)()


@pytest.fixture(scope="module")
def ort_runner(artifact):
    runner = OrtRunner(artifact.path, "cpu", label="raw")
    with runner:
        yield runner


@pytest.fixture(scope="module")
def torch_outputs(model, feed):
    with TorchRunner(model, "cpu", "fp32") as runner:
        return runner.infer({k: v for k, v in feed.items() if k != "inverse_proj_matrices"})


def test_cpu_provider_is_available():
    assert "CPUExecutionProvider" in available_providers()
    ensure_available(torch.device("cpu"))


def test_ort_cpu_matches_torch_within_tolerance(ort_runner, feed, torch_outputs):
    outputs = ort_runner.infer(WORKAROUND.prepare_feed(feed))
    assert set(outputs) == set(OUTPUT_NAMES)
    for tensor in outputs.values():
        assert tensor.shape == (1, SMALL.height // 4, SMALL.width // 4)
        assert tensor.dtype == torch.float32
    tolerance = Tolerances.load().lookup("torch-fp32", ort_runner.name, "fp32", OUTPUT_NAMES)
    diffs = compare(torch_outputs, outputs, tolerance, depth_values=feed["depth_values"])
    assert all(diffs.values()), "\n".join(d.row() for d in diffs.values())


def test_runner_reads_the_input_names_from_the_graph(ort_runner):
    assert ort_runner.input_names == INPUTS_WITH_INVERSE
    assert ort_runner.output_names == OUTPUT_NAMES


def test_name_carries_device_and_label(artifact):
    assert OrtRunner(artifact.path, "cpu", label="raw").name == "ort-cpu-raw"
    assert OrtRunner(artifact.path, "cpu").name == "ort-cpu"


def test_describe_names_the_provider_and_graph(ort_runner, artifact):
    info = ort_runner.describe()
    assert info["runtime"] == "onnxruntime"
    assert info["provider"] == "CPUExecutionProvider"
    assert info["onnx_path"] == str(artifact.path)
    assert info["device"] == "cpu"


def test_feed_with_another_static_shape_is_refused(ort_runner, feed):
    other = WORKAROUND.prepare_feed(feed)
    other["depth_values"] = torch.linspace(425.0, 935.0, 56).unsqueeze(0)  # valid for MVSNet, not for the graph
    with pytest.raises(InvalidInput, match="static shape") as info:
        ort_runner.infer(other)
    assert "depth_values" in str(info.value)
    assert "(1, 56)" in str(info.value) and "(1, 48)" in str(info.value)


def test_feed_without_the_inverse_is_refused(ort_runner, feed):
    with pytest.raises(InvalidInput, match=r"missing \['inverse_proj_matrices'\]"):
        ort_runner.infer({k: v for k, v in feed.items() if k != "inverse_proj_matrices"})


def test_runner_can_run_again_after_close(artifact, feed):
    runner = OrtRunner(artifact.path, "cpu", threads=1)
    first = runner.infer(WORKAROUND.prepare_feed(feed))
    runner.close()
    second = runner.infer(WORKAROUND.prepare_feed(feed))
    runner.close()
    torch.testing.assert_close(first["depth"], second["depth"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_device_without_cuda_is_unavailable(artifact):
    with pytest.raises(BackendUnavailable) as info:
        OrtRunner(artifact.path, "cuda")
    assert info.value.missing == "no CUDA device"
    assert info.value.backend == "ort-cuda"


def test_missing_onnxruntime_is_backend_unavailable(monkeypatch):
    real_import = importlib.import_module

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(onnxruntime_runner.importlib, "import_module", no_onnxruntime)
    with pytest.raises(BackendUnavailable, match="onnxruntime not importable") as info:
        ensure_available(torch.device("cpu"))
    assert "pip install onnxruntime" in str(info.value)
    assert available_providers() == []


def test_missing_provider_is_backend_unavailable(monkeypatch):
    ort = onnxruntime_runner.import_onnxruntime()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["AzureExecutionProvider"])
    with pytest.raises(BackendUnavailable, match="CPUExecutionProvider missing"):
        ensure_available(torch.device("cpu"), "ort-cpu")


def test_native_stderr_is_captured_not_printed(capfd):
    import os

    lines: list[str] = []
    with onnxruntime_runner.captured_native_stderr(lines):
        os.write(2, b"[cudnn_frontend] Error: No execution plans support the graph.\n\n")
    assert lines == ["[cudnn_frontend] Error: No execution plans support the graph."]
    assert "cudnn_frontend" not in capfd.readouterr().err  # nothing reached the console
    os.write(2, b"after\n")  # the descriptor is restored
    assert "after" in capfd.readouterr().err


def test_importing_onnxruntime_sets_its_default_logger_to_errors(monkeypatch):
    calls = []
    real = importlib.import_module("onnxruntime")
    monkeypatch.setattr(real, "set_default_logger_severity", calls.append)
    onnxruntime_runner.import_onnxruntime()
    assert calls == [onnxruntime_runner.ERRORS_ONLY]


def test_unknown_cuda_option_set_is_refused(artifact):
    with pytest.raises(InvalidInput, match="strict or mixed or default"):
        OrtRunner(artifact.path, cuda_options="fast")  # type: ignore[arg-type]


def test_first_run_log_lines_reach_describe(artifact, feed, monkeypatch):
    import os

    runner = OrtRunner(artifact.path).prepare()
    real = runner._run

    def noisy(inputs):
        os.write(2, b"native warning from a kernel\n")
        return real(inputs)

    monkeypatch.setattr(runner, "_run", noisy)
    runner.infer(WORKAROUND.prepare_feed(feed))
    runner.infer(WORKAROUND.prepare_feed(feed))  # later runs are not captured (timing stays clean)
    assert runner.describe()["log"] == ["native warning from a kernel"]
    runner.close()


def test_cuda_provider_options_per_option_set():
    strict = onnxruntime_runner.cuda_provider_options("strict", 1, 77)
    assert strict == {"device_id": 1, "user_compute_stream": "77", "use_tf32": 0}
    mixed = onnxruntime_runner.cuda_provider_options("mixed", 0, 77)
    assert mixed == {"device_id": 0, "user_compute_stream": "77"}  # TF32 as ONNX Runtime defaults
    assert onnxruntime_runner.cuda_provider_options("default", 0) == {"device_id": 0}
    with pytest.raises(InvalidInput, match="no stream"):
        onnxruntime_runner.cuda_provider_options("strict", 0)
    with pytest.raises(InvalidInput, match="unknown option set"):
        onnxruntime_runner.cuda_provider_options("fast", 0, 77)  # type: ignore[arg-type]


def test_each_cuda_backend_chooses_its_option_set_and_describes_its_tf32_setting(artifact, monkeypatch):
    # no CUDA needed: the runners are made (not prepared) with the availability check bypassed
    monkeypatch.setattr(onnxruntime_runner, "ensure_available", lambda device, name="onnxruntime": None)
    chosen = {}
    for spec in onnxruntime_runner.BACKENDS:
        if spec.device == "cuda":
            runner = spec.make(artifact.path)
            chosen[spec.name] = runner.cuda_options
            options = onnxruntime_runner.cuda_provider_options(runner.cuda_options, 0, 77)
            # strict FP32 legs keep TF32 off; the FP16 graph's and ORT-as-shipped legs leave it to ORT
            assert ("use_tf32" in options) == (spec.precision == "fp32"), spec.name
            assert runner.describe()["tf32"] == onnxruntime_runner.TF32_SETTING[runner.cuda_options]
    assert chosen == {"ort-cuda": "strict", "ort-cuda-default": "default", "ort-cuda-fp16": "mixed"}
    assert "use_tf32=0" in onnxruntime_runner.TF32_SETTING["strict"]


@pytest.mark.parametrize(("environ", "expected"), [({"PYTEST_XDIST_WORKER_COUNT": "2"}, 3),
                                                   ({"HARNESS_CPU_THREADS": "1", "PYTEST_XDIST_WORKER_COUNT": "2"}, 1)])
def test_a_session_takes_the_workers_share_of_the_cores(artifact, monkeypatch, environ, expected):
    monkeypatch.setattr(onnxruntime_runner, "cpu_share", lambda: cpu_share(environ, cores=7))
    with OrtRunner(artifact.path, "cpu") as runner:
        runner.prepare()
        assert runner._session.get_session_options().intra_op_num_threads == expected


def test_an_explicit_thread_count_wins_over_the_share(artifact, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    with OrtRunner(artifact.path, "cpu", threads=1) as runner:
        runner.prepare()
        assert runner._session.get_session_options().intra_op_num_threads == 1


def test_native_lines_are_captured_at_the_first_run_of_each_input_shape(artifact, monkeypatch):
    captured = []

    @contextlib.contextmanager
    def capture(lines):
        captured.append(len(captured))
        yield

    monkeypatch.setattr(onnxruntime_runner, "captured_native_stderr", capture)
    runner = OrtRunner(artifact.path, "cpu")
    monkeypatch.setattr(runner, "_run", lambda feed: {})
    small, large = {"imgs": torch.zeros(1, 3, 3, 8, 8)}, {"imgs": torch.zeros(1, 3, 3, 16, 8)}
    for feed in (small, small, large, small, large):
        runner._infer(feed)
    assert len(captured) == 2  # one per new shape: a dynamic graph's later shapes print their plan failures too
