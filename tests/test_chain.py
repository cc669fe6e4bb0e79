"""Unit tests of harness/chain.py: legs, devices, and one chain on the small case."""

from __future__ import annotations

import pytest
import torch

from harness import chain as chain_module
from harness.chain import BUNDLED_WEIGHTS, Chain, ChainConfig, Leg, LegResult, plan_legs, resolve_device, run_leg
from harness.errors import BackendUnavailable, InvalidArgument
from harness.gates.limits import Tolerances

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


def _shared_cache(tmp_path_factory):
    # a temporary cache shared with the other modules that export the same small graph
    return tmp_path_factory.getbasetemp() / "shared-onnx-cache"


@pytest.fixture(scope="module")
def small_chain(tmp_path_factory):
    chain = Chain(ChainConfig(cache_dir=_shared_cache(tmp_path_factory), device="cpu"))
    yield chain
    chain.close()


LEG = Leg("ort-cpu", "raw", "precomputed", "torchscript", "small")


# -- legs -------------------------------------------------------------------------------------

def test_leg_id_names_every_axis():
    assert LEG.id == "ort-cpu-raw-vs-torch-fp32-precomputed-torchscript-small"


def test_leg_precision_is_the_candidates_precision():
    assert LEG.precision == "fp32"
    assert Leg("ort-cuda", "raw", "precomputed", "torchscript", "small").precision == "fp32"
    assert Leg("trt-fp16", "raw", "precomputed", "torchscript", "small").precision == "fp16"
    assert Leg("trt-fp32", "raw", "precomputed", "torchscript", "small").precision == "fp32"


def test_plan_legs_counts_the_product_of_the_axes():
    legs = plan_legs(("small", "seed"), ("precomputed", "closed_form"), ("torchscript", "dynamo"),
                     ("raw", "simplified"), ("ort-cpu", "ort-cuda"))
    assert len(legs) == 2 * 2 * 2 * 2 * 2
    assert len({leg.id for leg in legs}) == len(legs)


def test_plan_legs_orders_case_candidate_variant_workaround_exporter():
    legs = plan_legs(("small", "seed"), ("precomputed", "closed_form"), ("torchscript",), ("raw", "simplified"),
                     ("ort-cpu", "ort-cuda"))
    assert legs[0] == Leg("ort-cpu", "raw", "precomputed", "torchscript", "small")
    assert legs[1] == Leg("ort-cpu", "raw", "closed_form", "torchscript", "small")
    assert legs[2] == Leg("ort-cpu", "simplified", "precomputed", "torchscript", "small")
    assert legs[4] == Leg("ort-cuda", "raw", "precomputed", "torchscript", "small")
    assert [leg.case for leg in legs] == ["small"] * 8 + ["seed"] * 8


def test_plan_legs_with_an_empty_axis_is_empty():
    assert plan_legs(("small",), (), ("torchscript",), ("raw",), ("ort-cpu",)) == []


# -- devices ----------------------------------------------------------------------------------

@needs_no_cuda
def test_auto_device_is_cpu_without_cuda():
    assert resolve_device("auto") == torch.device("cpu")


def test_cpu_device_is_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


@needs_no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_device_without_cuda_is_unavailable(device):
    with pytest.raises(BackendUnavailable) as info:
        resolve_device(device)
    assert info.value.missing == "no CUDA device"
    assert "--device cpu" in str(info.value) and "--harness-" not in str(info.value)  # the CLI spelling; fronts translate


def test_unknown_device_is_an_invalid_argument():
    with pytest.raises(InvalidArgument, match="unknown device"):
        resolve_device("tpu")


@needs_no_cuda
def test_chain_on_cuda_without_cuda_is_unavailable(tmp_path):
    with pytest.raises(BackendUnavailable):
        Chain(ChainConfig(cache_dir=tmp_path, device="cuda"))


# -- one chain on the small case ---------------------------------------------------------------

def test_chain_defaults_to_the_bundled_weights(small_chain):
    assert small_chain.weights_path == BUNDLED_WEIGHTS
    assert small_chain.cache.root.name == "shared-onnx-cache"
    assert len(small_chain.weights_digest) == 64


def test_feeds_per_workaround(small_chain):
    assert tuple(small_chain.workaround_feed("small", "precomputed")) == (
        "imgs", "proj_matrices", "inverse_proj_matrices", "depth_values")
    assert tuple(small_chain.workaround_feed("small", "closed_form")) == ("imgs", "proj_matrices", "depth_values")
    assert "inverse_proj_matrices" not in small_chain.reference_feed("small")
    assert small_chain.feed("small")["imgs"].shape == (1, 3, 3, 128, 160)
    assert small_chain.feed("small")["depth_values"].shape == (1, 48)


def test_small_onnx_is_built_once_and_memoised(tmp_path_factory, monkeypatch):
    calls = []

    class CountingOnnxFromTorch(chain_module.OnnxFromTorch):
        def __call__(self):
            calls.append(self.config.label)
            return super().__call__()

    monkeypatch.setattr(chain_module, "OnnxFromTorch", CountingOnnxFromTorch)
    chain = Chain(ChainConfig(cache_dir=_shared_cache(tmp_path_factory), device="cpu"))
    first = chain.onnx("small", "precomputed", "torchscript")
    second = chain.onnx("small", "precomputed", "torchscript", "raw")
    assert second is first
    assert len(calls) == 1 and calls[0].startswith("torchscript-op17-precomputed")
    assert first.path.is_file()
    assert chain.cache.root in first.path.parents
    assert first.config.opset == chain.config.opset == 17
    assert first.audit["opset"] == 17
    chain.close()


def test_unknown_variant_is_an_invalid_argument(small_chain):
    with pytest.raises(InvalidArgument, match="unknown variant"):
        small_chain.onnx("small", "precomputed", "torchscript", "optimised")


def test_run_leg_passes_and_gives_a_row_with_metrics(small_chain):
    result = run_leg(small_chain, LEG, Tolerances.load())
    assert isinstance(result, LegResult)
    assert result.passed, "\n".join(d.row() for d in result.diffs.values())
    row = result.row()
    assert row["id"] == LEG.id
    assert row["passed"] is True
    assert (row["case"], row["candidate"], row["reference"], row["variant"]) == ("small", "ort-cpu", "torch-fp32", "raw")
    assert set(row["metrics"]) == {"depth", "photometric_confidence"}
    assert {"max_sq_err", "max_abs", "frac_over_1mm", "index_flips"} <= set(row["metrics"]["depth"])
    assert {"agreement", "max_sq_err_stable"} <= set(row["metrics"]["photometric_confidence"])
    assert row["tolerance"]["depth"]  # gated by the committed tolerances
    assert row["artifact"]["opset"] == 17
    assert row["artifact"]["cache"] in ("hit", "miss")
    assert len(row["artifact"]["onnx_sha256"]) == 16


def test_reference_outputs_are_computed_once(small_chain):
    assert small_chain.reference_outputs("small") is small_chain.reference_outputs("small")


def test_runners_are_memoised(small_chain):
    runner = small_chain.candidate_runner(LEG)
    assert small_chain.candidate_runner(LEG) is runner
    assert runner.name == "ort-cpu-raw"


@needs_no_cuda
def test_ort_cuda_candidate_is_unavailable(small_chain):
    leg = Leg("ort-cuda", "raw", "precomputed", "torchscript", "small")
    with pytest.raises(BackendUnavailable) as info:
        run_leg(small_chain, leg, Tolerances.load())
    assert info.value.missing == "no CUDA device"
    assert info.value.backend == "ort-cuda"


def test_unknown_candidate_is_unavailable(small_chain):
    leg = Leg("openvino-cpu", "raw", "precomputed", "torchscript", "small")
    with pytest.raises(BackendUnavailable, match="no backend named openvino-cpu"):
        small_chain.candidate_runner(leg)


def test_ort_as_shipped_is_a_tf32_leg_of_the_fp32_graph():
    from harness.chain import CANDIDATES

    leg = Leg("ort-cuda-default", "simplified", "precomputed", "torchscript", "small")
    assert "ort-cuda-default" in CANDIDATES
    assert leg.precision == "tf32" and leg.graph_precision == "fp32"
    assert Leg("ort-cuda", "raw", "precomputed", "torchscript", "small").precision == "fp32"


def test_a_backend_that_consumes_the_model_is_not_crossed_with_graph_axes():
    legs = plan_legs(("small", "seed"), ("precomputed", "closed_form"), ("torchscript", "dynamo"), ("raw", "simplified"),
                     ("torch-fast-fp16", "ort-cpu"))
    fast = [leg for leg in legs if leg.candidate == "torch-fast-fp16"]
    assert [leg.id for leg in fast] == ["torch-fast-fp16-vs-torch-fp32-small", "torch-fast-fp16-vs-torch-fp32-seed"]
    assert all(leg.consumes == "model" and leg.precision == "fp16" for leg in fast)
    assert len(legs) - len(fast) == 2 * 2 * 2 * 2  # ort-cpu: cases x workarounds x exporters x variants


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only skip")
def test_the_fast_torch_leg_skips_without_a_gpu_naming_it(small_chain):
    leg = plan_legs(("small",), ("precomputed",), ("torchscript",), ("raw",), ("torch-fast-fp16",))[0]
    with pytest.raises(BackendUnavailable, match="no CUDA device") as info:
        run_leg(small_chain, leg, Tolerances.load())
    assert info.value.backend == "torch-fast-fp16"
