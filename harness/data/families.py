"""Scene families: how a seed becomes a ``SceneSpec`` for training and for held-out evaluation.

``classic``
    The distribution the bundled weights were trained on: 1-6 rectangles in front of a background
    tilted up to 20 degrees, blob textures, a toed-in ring of sources 4-15 degrees from the
    reference, per-view gain and offset (jitter 0.15). Its specs are those ``harness.train``
    drew before the families existed, seed for seed.
``wide``
    The training distribution meant to generalise: every rig kind (toed-in and parallel rings,
    parallel and toed-in lines) with baselines from 2 to 20 degrees and camera distances of
    560-740 mm, 0-10 occluding rectangles at several depths (450-810 mm) and sizes, planes tilted up to
    grazing angles (background up to 75 degrees, rectangles up to 80), blob and smooth textures at cell
    scales 0.4-3x, sometimes textureless planes, per-view gain/offset and sensor noise.
``independent``
    Held out from training altogether: a toed-in ring of sources with baselines of 12-20 degrees
    (the top of wide's range) and camera rolls of 8-12 degrees (wide draws at most 6), 2-5 finite
    planes in front of a slanted background, and a texture style no training family uses (``cells``: flat patches with
    sharp edges), at the case's shape (the seed case: 3x512x640, D=192). Its seeds
    (``INDEPENDENT_SEEDS``) are disjoint from every training seed.

A family's draws for a seed come from ``random.Random("<family>:<seed>")`` (``classic``: the
historical ``random.Random(seed)``), so the same seed gives unrelated scenes in different families
and every spec is a pure function of (family, seed, shape).
"""

from __future__ import annotations

import math
import random
from typing import Any

from harness.data.synthetic import SceneSpec
from harness.errors import InvalidArgument

#: Every family, and those ``train`` may draw from (``independent`` is evaluation only).
FAMILIES = ("classic", "wide", "independent")
TRAINABLE = ("classic", "wide")

#: Seeds of the training families: training draws from TRAIN_SEEDS; HELD_OUT_SEEDS are never trained on
#: (the first 16 validate training runs; ``accuracy`` starts at index 20). The bundled scene is seed 0.
TRAIN_SEEDS = range(10_000, 1_000_000)
HELD_OUT_SEEDS = range(1_000, 1_100)
#: The independent family's seeds: outside every range above.
INDEPENDENT_SEEDS = range(2_000_000, 2_000_100)


def check_family(family: str, trainable: bool = False) -> str:
    """``family`` if it is known (and, with ``trainable``, one training may use); else a clear error."""
    allowed = TRAINABLE if trainable else FAMILIES
    if family in allowed:
        return family
    if family in FAMILIES:
        raise InvalidArgument("train --family", "a held-out family cannot be trained on", observed=family,
                              expected=" or ".join(allowed),
                              fix=f"train on wide and measure on it: python -m harness accuracy --family {family}")
    raise InvalidArgument("--family", "unknown scene family", observed=family, expected=", ".join(allowed),
                          fix="pass --family wide (training) or --family independent (held-out evaluation)")


def held_out_seeds(family: str) -> range:
    """The seeds ``accuracy`` measures ``family`` on; none of them is ever a training seed."""
    return INDEPENDENT_SEEDS if check_family(family) == "independent" else HELD_OUT_SEEDS


def family_spec(family: str, seed: int, views: int, height: int, width: int,
                photometric_jitter: float = 0.15) -> SceneSpec:
    """The scene of ``seed`` in ``family`` with ``views`` views at ``height x width``
    (``photometric_jitter``: the classic family's gain spread; the others draw their own)."""
    check_family(family)
    shape: dict[str, Any] = {"seed": seed, "num_views": views, "height": height, "width": width}
    if family == "classic":
        rng = random.Random(seed)
        return SceneSpec(**shape, num_rectangles=rng.randint(1, 6),
                         view_spread_deg=(rng.uniform(4, 8), rng.uniform(9, 15)),
                         photometric_jitter=photometric_jitter)
    rng = random.Random(f"{family}:{seed}")
    if family == "wide":
        near = rng.uniform(450.0, 700.0)
        spread = rng.uniform(2.0, 10.0)
        return SceneSpec(
            **shape, rig=rng.choice(("ring", "line", "ring-parallel", "line-toe-in")),
            distance=rng.uniform(560.0, 740.0), view_spread_deg=(spread, spread + rng.uniform(1.0, 10.0)),
            num_rectangles=rng.randint(0, 10), rectangle_depth=(near, rng.uniform(near, 810.0)),
            rectangle_size=(rng.uniform(0.03, 0.08), rng.uniform(0.1, 0.3)),
            tilt_deg=(rng.uniform(10.0, 75.0), rng.uniform(30.0, 80.0)),
            texture=rng.choice(("blobs", "smooth")), texture_scale=math.exp(rng.uniform(math.log(0.4), math.log(3.0))),
            textureless=rng.choice((0.0, 0.0, 0.0, 0.2)), roll_deg=rng.uniform(0.0, 6.0),
            photometric_jitter=rng.uniform(0.0, 0.3), noise=rng.uniform(0.0, 0.03),
        )
    return SceneSpec(
        **shape, rig="ring", distance=rng.uniform(600.0, 700.0),
        view_spread_deg=(rng.uniform(12.0, 14.0), rng.uniform(16.0, 20.0)), roll_deg=rng.uniform(8.0, 12.0),
        num_rectangles=rng.randint(2, 5), rectangle_depth=(540.0, 760.0), rectangle_size=(0.1, 0.22),
        tilt_deg=(rng.uniform(25.0, 40.0), 35.0), texture="cells", texture_scale=rng.uniform(0.7, 1.5),
        photometric_jitter=0.1, noise=0.01,
    )


__all__ = ["FAMILIES", "HELD_OUT_SEEDS", "INDEPENDENT_SEEDS", "TRAINABLE", "TRAIN_SEEDS", "check_family",
           "family_spec", "held_out_seeds"]
