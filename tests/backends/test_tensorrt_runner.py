"""Unit tests of harness/backends/tensorrt_runner.py on the CPU: engine loading, name-based I/O
discovery and input binding, against the fake ``tensorrt`` module (tests/fake_tensorrt.py).

The CUDA-stream path (``_infer``: device buffers, ``execute_async_v3``) cannot run without a GPU
and is left to suites/ on GPU machines.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from harness.backends import trt_api
from harness.backends.tensorrt_runner import ALIGNMENT, TrtRunner, _aligned
from harness.errors import BackendUnavailable, EngineBuildError, InvalidArgument, InvalidInput, ShapeError

fake_trt = sys.modules["fake_tensorrt"]  # registered by tests/conftest.py
FakeTensorRT = fake_trt.FakeTensorRT
RTX_ON_H100 = "TensorRT-RTX cannot run engines on compute capability 9.0"

# An MVSNet-like engine: dynamic H, W and D; inputs and outputs interleaved, so only
# get_tensor_mode can tell them apart.
MVS_IO = [
    {"name": "imgs", "mode": "INPUT", "shape": [1, 3, 3, -1, -1], "dtype": "FLOAT",
     "profile": [[1, 3, 3, 64, 96], [1, 3, 3, 128, 160], [1, 3, 3, 256, 320]]},
    {"name": "depth", "mode": "OUTPUT", "shape": [1, -1, -1], "dtype": "FLOAT",
     "rule": [1, ["imgs", 3, 4], ["imgs", 4, 4]]},
    {"name": "proj_matrices", "mode": "INPUT", "shape": [1, 3, 4, 4], "dtype": "FLOAT"},
    {"name": "photometric_confidence", "mode": "OUTPUT", "shape": [1, -1, -1], "dtype": "HALF",
     "rule": [1, ["imgs", 3, 4], ["imgs", 4, 4]]},
    {"name": "inverse_proj_matrices", "mode": "INPUT", "shape": [1, 3, 4, 4], "dtype": "FLOAT"},
    {"name": "depth_values", "mode": "INPUT", "shape": [1, -1], "dtype": "FLOAT",
     "profile": [[1, 8], [1, 48], [1, 192]]},
]
INPUTS = ("imgs", "proj_matrices", "inverse_proj_matrices", "depth_values")
OUTPUTS = ("depth", "photometric_confidence")


def feed(height: int = 128, width: int = 160, depth: int = 48) -> dict[str, torch.Tensor]:
    return {"imgs": torch.zeros(1, 3, 3, height, width), "proj_matrices": torch.zeros(1, 3, 4, 4),
            "inverse_proj_matrices": torch.zeros(1, 3, 4, 4), "depth_values": torch.zeros(1, depth)}


@pytest.fixture
def trt(monkeypatch):
    """The fake TensorRT 10 bound, on a faked H100."""
    fake = FakeTensorRT("tensorrt")
    fake_trt.install(monkeypatch, fake)
    fake_trt.fake_cuda(monkeypatch)
    return fake


def write_plan(fake, tmp_path: Path, io=MVS_IO, name: str = "model.engine") -> Path:
    path = tmp_path / name
    path.write_bytes(fake.make_plan(io))
    return path


@pytest.fixture
def runner(trt, tmp_path):
    with TrtRunner(write_plan(trt, tmp_path), label="fp32") as prepared:
        yield prepared


# -- construction ----------------------------------------------------------------------------

def test_construction_without_a_gpu_raises_no_cuda_device(monkeypatch, tmp_path):
    fake = FakeTensorRT("tensorrt")
    fake_trt.install(monkeypatch, fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    with pytest.raises(BackendUnavailable) as info:
        TrtRunner(write_plan(fake, tmp_path), label="fp16")
    assert (info.value.backend, info.value.missing) == ("trt-fp16", "no CUDA device")
    assert fake.calls == []


def test_construction_without_tensorrt_raises_tensorrt_not_importable(monkeypatch, tmp_path):
    fake_trt.install(monkeypatch)
    with pytest.raises(BackendUnavailable) as info:
        TrtRunner(tmp_path / "model.engine")
    assert info.value.missing == "tensorrt not importable"


def test_construction_binds_the_flavour_and_names_the_runner(trt, tmp_path):
    runner = TrtRunner(write_plan(trt, tmp_path), label="tf32")
    assert runner.name == "trt-tf32"
    assert TrtRunner(tmp_path / "model.engine").name == "trt"
    assert runner.info == trt_api.TrtInfo("tensorrt", "10.13.0.35")
    assert runner.device == torch.device("cuda", 0)
    assert runner.describe() == {"name": "trt-tf32", "device": "cuda:0", "runtime": "tensorrt",
                                 "version": "10.13.0.35", "engine": str(tmp_path / "model.engine"), "buffers": "torch",
                                 "cuda_graph": False}
    assert trt.called("deserialize_cuda_engine") == []  # lazy: nothing loaded before prepare()


def test_unknown_buffer_mode_is_an_invalid_argument(trt, tmp_path):
    with pytest.raises(InvalidArgument, match="unknown buffer mode"):
        TrtRunner(write_plan(trt, tmp_path), buffers="numpy")  # type: ignore[arg-type]


def test_pycuda_buffers_without_pycuda_are_unavailable(trt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)  # not importable
    with pytest.raises(BackendUnavailable) as info:
        TrtRunner(write_plan(trt, tmp_path), label="fp32", buffers="pycuda")
    assert info.value.missing == "pycuda not importable (buffer mode pycuda)"


# -- prepare: loading the engine -------------------------------------------------------------

def test_prepare_reads_io_names_by_tensor_mode(trt, tmp_path):
    runner = TrtRunner(write_plan(trt, tmp_path), label="fp32").prepare()
    assert runner.input_names == INPUTS
    assert runner.output_names == OUTPUTS
    assert {name for (name,) in trt.called("get_tensor_mode")} == set(INPUTS + OUTPUTS)
    assert trt.called("create_execution_context") == [(None,)]
    assert isinstance(runner._stream, fake_trt.FakeStream) and runner._stream.device == torch.device("cuda", 0)
    assert isinstance(runner._logger, fake_trt.ILogger)
    runner.close()
    assert runner._engine is None and runner._context is None


def test_rtx_engine_on_compute_capability_9_is_unavailable(monkeypatch, tmp_path):
    rtx = FakeTensorRT("tensorrt_rtx", deserialize_error=fake_trt.CC_ERROR)
    fake_trt.install(monkeypatch, rtx)
    fake_trt.fake_cuda(monkeypatch, cc="9.0")
    runner = TrtRunner(write_plan(rtx, tmp_path), label="fp16")
    with pytest.raises(BackendUnavailable) as info:
        runner.prepare()
    assert info.value.missing == RTX_ON_H100
    assert info.value.backend == "trt-fp16"
    assert "compute capability 9.0. Supported compute capabilities: 8.0" in str(info.value)  # TensorRT's words
    assert "tensorrt_rtx 1.7.1.116" in str(info.value)


def test_rtx_engine_that_fails_on_a_supported_gpu_is_a_build_error(monkeypatch, tmp_path):
    rtx = FakeTensorRT("tensorrt_rtx")
    fake_trt.install(monkeypatch, rtx)
    fake_trt.fake_cuda(monkeypatch, name="NVIDIA GeForce RTX 4090", cc="8.9")
    path = tmp_path / "model.engine"
    path.write_bytes(rtx.make_plan(MVS_IO)[:-1] + b"x")  # damaged JSON header
    with pytest.raises(EngineBuildError) as info:
        TrtRunner(path).prepare()
    assert "could not deserialize the engine" in str(info.value)
    assert "Serialization assertion" in str(info.value)


def test_engine_of_another_tensorrt_version_is_a_build_error_quoting_tensorrt(monkeypatch, tmp_path):
    old, new = FakeTensorRT("tensorrt", "10.12.0.36"), FakeTensorRT("tensorrt", "10.13.0.35")
    path = write_plan(old, tmp_path)
    fake_trt.install(monkeypatch, new)
    fake_trt.fake_cuda(monkeypatch)
    with pytest.raises(EngineBuildError) as info:
        TrtRunner(path).prepare()
    assert str(path) in str(info.value)
    assert "expecting library version 10.13.0.35 got 10.12.0.36" in str(info.value)
    assert "delete the cache entry" in str(info.value)


def test_garbage_file_is_a_build_error(trt, tmp_path):
    path = tmp_path / "model.engine"
    path.write_bytes(b"not an engine")
    with pytest.raises(EngineBuildError, match="Magic tag does not match"):
        TrtRunner(path).prepare()


def test_full_tensorrt_logging_a_compute_capability_mismatch_is_unavailable(monkeypatch, tmp_path):
    message = "The engine plan file is generated on an incompatible device, expecting compute capability 8.6, got 9.0"
    fake = FakeTensorRT("tensorrt", deserialize_error=message)
    fake_trt.install(monkeypatch, fake)
    fake_trt.fake_cuda(monkeypatch, cc="9.0")
    with pytest.raises(BackendUnavailable) as info:
        TrtRunner(write_plan(fake, tmp_path)).prepare()
    assert info.value.missing == message


def test_rtx_runtime_cache_is_loaded_and_saved(monkeypatch, tmp_path):
    rtx = FakeTensorRT("tensorrt_rtx")
    fake_trt.install(monkeypatch, rtx)
    fake_trt.fake_cuda(monkeypatch, name="NVIDIA GeForce RTX 4090", cc="8.9")
    cache_file = tmp_path / "runtime.cache"
    cache_file.write_bytes(b"earlier;")
    runner = TrtRunner(write_plan(rtx, tmp_path), runtime_cache=cache_file).prepare()
    assert rtx.called("runtime_cache.deserialize") == [(b"earlier;",)]
    (config,) = rtx.called("create_execution_context")[0]
    assert config is not None and config.cache is not None
    runner.close()
    assert cache_file.read_bytes() == b"earlier;jit-kernels;"


def test_full_tensorrt_ignores_the_runtime_cache(trt, tmp_path):
    cache_file = tmp_path / "runtime.cache"
    runner = TrtRunner(write_plan(trt, tmp_path), runtime_cache=cache_file).prepare()
    assert trt.called("create_execution_context") == [(None,)]
    runner.close()
    assert not cache_file.exists()


# -- binding inputs --------------------------------------------------------------------------

def test_bind_inputs_sets_every_input_shape(runner, trt):
    data = feed(192, 256, 96)
    bound = runner._bind_inputs(data)
    assert list(bound) == list(INPUTS)
    assert all(bound[name] is data[name] for name in INPUTS)
    assert trt.called("set_input_shape") == [
        ("imgs", (1, 3, 3, 192, 256)), ("proj_matrices", (1, 3, 4, 4)),
        ("inverse_proj_matrices", (1, 3, 4, 4)), ("depth_values", (1, 96)),
    ]
    # the profile is read for the dynamic inputs only
    assert trt.called("get_tensor_profile_shape") == [("imgs", 0), ("depth_values", 0)]


@pytest.mark.parametrize("height, width, depth", [(64, 96, 8), (256, 320, 192), (128, 160, 48)])
def test_bind_inputs_accepts_the_profile_bounds(runner, height, width, depth):
    runner._bind_inputs(feed(height, width, depth))
    assert runner._output_shapes() == {"depth": (1, height // 4, width // 4),
                                       "photometric_confidence": (1, height // 4, width // 4)}


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.int64])
def test_bind_inputs_refuses_a_dtype_other_than_the_engines(runner, trt, dtype):
    data = feed()
    data["proj_matrices"] = data["proj_matrices"].to(dtype)
    with pytest.raises(InvalidInput) as info:
        runner._bind_inputs(data)
    assert not isinstance(info.value, ShapeError)
    message = str(info.value)
    assert "trt-fp32: proj_matrices" in message and str(dtype) in message and "torch.float32" in message
    assert ("proj_matrices", (1, 3, 4, 4)) not in trt.called("set_input_shape")


@pytest.mark.parametrize("name, shape", [
    ("imgs", (1, 3, 3, 288, 320)),  # taller than the profile's max
    ("imgs", (1, 3, 3, 32, 160)),  # shorter than its min
    ("imgs", (1, 3, 3, 128)),  # wrong rank
    ("depth_values", (1, 256)),  # more depth hypotheses than the max
    ("proj_matrices", (1, 5, 4, 4)),  # static input of another shape
])
def test_bind_inputs_refuses_a_shape_outside_the_profile(runner, trt, name, shape):
    data = feed()
    data[name] = torch.zeros(shape)
    with pytest.raises(ShapeError) as info:
        runner._bind_inputs(data)
    message = str(info.value)
    assert f"trt-fp32: {name}" in message and "outside the engine's profile" in message
    assert str(shape) in message
    assert (name, shape) not in trt.called("set_input_shape")


def test_bind_inputs_reports_a_shape_tensorrt_refuses(runner, monkeypatch):
    monkeypatch.setattr(runner._context, "set_input_shape", lambda name, shape: False)
    with pytest.raises(ShapeError, match="TensorRT refused the input shape"):
        runner._bind_inputs(feed())


def test_output_shapes_are_unresolved_until_the_dynamic_inputs_have_shapes(runner):
    with pytest.raises(ShapeError) as info:
        runner._output_shapes()
    assert "output shape unresolved" in str(info.value)
    assert "['imgs', 'depth_values']" in str(info.value)


def test_static_engine_needs_no_profile(trt, tmp_path):
    static = [
        {"name": "imgs", "mode": "INPUT", "shape": [1, 3, 3, 128, 160], "dtype": "FLOAT"},
        {"name": "proj_matrices", "mode": "INPUT", "shape": [1, 3, 4, 4], "dtype": "FLOAT"},
        {"name": "inverse_proj_matrices", "mode": "INPUT", "shape": [1, 3, 4, 4], "dtype": "FLOAT"},
        {"name": "depth_values", "mode": "INPUT", "shape": [1, 48], "dtype": "FLOAT"},
        {"name": "depth", "mode": "OUTPUT", "shape": [1, 32, 40], "dtype": "FLOAT"},
        {"name": "photometric_confidence", "mode": "OUTPUT", "shape": [1, 32, 40], "dtype": "FLOAT"},
    ]
    runner = TrtRunner(write_plan(trt, tmp_path, static)).prepare()
    assert runner._output_shapes() == {"depth": (1, 32, 40), "photometric_confidence": (1, 32, 40)}
    runner._bind_inputs(feed())
    assert trt.called("get_tensor_profile_shape") == []
    with pytest.raises(ShapeError, match="between \\(1, 3, 3, 128, 160\\) and \\(1, 3, 3, 128, 160\\)"):
        runner._bind_inputs(feed(height=160))


# -- buffers ---------------------------------------------------------------------------------

def test_aligned_keeps_an_aligned_contiguous_tensor_and_copies_otherwise():
    buffer = torch.arange(1024, dtype=torch.float32)
    offset = (-buffer.data_ptr() % ALIGNMENT) // buffer.element_size()
    aligned = buffer[offset:offset + 64]
    assert aligned.data_ptr() % ALIGNMENT == 0
    assert _aligned(aligned) is aligned

    misaligned = buffer[offset + 1:offset + 65]
    copied = _aligned(misaligned)
    assert copied.data_ptr() != misaligned.data_ptr()
    assert torch.equal(copied, misaligned)

    transposed = buffer[:64].reshape(8, 8).t()
    dense = _aligned(transposed)
    assert dense.is_contiguous() and torch.equal(dense, transposed)


def test_cuda_graph_mode_needs_torch_buffers(trt, tmp_path):
    with pytest.raises(InvalidArgument, match="needs torch buffers"):
        TrtRunner(write_plan(trt, tmp_path), buffers="pycuda", cuda_graph=True)
