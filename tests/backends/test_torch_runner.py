"""Unit tests of harness/backends/torch_runner.py (CPU; CUDA-only precisions must refuse here)."""

from __future__ import annotations

import pytest
import torch

from harness.backends.torch_runner import PRECISIONS, TorchRunner, tf32_state
from harness.convert.workarounds import INPUTS_WITH_INVERSE, INPUTS_WITHOUT_INVERSE
from harness.data.cases import case_feed, case_views, get_case
from harness.errors import BackendUnavailable, HarnessError, InvalidArgument, InvalidInput

SMALL = get_case("small")
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


@pytest.fixture(scope="module")
def feed():
    return case_feed(SMALL, case_views(SMALL), with_inverse=True)


@pytest.fixture(scope="module")
def three_input_outputs(model, feed):
    runner = TorchRunner(model, "cpu", "fp32")
    with runner:
        return runner.infer({k: v for k, v in feed.items() if k != "inverse_proj_matrices"})


@needs_no_cuda
@pytest.mark.parametrize("precision", ["tf32", "fp16"])
def test_reduced_precisions_need_cuda(model, precision):
    with pytest.raises(BackendUnavailable) as info:
        TorchRunner(model, "cpu", precision)
    assert "CUDA" in info.value.missing
    assert info.value.backend == f"torch-{precision}"


@needs_no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_device_without_cuda_is_unavailable(model, device):
    with pytest.raises(BackendUnavailable) as info:
        TorchRunner(model, device, "fp32")
    assert info.value.missing == "no CUDA device"
    assert isinstance(info.value, HarnessError) and isinstance(info.value, RuntimeError)


def test_unknown_precision_is_an_invalid_argument(model):
    with pytest.raises(InvalidArgument, match="unknown precision") as info:
        TorchRunner(model, "cpu", "bf16")  # type: ignore[arg-type]
    for precision in PRECISIONS:
        assert precision in str(info.value)


def test_input_names_follow_with_inverse(model):
    assert TorchRunner(model).input_names == INPUTS_WITHOUT_INVERSE
    assert TorchRunner(model, with_inverse=True).input_names == INPUTS_WITH_INVERSE


def test_name_and_describe(model):
    runner = TorchRunner(model, "cpu", "fp32", with_inverse=True)
    assert runner.name == "torch-fp32"
    info = runner.describe()
    assert info["runtime"] == "torch"
    assert info["torch"] == torch.__version__
    assert info["precision"] == "fp32"
    assert info["tf32"] is False
    assert info["inverse"] == "input"
    assert TorchRunner(model).describe()["inverse"] == "torch.inverse"


def test_outputs_are_a_dict_of_depth_and_confidence(three_input_outputs):
    assert set(three_input_outputs) == {"depth", "photometric_confidence"}
    for tensor in three_input_outputs.values():
        assert tensor.shape == (1, SMALL.height // 4, SMALL.width // 4)
        assert tensor.dtype == torch.float32
        assert bool(torch.isfinite(tensor).all())
    confidence = three_input_outputs["photometric_confidence"]
    assert float(confidence.min()) >= 0.0 and float(confidence.max()) <= 1.0 + 1e-5


def test_depth_lies_within_the_hypotheses(three_input_outputs, feed):
    depth = three_input_outputs["depth"]
    values = feed["depth_values"]
    assert float(depth.min()) >= float(values.min()) - 1e-3
    assert float(depth.max()) <= float(values.max()) + 1e-3


def test_fed_inverse_gives_the_same_outputs_as_torch_inverse(model, feed, three_input_outputs):
    with TorchRunner(model, "cpu", "fp32", with_inverse=True) as runner:
        fed = runner.infer(feed)
    # float32 storage of the float64 inverse vs torch.inverse in float32: tiny differences
    torch.testing.assert_close(fed["depth"], three_input_outputs["depth"], rtol=0, atol=0.05)
    torch.testing.assert_close(fed["photometric_confidence"], three_input_outputs["photometric_confidence"],
                               rtol=0, atol=1e-3)


def test_infer_refuses_a_feed_for_another_runner(model, feed):
    with pytest.raises(InvalidInput, match="unexpected"):
        TorchRunner(model).infer(feed)


def test_tf32_state_sets_and_restores_the_global_flags():
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = True
        with tf32_state(True):  # PyTorch's default: TF32 convolutions, FP32 matmuls (the projection math)
            assert torch.backends.cudnn.allow_tf32 is True
            assert torch.backends.cuda.matmul.allow_tf32 is False
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, True)
        with tf32_state(True, matmuls=True):
            assert torch.backends.cuda.matmul.allow_tf32 is True
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, True)
        with tf32_state(False):
            assert torch.backends.cudnn.allow_tf32 is False
            assert torch.backends.cuda.matmul.allow_tf32 is False
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_tf32_state_restores_the_flags_after_an_exception():
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with pytest.raises(RuntimeError, match="boom"), tf32_state(not saved[0]):
        raise RuntimeError("boom")
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == saved


# -- torch-fast-fp16: its compile settings (the compile itself needs CUDA) ---------------------

def test_the_fast_path_compiles_in_inductors_default_mode_and_caches_in_the_harness_cache():
    import inspect

    from harness.backends import registry
    from harness.backends.torch_runner import TorchFastRunner

    assert inspect.signature(TorchFastRunner).parameters["compile_mode"].default == "default"  # no minutes of autotuning
    assert registry.get("torch-fast-fp16").context == ("cache_dir",)


@pytest.mark.parametrize("mode, cuda_graph, problem", [
    ("fastest", True, "unknown torch.compile mode"),
    ("reduce-overhead", True, "Inductor's CUDA graphs inside the runner's own capture"),
    ("max-autotune", True, "Inductor's CUDA graphs inside the runner's own capture"),
])
def test_a_compile_mode_it_cannot_use_is_an_invalid_argument(model, mode, cuda_graph, problem):
    from harness.backends.torch_runner import TorchFastRunner

    with pytest.raises(InvalidArgument, match=problem) as caught:
        TorchFastRunner(model, "cuda", compile_mode=mode, cuda_graph=cuda_graph)
    assert caught.value.observed == mode and caught.value.fix


@needs_no_cuda
@pytest.mark.parametrize("mode", ["default", "max-autotune-no-cudagraphs", None])
def test_a_usable_compile_mode_gets_past_the_check_to_the_cuda_refusal(model, mode):
    from harness.backends.torch_runner import TorchFastRunner

    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        TorchFastRunner(model, "cuda", compile_mode=mode)
    with pytest.raises(BackendUnavailable, match="no CUDA device"):  # Inductor's graphs without the runner's
        TorchFastRunner(model, "cuda", compile_mode="reduce-overhead", cuda_graph=False)


def test_the_fast_runner_compiles_each_shape_quietly_into_its_record(capfd, tmp_path, monkeypatch):
    """The runner's own wiring, on CPU: its constructor needs CUDA, so it is bypassed and its
    compiled function is a fake that prints and warns on the first call for a shape only."""
    import os
    import warnings

    from harness.backends.base import Runner
    from harness.backends.compiling import INDUCTOR_CACHE_ENV
    from harness.backends.torch_runner import TorchFastRunner

    monkeypatch.delenv(INDUCTOR_CACHE_ENV, raising=False)
    runner = TorchFastRunner.__new__(TorchFastRunner)
    Runner.__init__(runner)  # the base's state; the fast runner's below
    runner.name, runner.precision, runner.compile_mode, runner.cuda_graph = "torch-fast-fp16", "fp16", "default", False
    runner.inductor_cache = tmp_path / "inductor"
    runner._warm, runner._log, runner._compile_s = set(), [], 0.0
    compiled: set[tuple[int, ...]] = set()
    seen_cache: list[str | None] = []

    def fake_compiled(imgs, proj, depth_values):
        if tuple(imgs.shape) not in compiled:  # what Inductor does at a shape's first call
            compiled.add(tuple(imgs.shape))
            seen_cache.append(os.environ.get(INDUCTOR_CACHE_ENV))
            print(f"AUTOTUNE convolution {tuple(imgs.shape)}")
            warnings.warn("TensorFloat32 tensor cores are available but not enabled", UserWarning, stacklevel=1)
        return {"depth": imgs.mean((1, 2)), "photometric_confidence": imgs.mean((1, 2))}

    runner.fn = fake_compiled
    for shape in [(1, 3, 3, 8, 8), (1, 3, 3, 8, 8), (1, 3, 3, 16, 8)]:
        runner._infer({"imgs": torch.rand(shape), "proj_matrices": torch.rand(1, 3, 4, 4), "depth_values": torch.rand(1, 4)})
    assert capfd.readouterr() == ("", "")
    assert len(runner._warm) == 2 and seen_cache == [str((tmp_path / "inductor").resolve())] * 2
    record = runner.describe()
    assert record["compile_log"] == ["UserWarning: TensorFloat32 tensor cores are available but not enabled",  # once
                                     "AUTOTUNE convolution (1, 3, 3, 8, 8)", "AUTOTUNE convolution (1, 3, 3, 16, 8)"]
    assert record["compile_mode"] == "default" and record["compile_seconds"] >= 0
    assert os.environ.get(INDUCTOR_CACHE_ENV) is None  # put back after each compile
