"""Shared fixtures of the harness.model unit tests: realistic cameras and a small rendered scene."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from harness.data.scenes import scene_views
from harness.data.synthetic import Scene, SceneSpec, render_scene
from harness.data.views import make_feed
from harness.model.init import plane_sweep_init
from harness.model.mvsnet import MVSNet

SMALL_SPEC = SceneSpec(seed=0, num_views=3, height=128, width=160)
SMALL_NUM_DEPTH = 48
SMALL_INTERVAL_SCALE = 4.24  # 48 hypotheses spanning DTU's 192 x 1.06 range


def _rotation(gen: torch.Generator) -> torch.Tensor:
    """A random proper rotation within ~25 degrees of the identity, float64."""
    axis = torch.randn(3, generator=gen, dtype=torch.float64)
    axis = axis / torch.linalg.norm(axis)
    angle = math.radians(25.0) * float(torch.rand((), generator=gen, dtype=torch.float64))
    cross = torch.tensor(
        [[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]], dtype=torch.float64
    )
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def random_projection(gen: torch.Generator, height: int = 32, width: int = 40) -> torch.Tensor:
    """``[4, 4]`` float64 ``P = [[K/4 @ E[:3, :4]], [0, 0, 0, 1]]``: fx ~ 300 (already at feature
    resolution), principal point near the centre, camera ~500 mm from the origin."""
    fx = 280.0 + 40.0 * float(torch.rand((), generator=gen, dtype=torch.float64))
    k = torch.tensor(
        [[fx, 0.0, width / 2 + 1.5], [0.0, fx * 1.01, height / 2 - 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    ext = torch.eye(4, dtype=torch.float64)
    ext[:3, :3] = _rotation(gen)
    ext[:3, 3] = torch.randn(3, generator=gen, dtype=torch.float64) * 50.0 + torch.tensor(
        [0.0, 0.0, 500.0], dtype=torch.float64
    )
    proj = ext.clone()
    proj[:3, :4] = k @ ext[:3, :4]
    return proj


@pytest.fixture(scope="session")
def make_projections() -> Callable[..., torch.Tensor]:
    """Factory: ``make_projections(*batch_shape, seed=0)`` -> ``[*batch_shape, 4, 4]`` float64."""

    def make(*batch_shape: int, seed: int = 0, height: int = 32, width: int = 40) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        count = math.prod(batch_shape)
        mats = torch.stack([random_projection(gen, height, width) for _ in range(count)])
        return mats.reshape(*batch_shape, 4, 4)

    return make


@pytest.fixture(scope="session")
def small_scene() -> Scene:
    """The synthetic scene of seed 0: 3 views at 128x160 (ground truth at 32x40)."""
    return render_scene(SMALL_SPEC)


@pytest.fixture(scope="session")
def _small_feed_master(small_scene: Scene) -> dict[str, torch.Tensor]:
    return make_feed(scene_views(small_scene), num_depth=SMALL_NUM_DEPTH, interval_scale=SMALL_INTERVAL_SCALE,
                     with_inverse=True)


@pytest.fixture
def small_feed(_small_feed_master: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The four MVSNet inputs for the small scene (fresh copies: a test may modify them)."""
    return {name: tensor.clone() for name, tensor in _small_feed_master.items()}


@pytest.fixture(scope="session")
def _sweep_model_master() -> MVSNet:
    return plane_sweep_init(MVSNet(), seed=0)


@pytest.fixture
def sweep_model(_sweep_model_master: MVSNet) -> MVSNet:
    """MVSNet with the plane-sweep initialisation of seed 0, in eval mode (shared: do not modify)."""
    assert not _sweep_model_master.training
    return _sweep_model_master
