"""MVSNet building blocks with the state-dict keys of MVSNet_pytorch.

The attribute names below *are* the checkpoint format: ``feature.conv0.conv.weight``,
``cost_regularization.conv7.0.weight`` and so on. Renaming any of them breaks loading of the
checkpoints users already hold.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConvBnReLU(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU. Keys: ``conv.weight``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, pad: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class ConvBnReLU3D(nn.Module):
    """Conv3d (no bias, kernel 3, padding 1) -> BatchNorm3d -> ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _deconv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # Sequential so that the keys read ``.0.weight`` (deconv) and ``.1.*`` (batch norm).
    return nn.Sequential(
        nn.ConvTranspose3d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(),
    )


class FeatureNet(nn.Module):
    """Shared 2D feature extractor: ``[B, 3, H, W]`` -> ``[B, 32, H/4, W/4]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = ConvBnReLU(3, 8, 3, 1, 1)
        self.conv1 = ConvBnReLU(8, 8, 3, 1, 1)
        self.conv2 = ConvBnReLU(8, 16, 5, 2, 2)
        self.conv3 = ConvBnReLU(16, 16, 3, 1, 1)
        self.conv4 = ConvBnReLU(16, 16, 3, 1, 1)
        self.conv5 = ConvBnReLU(16, 32, 5, 2, 2)
        self.conv6 = ConvBnReLU(32, 32, 3, 1, 1)
        self.feature = nn.Conv2d(32, 32, 3, 1, 1)  # with bias, no BN/ReLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(x))
        x = self.conv4(self.conv3(self.conv2(x)))
        return self.feature(self.conv6(self.conv5(x)))


class CostRegNet(nn.Module):
    """3D U-Net on the variance volume: ``[B, 32, D, h, w]`` -> ``[B, 1, D, h, w]`` (logits).

    D, h and w must be divisible by 8 (three stride-2 levels).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = ConvBnReLU3D(32, 8)
        self.conv1 = ConvBnReLU3D(8, 16, stride=2)
        self.conv2 = ConvBnReLU3D(16, 16)
        self.conv3 = ConvBnReLU3D(16, 32, stride=2)
        self.conv4 = ConvBnReLU3D(32, 32)
        self.conv5 = ConvBnReLU3D(32, 64, stride=2)
        self.conv6 = ConvBnReLU3D(64, 64)
        self.conv7 = _deconv_bn_relu(64, 32)
        self.conv9 = _deconv_bn_relu(32, 16)
        self.conv11 = _deconv_bn_relu(16, 8)
        self.prob = nn.Conv3d(8, 1, 3, stride=1, padding=1)  # with bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c0 = self.conv0(x)
        c2 = self.conv2(self.conv1(c0))
        c4 = self.conv4(self.conv3(c2))
        y = self.conv6(self.conv5(c4))
        y = c4 + self.conv7(y)
        y = c2 + self.conv9(y)
        y = c0 + self.conv11(y)
        return self.prob(y)
