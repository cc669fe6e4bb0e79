"""MVSNet's building blocks: state-dict keys and shapes of MVSNet_pytorch, layer wiring, output shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from harness.model.layers import ConvBnReLU, ConvBnReLU3D, CostRegNet, FeatureNet
from harness.model.mvsnet import MVSNet

# The tables of MVSNET_SPEC.md, written out independently of harness/model/layers.py.
# FeatureNet: key, in channels, out channels, kernel, stride, padding.
FEATURE_TABLE = [
    ("conv0", 3, 8, 3, 1, 1),
    ("conv1", 8, 8, 3, 1, 1),
    ("conv2", 8, 16, 5, 2, 2),
    ("conv3", 16, 16, 3, 1, 1),
    ("conv4", 16, 16, 3, 1, 1),
    ("conv5", 16, 32, 5, 2, 2),
    ("conv6", 32, 32, 3, 1, 1),
]
# CostRegNet ConvBnReLU3D blocks: key, in channels, out channels, stride (kernel 3, padding 1).
COSTREG_TABLE = [
    ("conv0", 32, 8, 1),
    ("conv1", 8, 16, 2),
    ("conv2", 16, 16, 1),
    ("conv3", 16, 32, 2),
    ("conv4", 32, 32, 1),
    ("conv5", 32, 64, 2),
    ("conv6", 64, 64, 1),
]
# CostRegNet transposed-convolution blocks: key, in channels, out channels.
DECONV_TABLE = [("conv7", 64, 32), ("conv9", 32, 16), ("conv11", 16, 8)]
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn_entries(prefix: str, channels: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.{s}", () if s == "num_batches_tracked" else (channels,)) for s in BN_SUFFIXES]


def mvsnet_pytorch_state_dict_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """Keys (in registration order) and shapes of MVSNet_pytorch's ``MVSNet(refine=False)``."""
    entries: list[tuple[str, tuple[int, ...]]] = []
    for key, cin, cout, kernel, _, _ in FEATURE_TABLE:
        entries.append((f"feature.{key}.conv.weight", (cout, cin, kernel, kernel)))
        entries += _bn_entries(f"feature.{key}.bn", cout)
    entries += [("feature.feature.weight", (32, 32, 3, 3)), ("feature.feature.bias", (32,))]
    for key, cin, cout, _ in COSTREG_TABLE:
        entries.append((f"cost_regularization.{key}.conv.weight", (cout, cin, 3, 3, 3)))
        entries += _bn_entries(f"cost_regularization.{key}.bn", cout)
    for key, cin, cout in DECONV_TABLE:
        # ConvTranspose3d stores its weight as [in, out, k, k, k].
        entries.append((f"cost_regularization.{key}.0.weight", (cin, cout, 3, 3, 3)))
        entries += _bn_entries(f"cost_regularization.{key}.1", cout)
    entries += [("cost_regularization.prob.weight", (1, 8, 3, 3, 3)), ("cost_regularization.prob.bias", (1,))]
    return entries


def test_state_dict_keys_match_mvsnet_pytorch_in_order():
    expected = [key for key, _ in mvsnet_pytorch_state_dict_shapes()]
    assert list(MVSNet().state_dict()) == expected


def test_state_dict_shapes_match_mvsnet_pytorch():
    state = MVSNet().state_dict()
    wrong = {
        key: (tuple(state[key].shape), shape)
        for key, shape in mvsnet_pytorch_state_dict_shapes()
        if key in state and tuple(state[key].shape) != shape
    }
    assert wrong == {}


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        ("feature.conv0.conv.weight", (8, 3, 3, 3)),
        ("feature.conv2.conv.weight", (16, 8, 5, 5)),
        ("feature.conv5.conv.weight", (32, 16, 5, 5)),
        ("feature.feature.weight", (32, 32, 3, 3)),
        ("cost_regularization.conv0.conv.weight", (8, 32, 3, 3, 3)),
        ("cost_regularization.conv5.conv.weight", (64, 32, 3, 3, 3)),
        ("cost_regularization.conv7.0.weight", (64, 32, 3, 3, 3)),
        ("cost_regularization.conv11.1.running_var", (8,)),
        ("cost_regularization.prob.weight", (1, 8, 3, 3, 3)),
    ],
)
def test_named_weight_has_mvsnet_pytorch_shape(key, shape):
    assert tuple(MVSNet().state_dict()[key].shape) == shape


def test_only_the_feature_head_and_prob_layer_have_biases():
    biased = sorted(name for name, module in MVSNet().named_modules()
                    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d)) and module.bias is not None)
    assert biased == ["cost_regularization.prob", "feature.feature"]


@pytest.mark.parametrize(("key", "cin", "cout", "kernel", "stride", "pad"), FEATURE_TABLE)
def test_feature_net_block_has_table_geometry(key, cin, cout, kernel, stride, pad):
    block = getattr(FeatureNet(), key)
    assert isinstance(block, ConvBnReLU)
    conv = block.conv
    assert (conv.in_channels, conv.out_channels) == (cin, cout)
    assert conv.kernel_size == (kernel, kernel)
    assert conv.stride == (stride, stride)
    assert conv.padding == (pad, pad)
    assert isinstance(block.bn, nn.BatchNorm2d) and block.bn.num_features == cout


@pytest.mark.parametrize(("key", "cin", "cout", "stride"), COSTREG_TABLE)
def test_cost_regnet_block_has_table_geometry(key, cin, cout, stride):
    block = getattr(CostRegNet(), key)
    assert isinstance(block, ConvBnReLU3D)
    conv = block.conv
    assert (conv.in_channels, conv.out_channels) == (cin, cout)
    assert conv.kernel_size == (3, 3, 3)
    assert conv.stride == (stride,) * 3
    assert conv.padding == (1, 1, 1)
    assert isinstance(block.bn, nn.BatchNorm3d)


@pytest.mark.parametrize(("key", "cin", "cout"), DECONV_TABLE)
def test_cost_regnet_upsampling_block_is_deconv_bn_relu_doubling_the_size(key, cin, cout):
    block = getattr(CostRegNet(), key)
    assert isinstance(block, nn.Sequential) and len(block) == 3
    deconv, bn, relu = block
    assert isinstance(deconv, nn.ConvTranspose3d)
    assert (deconv.in_channels, deconv.out_channels) == (cin, cout)
    assert deconv.kernel_size == (3, 3, 3)
    assert deconv.stride == (2, 2, 2)
    assert deconv.padding == (1, 1, 1)
    assert deconv.output_padding == (1, 1, 1)
    assert deconv.bias is None
    assert isinstance(bn, nn.BatchNorm3d) and bn.num_features == cout
    assert isinstance(relu, nn.ReLU)
    with torch.no_grad():
        out = block.eval()(torch.randn(1, cin, 2, 3, 4, generator=torch.Generator().manual_seed(0)))
    assert tuple(out.shape) == (1, cout, 4, 6, 8)


def _randomise_batch_norm(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                bn.weight.copy_(torch.rand(bn.weight.shape, generator=gen) + 0.5)
                bn.bias.copy_(torch.randn(bn.bias.shape, generator=gen) * 0.3)
                bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=gen) * 0.2)
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) + 0.5)


def test_conv_bn_relu_is_convolution_then_batch_norm_then_relu():
    torch.manual_seed(0)
    block = ConvBnReLU(3, 8, kernel=5, stride=2, pad=2)
    _randomise_batch_norm(block, seed=1)
    block.eval()
    x = torch.randn(2, 3, 16, 20, generator=torch.Generator().manual_seed(2))
    bn = block.bn
    expected = F.relu(
        F.batch_norm(F.conv2d(x, block.conv.weight, None, stride=2, padding=2),
                     bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    )
    with torch.no_grad():
        out = block(x)
    assert tuple(out.shape) == (2, 8, 8, 10)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert bool((out == 0).any()) and bool((out > 0).any())


def test_conv_bn_relu_3d_is_convolution_then_batch_norm_then_relu():
    torch.manual_seed(0)
    block = ConvBnReLU3D(4, 6, stride=2)
    _randomise_batch_norm(block, seed=1)
    block.eval()
    x = torch.randn(1, 4, 8, 8, 12, generator=torch.Generator().manual_seed(2))
    bn = block.bn
    expected = F.relu(
        F.batch_norm(F.conv3d(x, block.conv.weight, None, stride=2, padding=1),
                     bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    )
    with torch.no_grad():
        out = block(x)
    assert tuple(out.shape) == (1, 6, 4, 4, 6)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("height", "width"), [(64, 96), (128, 160)])
def test_feature_net_maps_rgb_to_32_channels_at_quarter_resolution(height, width):
    torch.manual_seed(0)
    net = FeatureNet().eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1)))
    assert tuple(out.shape) == (2, 32, height // 4, width // 4)


def test_feature_net_output_layer_is_not_rectified():
    # The last layer is a plain convolution with bias (no BN/ReLU): its output takes negative values.
    torch.manual_seed(0)
    net = FeatureNet().eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x)
        hidden = x
        for key, *_ in FEATURE_TABLE:
            hidden = getattr(net, key)(hidden)
        expected = net.feature(hidden)
    assert bool((out < 0).any())
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_cost_regnet_returns_one_logit_channel_at_input_resolution():
    torch.manual_seed(0)
    net = CostRegNet().eval()
    with torch.no_grad():
        out = net(torch.randn(1, 32, 16, 8, 24, generator=torch.Generator().manual_seed(1)))
    assert tuple(out.shape) == (1, 1, 16, 8, 24)


def test_cost_regnet_adds_the_skip_connections_of_mvsnet_pytorch():
    torch.manual_seed(0)
    net = CostRegNet()
    _randomise_batch_norm(net, seed=3)
    net.eval()
    x = torch.randn(1, 32, 8, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # The data flow of the spec, spelled out with the same submodules.
        c0 = net.conv0(x)
        c2 = net.conv2(net.conv1(c0))
        c4 = net.conv4(net.conv3(c2))
        y = net.conv6(net.conv5(c4))
        y = c4 + net.conv7(y)
        y = c2 + net.conv9(y)
        y = c0 + net.conv11(y)
        expected = net.prob(y)
        out = net(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
