"""The generator's defaults and every existing option render what they rendered before the scene
families (harness.data.families) were added: the bundled scene, the held-out seeds the README's
figures were measured on and the classic training scenes all depend on it.

Digests were taken of the renders before the change. Cameras, pairs and the mask are hashed bit for
bit; images and depths after rounding (1/65535 and 1e-4 mm) so that a CPU with other vector units
(last-bit differences in the bicubic texture lookup) does not raise a false alarm.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from harness.data.synthetic import Scene, SceneSpec, render_scene
from harness.train import TrainConfig, scene_spec

SMALL = {"height": 64, "width": 96}

#: name -> (spec, digest of its render before the families existed)
CASES = {
    "defaults-seed-0": (SceneSpec(seed=0, num_views=5, **SMALL), "3501aae6fa2b46ef"),
    "defaults-seed-3": (SceneSpec(seed=3, num_views=4, **SMALL), "1059866880bc9c4e"),
    "line-rig": (SceneSpec(seed=7, num_views=3, rig="line", **SMALL), "e3f116c7d342cb30"),
    "older-options": (SceneSpec(seed=11, num_views=3, photometric_jitter=0.2, textureless=0.5, texture_scale=2.0,
                                num_rectangles=6, **SMALL), "850c3baac58ab49a"),
    "classic-training-scene": (scene_spec(10_123, TrainConfig(views=3, num_depth=16, family="classic", **SMALL)),
                               "62242f6b1260d1a7"),
}


def digest(scene: Scene) -> str:
    h = hashlib.sha256()
    for exact in (scene.extrinsics, scene.intrinsics, scene.mask):
        h.update(exact.contiguous().numpy().tobytes())
    h.update(torch.round(scene.images.double() * 65535).to(torch.int32).numpy().tobytes())
    h.update(torch.round(scene.depth.double() * 1e4).to(torch.int64).numpy().tobytes())
    h.update(repr(scene.pairs).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name", list(CASES))
def test_existing_specs_render_as_before(name: str) -> None:
    spec, expected = CASES[name]
    assert digest(render_scene(spec)) == expected, (
        f"{name}: {spec} no longer renders what it did; new generator options must leave every existing "
        "spec's draws alone (draw from a separate generator, only when the option is not its default)")


def test_scene_spec_defaults_are_unchanged() -> None:
    spec = SceneSpec()
    assert (spec.seed, spec.num_views, spec.height, spec.width, spec.num_rectangles) == (0, 5, 512, 640, 4)
    assert (spec.distance, spec.view_spread_deg, spec.photometric_jitter, spec.supersample) == (650.0, (6.0, 12.0), 0.0, 2)
    assert (spec.rig, spec.textureless, spec.texture_scale) == ("ring", 0.0, 1.0)
