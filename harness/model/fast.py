"""An inference-only MVSNet that computes the same function faster on a GPU.

* Batch norm folded into the preceding (de)convolution: with frozen statistics
  ``bn(conv(x)) = conv'(x)`` where ``w' = w * g / sqrt(v + eps)`` per output channel and
  ``b' = beta - m * g / sqrt(v + eps)``. Removes a full pass over every activation.
* Mixed precision (``to_mixed_precision``): FP16 convolutions, FP32 geometry, variance, softmax
  and regression.
* Channels-last memory formats, which cuDNN's tensor-core kernels want (no NCHW<->NHWC
  transposes around every convolution).

``torch.compile`` and CUDA-graph replay come on top in ``harness.backends.torch_runner``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from harness.model.mvsnet import MVSNet, to_mixed_precision


def _fold(conv: nn.modules.conv._ConvNd, bn: nn.modules.batchnorm._BatchNorm, transposed: bool) -> nn.Module:
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    folded = copy.deepcopy(conv)
    weight: torch.Tensor = folded.weight.detach()
    # Conv: [out, in, k...]; ConvTranspose: [in, out, k...]
    shape = [1, -1] + [1] * (weight.dim() - 2) if transposed else [-1] + [1] * (weight.dim() - 1)
    folded.weight = nn.Parameter(weight * scale.view(shape))
    old_bias = folded.bias
    folded.bias = nn.Parameter(shift.clone() if old_bias is None else old_bias.detach() * scale + shift)
    return folded


@torch.no_grad()
def fold_batch_norm(model: MVSNet) -> MVSNet:
    """A copy of ``model`` (eval) whose batch norms are folded into their convolutions."""
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, (nn.Conv2d, nn.Conv3d)) and isinstance(bn, nn.modules.batchnorm._BatchNorm):
            module.conv = _fold(conv, bn, transposed=False)
            module.bn = nn.Identity()
        if isinstance(module, nn.Sequential) and len(module) >= 2 and isinstance(module[0], nn.ConvTranspose3d) \
                and isinstance(module[1], nn.modules.batchnorm._BatchNorm):
            module[0] = _fold(module[0], module[1], transposed=True)
            module[1] = nn.Identity()
    return folded


def fast_model(model: MVSNet, device: torch.device, half: bool = True, channels_last: bool = True) -> MVSNet:
    """Folded, mixed-precision, channels-last copy of ``model`` on ``device`` (eval)."""
    fast = fold_batch_norm(model)
    if half:
        fast = to_mixed_precision(fast)
    fast = fast.to(device)
    if channels_last:
        fast.feature.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        fast.cost_regularization.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    return fast.eval()
