"""harness.data.families: the training families (classic, wide) and the held-out independent family,
and the generator options they use (rig kinds, texture styles, ranges, sensor noise)."""

from __future__ import annotations

import random

import pytest
import torch

from harness.data.families import (
    FAMILIES,
    HELD_OUT_SEEDS,
    INDEPENDENT_SEEDS,
    TRAIN_SEEDS,
    check_family,
    family_spec,
    held_out_seeds,
)
from harness.data.synthetic import RIGS, SceneSpec, _rig, render_scene
from harness.errors import InvalidArgument

SHAPE = {"views": 3, "height": 64, "width": 96}
WIDE = [family_spec("wide", seed, **SHAPE) for seed in range(10_000, 10_400)]


# --- seeds ----------------------------------------------------------------------------------------


def _disjoint(a: range, b: range) -> bool:
    return a.stop <= b.start or b.stop <= a.start


def test_held_out_seeds_of_every_family_are_disjoint_from_the_training_seeds() -> None:
    assert _disjoint(HELD_OUT_SEEDS, TRAIN_SEEDS) and _disjoint(INDEPENDENT_SEEDS, TRAIN_SEEDS)
    assert _disjoint(INDEPENDENT_SEEDS, HELD_OUT_SEEDS)
    for family in FAMILIES:
        assert _disjoint(held_out_seeds(family), TRAIN_SEEDS), family
        assert 0 not in held_out_seeds(family)  # the bundled scene
    assert held_out_seeds("independent") == INDEPENDENT_SEEDS and len(INDEPENDENT_SEEDS) >= 40


def test_the_training_pool_draws_only_training_seeds() -> None:
    # harness.train's pool: TRAIN_SEEDS[(seed * 7919 + i) % len]: inside the range whatever the run's seed
    for run_seed in (0, 1, 12345):
        picks = [TRAIN_SEEDS[(run_seed * 7919 + i) % len(TRAIN_SEEDS)] for i in (0, 1999, 10**6)]
        assert all(p in TRAIN_SEEDS for p in picks)


# --- determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_spec_is_a_pure_function_of_family_seed_and_shape(family: str) -> None:
    assert family_spec(family, 10_321, **SHAPE) == family_spec(family, 10_321, **SHAPE)
    assert family_spec(family, 10_321, **SHAPE) != family_spec(family, 10_322, **SHAPE)
    random.seed(99)  # the global RNG plays no part
    assert family_spec(family, 10_321, **SHAPE) == family_spec(family, 10_321, **SHAPE)


def test_a_wide_scene_renders_bit_for_bit_the_same_for_its_seed() -> None:
    spec = next(s for s in WIDE if s.noise > 0.01 and s.num_rectangles >= 3)
    a, b = render_scene(spec), render_scene(spec)
    for name in ("images", "extrinsics", "depth", "mask"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_the_same_seed_gives_unrelated_scenes_in_different_families() -> None:
    specs = {family: family_spec(family, 10_500, **SHAPE) for family in FAMILIES}
    assert len({(s.rig, s.num_rectangles, s.view_spread_deg, s.texture) for s in specs.values()}) == 3


def test_the_classic_family_is_the_historical_training_draw() -> None:
    for seed in (10_000, 10_123, 1_005):
        rng = random.Random(seed)
        expected = SceneSpec(seed=seed, num_views=3, height=64, width=96, num_rectangles=rng.randint(1, 6),
                             view_spread_deg=(rng.uniform(4, 8), rng.uniform(9, 15)), photometric_jitter=0.15)
        assert family_spec("classic", seed, **SHAPE) == expected


# --- what the families cover ------------------------------------------------------------------------


def test_the_wide_family_covers_rigs_occluders_grazing_planes_textures_and_photometry() -> None:
    assert {s.rig for s in WIDE} == set(RIGS)
    assert {s.texture for s in WIDE} == {"blobs", "smooth"}
    assert min(s.texture_scale for s in WIDE) < 0.5 and max(s.texture_scale for s in WIDE) > 2.5
    assert max(s.tilt_deg[1] for s in WIDE) > 75 and max(s.tilt_deg[0] for s in WIDE) > 70  # grazing
    assert {s.num_rectangles for s in WIDE} >= {0, 5, 10}
    assert min(s.rectangle_depth[0] for s in WIDE) < 470 and max(s.rectangle_depth[1] for s in WIDE) > 790
    assert min(s.view_spread_deg[0] for s in WIDE) < 3 and max(s.view_spread_deg[1] for s in WIDE) > 17
    assert max(s.noise for s in WIDE) > 0.025 and max(s.photometric_jitter for s in WIDE) > 0.25
    assert any(s.textureless > 0 for s in WIDE) and any(s.textureless == 0 for s in WIDE)


def test_the_independent_family_differs_from_everything_training_draws() -> None:
    independent = [family_spec("independent", seed, 3, 512, 640) for seed in INDEPENDENT_SEEDS[:40]]
    assert {s.texture for s in independent} == {"cells"}
    assert "cells" not in {s.texture for s in WIDE}
    assert all(s.rig == "ring" and 2 <= s.num_rectangles <= 5 for s in independent)
    assert min(s.roll_deg for s in independent) > max(s.roll_deg for s in WIDE)  # camera rolls training never saw
    assert all((s.height, s.width) == (512, 640) for s in independent)


# --- the generator options the families use --------------------------------------------------------


def _axes(rig: str) -> torch.Tensor:
    spec = SceneSpec(seed=5, num_views=4, height=64, width=96, rig=rig)
    return _rig(spec, torch.Generator().manual_seed(5))[:, 2, :3]


@pytest.mark.parametrize(("rig", "parallel"), [("ring", False), ("line", True), ("ring-parallel", True),
                                               ("line-toe-in", False)])
def test_rig_kinds_have_parallel_or_toed_in_optical_axes(rig: str, parallel: bool) -> None:
    axes = _axes(rig)
    same = all(torch.allclose(axes[0], a, atol=1e-9) for a in axes[1:])
    assert same == parallel, axes


def test_sensor_noise_changes_only_the_images() -> None:
    quiet = SceneSpec(seed=8, num_views=3, height=64, width=96)
    noisy = SceneSpec(seed=8, num_views=3, height=64, width=96, noise=0.03)
    a, b = render_scene(quiet), render_scene(noisy)
    for name in ("extrinsics", "depth", "mask"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    difference = (a.images - b.images).abs()
    assert 0.002 < float(difference.mean()) < 0.03


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"texture": "stripes"}, "unknown texture style"),
    ({"rig": "dome"}, "unknown rig"),
    ({"tilt_deg": (20.0, 90.0)}, "tilts must be two angles"),
    ({"rectangle_depth": (700.0, 600.0)}, "depth range must be ordered"),
    ({"rectangle_depth": (300.0, 600.0)}, "depth range must be ordered"),
    ({"rectangle_size": (0.0, 0.2)}, "half-extents must be ordered"),
    ({"noise": -0.1}, "noise in"),
    ({"roll_deg": 60.0}, "roll_deg must be"),
])
def test_scene_spec_refuses_bad_family_options_saying_what_is_allowed(kwargs: dict, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as info:
        SceneSpec(**kwargs)
    assert "Expected:" in str(info.value)


def test_unknown_and_untrainable_families_are_refused_with_a_fix() -> None:
    with pytest.raises(InvalidArgument, match="unknown scene family") as info:
        family_spec("dtu", 1, **SHAPE)
    assert "Fix:" in str(info.value)
    with pytest.raises(InvalidArgument, match="held-out family cannot be trained on"):
        check_family("independent", trainable=True)
    assert check_family("wide", trainable=True) == "wide" and check_family("independent") == "independent"
