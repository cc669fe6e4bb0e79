"""A seeded, documented initialisation that makes an untrained MVSNet see depth.

Random initialisation alone gives a flat probability volume and a constant depth map, and then
any two backends "agree" exactly. This initialisation turns MVSNet into a classical plane-sweep
stereo matcher without training, while every weight stays non-zero so that parity tests
exercise the whole network:

* FeatureNet: channels 0-2 carry an anti-aliased copy of the RGB image at 1/4 resolution
  (binomial blur kernels on the diagonal of each convolution, so the stride-2 layers do not
  alias), scaled by ``FEATURE_GAIN`` in the last layer. Every other weight is seeded Kaiming
  noise times ``NOISE``.
* CostRegNet: ``conv0`` channel 0 averages the 32 variance channels over a 3x3 window in
  (h, w); ``prob`` maps it to ``-SHARPNESS`` x that, so the softmax over D peaks at the most
  photo-consistent hypothesis. Every other weight is seeded Kaiming noise times ``NOISE``.
* Batch norm is the identity (weight 1, bias 0, mean 0, var 1 - eps).

The matcher works best on the seed shape (512x640); at 128x160 the synthetic textures are finer
than the 32x40 feature grid and the depth map is coarse, but it still varies and peaks.
Trained weights (``python -m harness train``) replace it as the default once they exist.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from harness.model.mvsnet import MVSNet

FEATURE_GAIN = 10.0
SHARPNESS = 300.0  # logits per unit of channel-averaged feature variance
NOISE = 0.05
_CARRIED = 3  # RGB


def _binomial(size: int) -> torch.Tensor:
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float32)
    kernel = row[:, None] * row[None, :]
    return kernel / kernel.sum()


def _noise_(weight: torch.Tensor, gen: torch.Generator) -> None:
    fan_in = weight[0].numel()
    weight.copy_(torch.randn(weight.shape, generator=gen) * NOISE * math.sqrt(2.0 / fan_in))


def _identity_bn_(bn: nn.modules.batchnorm._BatchNorm) -> None:
    assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None
    bn.weight.fill_(1.0)
    bn.bias.zero_()
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(var + eps) == x
    bn.num_batches_tracked.zero_()


@torch.no_grad()
def plane_sweep_init(model: MVSNet, seed: int = 0) -> MVSNet:
    """Initialise ``model`` in place as described in the module docstring; returns it in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d)):
            _noise_(module.weight, gen)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            _identity_bn_(module)

    feature = model.feature
    for block in (feature.conv0, feature.conv1, feature.conv2, feature.conv3, feature.conv4, feature.conv5, feature.conv6):
        weight = block.conv.weight
        kernel = _binomial(weight.shape[-1])
        for c in range(_CARRIED):
            weight[c].zero_()
            weight[c, c] = kernel
    for c in range(_CARRIED):
        feature.feature.weight[c].zero_()
        feature.feature.weight[c, c, 1, 1] = FEATURE_GAIN

    reg = model.cost_regularization
    w0 = reg.conv0.conv.weight  # [8, 32, 3, 3, 3]
    w0[0].zero_()
    w0[0, :, 1, :, :] = 1.0 / (32 * 9)
    wp = reg.prob.weight  # [1, 8, 3, 3, 3]
    wp[0, 0].zero_()
    wp[0, 0, 1, 1, 1] = -SHARPNESS
    return model.eval()
