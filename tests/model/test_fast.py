"""Unit tests of harness/model/fast.py: batch norm folded into the (de)convolutions computes the
same function as the original MVSNet in eval mode, and the source model is left untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from harness.chain import BUNDLED_WEIGHTS
from harness.compare import compare
from harness.data.cases import case_feed, case_views, get_case
from harness.model.checkpoint import load_checkpoint, state_dict_digest
from harness.model.fast import fast_model, fold_batch_norm
from harness.model.layers import ConvBnReLU, ConvBnReLU3D
from harness.model.mvsnet import OUTPUT_NAMES, MVSNet, to_mixed_precision

CPU = torch.device("cpu")
BN_COUNT = 17  # FeatureNet: 7 ConvBnReLU; CostRegNet: 7 ConvBnReLU3D + 3 deconv blocks


def _perturb_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial frozen statistics and affine parameters in every batch norm (seeded), so a
    fold that ignores the mean, variance, weight or bias (or picks the wrong axis) shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(c, generator=gen) * 0.2)
    return model


def _batch_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.fixture(scope="module")
def perturbed() -> MVSNet:
    """The bundled weights with perturbed batch norms (eval). Shared: do not modify."""
    return _perturb_batch_norms(load_checkpoint(BUNDLED_WEIGHTS)).eval()


@pytest.fixture(scope="module")
def small_feed() -> dict[str, torch.Tensor]:
    case = get_case("small")
    return case_feed(case, case_views(case), with_inverse=False)


def _run(model: nn.Module, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(feed["imgs"], feed["proj_matrices"], feed["depth_values"])


def _max_abs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], name: str) -> float:
    return float((a[name].float() - b[name].float()).abs().max())


def test_perturbation_changes_the_outputs(perturbed, small_feed):
    """Guard: the statistics are non-trivial, so the parity tests below test something."""
    plain = load_checkpoint(BUNDLED_WEIGHTS)
    assert _max_abs(_run(plain, small_feed), _run(perturbed, small_feed), "depth") > 1.0


def test_folded_model_matches_the_original_within_1e_4_mm(perturbed, small_feed):
    # Convolutions in float64 (the geometry, softmax and regression stay float32 and are the same
    # code on both sides): the fold is exact math, so only float64 rounding may differ.
    original = to_mixed_precision(perturbed, torch.float64)
    reference, folded = _run(original, small_feed), _run(fold_batch_norm(original), small_feed)
    assert set(folded) == set(OUTPUT_NAMES)
    assert folded["depth"].shape == reference["depth"].shape == (1, 32, 40)
    assert _max_abs(reference, folded, "depth") <= 1e-4
    assert _max_abs(reference, folded, "photometric_confidence") <= 1e-6


def _float32_fold_failures(reference: dict[str, torch.Tensor], folded: dict[str, torch.Tensor],
                           depth_values: torch.Tensor) -> list[str]:
    """What breaks float32 parity of a folded model, as text (empty: parity holds).

    Depth is compared on every pixel. The confidence is gathered at the *truncated* expected
    index, so where that index sits near an integer a rounding-level depth difference moves the
    window by a whole hypothesis (a change of up to ~0.02 seen on some machines): it is compared
    only over pixels whose index is not near a boundary in either output (``harness.compare``,
    as every gate does), and the pixels whose truncated index actually differs must be few."""
    diffs = compare(reference, folded, depth_values=depth_values)
    depth, confidence = diffs["depth"].metrics, diffs["photometric_confidence"].metrics
    checks = {
        # folded weights round differently (w * g / sqrt(v + eps) before the convolution): measured
        # 3.4e-3 mm (one machine) to 7.8e-3 mm (another) max on the small case; depth spans 425-935 mm
        "depth max |difference| (mm)": (depth["max_abs"], 2e-2),
        "depth mean |difference| (mm)": (depth["mean_abs"], 1e-3),
        "confidence max |difference| off index boundaries": (confidence["max_sq_err_stable"] ** 0.5, 1e-4),
        "pixels whose truncated index differs": (depth["index_flips"], 3.0),
        "fraction of pixels near an index boundary": (depth["near_boundary"], 0.1),
    }
    return [f"{name} {value:.3g} > {limit:.3g}" for name, (value, limit) in checks.items() if not value <= limit]


def test_folded_model_matches_the_original_in_float32(perturbed, small_feed):
    reference, folded = _run(perturbed, small_feed), _run(fold_batch_norm(perturbed), small_feed)
    assert _float32_fold_failures(reference, folded, small_feed["depth_values"]) == []


@pytest.mark.parametrize("bn", ["feature.conv3.bn", "cost_regularization.conv0.bn"])
def test_float32_fold_parity_catches_a_wrong_batch_norm_epsilon(perturbed, small_feed, bn):
    # a fold that used eps 1e-4 instead of BatchNorm's 1e-5 in one layer (measured: depth off by
    # 0.03 mm through FeatureNet, 0.13 mm through CostRegNet): the metric above must see it
    wrong = copy.deepcopy(perturbed)
    wrong.get_submodule(bn).eps = 1e-4
    reference, folded = _run(perturbed, small_feed), _run(fold_batch_norm(wrong), small_feed)
    assert _float32_fold_failures(reference, folded, small_feed["depth_values"])


def test_fast_model_in_fp32_matches_the_original(perturbed, small_feed):
    original = to_mixed_precision(perturbed, torch.float64)
    fast = fast_model(original, CPU, half=False)
    reference, out = _run(original, small_feed), _run(fast, small_feed)
    assert _max_abs(reference, out, "depth") <= 1e-4
    assert _max_abs(reference, out, "photometric_confidence") <= 1e-6


def test_fast_model_fp32_keeps_float32_convolutions_and_channels_last(perturbed, small_feed):
    fast = fast_model(perturbed, CPU, half=False)
    assert not fast.training
    assert fast.low_precision is None
    assert all(p.dtype == torch.float32 for p in fast.parameters())
    assert not _batch_norms(fast)
    weight = fast.feature.conv0.conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    reference, out = _run(perturbed, small_feed), _run(fast, small_feed)
    assert _max_abs(reference, out, "depth") <= 2e-2


def test_fold_replaces_every_batch_norm_with_identity(perturbed):
    assert len(_batch_norms(perturbed)) == BN_COUNT
    folded = fold_batch_norm(perturbed)
    assert _batch_norms(folded) == []
    assert sum(isinstance(m, nn.Identity) for m in folded.modules()) == BN_COUNT
    assert not any(".bn.running_mean" in k or k.endswith(".1.running_var") for k in folded.state_dict())


def test_folded_convolutions_carry_the_batch_norm_shift_as_bias(perturbed):
    folded = fold_batch_norm(perturbed)
    bn = perturbed.feature.conv0.bn
    conv = folded.feature.conv0.conv
    assert perturbed.feature.conv0.conv.bias is None
    assert conv.bias is not None
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(conv.bias, bn.bias - bn.running_mean * scale)
    torch.testing.assert_close(conv.weight, perturbed.feature.conv0.conv.weight * scale.view(-1, 1, 1, 1))


def test_fold_leaves_the_source_model_untouched(perturbed, small_feed):
    source = copy.deepcopy(perturbed).train()
    digest = state_dict_digest(source)
    folded = fold_batch_norm(source)
    assert state_dict_digest(source) == digest
    assert len(_batch_norms(source)) == BN_COUNT
    assert source.training  # its mode too
    assert not folded.training
    assert source.feature.conv0.conv is not folded.feature.conv0.conv
    assert source.feature.conv0.conv.bias is None


def test_fast_model_leaves_the_source_model_untouched(perturbed):
    digest = state_dict_digest(perturbed)
    fast_model(perturbed, CPU, half=True)
    assert state_dict_digest(perturbed) == digest
    assert all(p.dtype == torch.float32 for p in perturbed.parameters())
    assert perturbed.low_precision is None


def test_fast_model_half_runs_convolutions_in_fp16(perturbed):
    fast = fast_model(perturbed, CPU, half=True)
    assert fast.low_precision == torch.float16
    assert fast.feature.conv0.conv.weight.dtype == torch.float16
    assert not _batch_norms(fast)


# -- single blocks -------------------------------------------------------------------------------

def _check_fold(block: nn.Module, x: torch.Tensor) -> None:
    _perturb_batch_norms(block, seed=1)
    block.eval()
    with torch.no_grad():
        expected = block(x)
        folded = fold_batch_norm(block)  # type: ignore[arg-type]  # any module works
        got = folded(x)
    assert not _batch_norms(folded)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("cin", "cout"), [(4, 6), (5, 5)])
@pytest.mark.parametrize("bias", [False, True])
def test_conv_transpose_fold_scales_the_output_channel_axis(cin, cout, bias):
    # ConvTranspose weights are [in, out, k, k, k]: the batch-norm scale belongs on dim 1. With
    # cin == cout a fold on dim 0 would run and silently compute another function.
    torch.manual_seed(0)
    block = nn.Sequential(
        nn.ConvTranspose3d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=bias),
        nn.BatchNorm3d(cout),
    ).double()
    x = torch.randn(2, cin, 4, 6, 8, dtype=torch.float64)
    _check_fold(block, x)
    folded = fold_batch_norm(block)  # type: ignore[arg-type]
    assert isinstance(folded[0], nn.ConvTranspose3d) and isinstance(folded[1], nn.Identity)
    assert folded[0].weight.shape == (cin, cout, 3, 3, 3)


def test_conv_bn_relu_2d_fold_matches():
    torch.manual_seed(0)
    _check_fold(ConvBnReLU(3, 8, 5, 2, 2).double(), torch.randn(2, 3, 16, 20, dtype=torch.float64))


def test_conv_bn_relu_3d_fold_matches():
    torch.manual_seed(0)
    _check_fold(ConvBnReLU3D(4, 6, stride=2).double(), torch.randn(1, 4, 8, 8, 8, dtype=torch.float64))
