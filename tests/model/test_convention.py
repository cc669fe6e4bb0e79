"""The sampling convention (align_corners) as a model and chain parameter."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from harness.chain import Chain, ChainConfig
from harness.model.geometry import warp_source_volume


def test_warp_follows_the_convention_it_is_given():
    torch.manual_seed(0)
    feature = torch.rand(1, 2, 8, 10)
    eye = torch.eye(4).unsqueeze(0)
    depth = torch.tensor([[1.0, 2.0]])
    ours = warp_source_volume(feature, eye, eye, depth)  # identity homography: samples at the pixel centres
    assert torch.allclose(ours[:, :, 0], feature, atol=1e-6)
    other = warp_source_volume(feature, eye, eye, depth, align_corners=False)
    grid = torch.stack(torch.meshgrid(torch.arange(8.0) / 3.5 - 1, torch.arange(10.0) / 4.5 - 1, indexing="ij")[::-1],
                       dim=-1).unsqueeze(0)
    assert torch.allclose(other[:, :, 0], F.grid_sample(feature, grid, align_corners=False), atol=1e-6)
    assert not torch.allclose(other, ours)


def test_chain_convention_reaches_the_model_and_keys_its_exports(tmp_path):
    default = Chain(ChainConfig(device="cpu", cache_dir=tmp_path))
    flipped = Chain(ChainConfig(device="cpu", cache_dir=tmp_path, align_corners=False))
    assert default.model.align_corners is True and flipped.model.align_corners is False
    assert default.weights_digest == flipped.weights_digest  # the same weights ...
    assert default.export_digest != flipped.export_digest  # ... but not the same exported function
    assert flipped.convention_model(True).align_corners is True and flipped.model.align_corners is False
