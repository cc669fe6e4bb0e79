"""Input cases: a named shape (views, H, W, D) and the data that fills it.

``small`` runs everywhere (CPU CI included); ``seed`` is the source article's evaluation shape;
``dtu`` is MVSNet_pytorch's DTU evaluation shape. The depth range always spans DTU's
425-935 mm, so the interval scale grows as D shrinks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from harness.data.scenes import BUNDLED_SCENE, scene_views
from harness.data.synthetic import SceneSpec, render_scene
from harness.data.views import Views, fit_to_size, load_views, make_feed
from harness.errors import InvalidArgument

DTU_NUM_DEPTH = 192
DTU_INTERVAL_SCALE = 1.06


@dataclass(frozen=True)
class Case:
    """A named input shape. ``interval_scale`` multiplies the camera file's depth interval."""

    name: str
    views: int
    height: int
    width: int
    num_depth: int

    @property
    def interval_scale(self) -> float:
        return DTU_INTERVAL_SCALE * DTU_NUM_DEPTH / self.num_depth

    @property
    def shape_id(self) -> str:
        return f"{self.views}x{self.height}x{self.width}xD{self.num_depth}"

    def input_shapes(self, with_inverse: bool) -> dict[str, tuple[int, ...]]:
        shapes = {
            "imgs": (1, self.views, 3, self.height, self.width),
            "proj_matrices": (1, self.views, 4, 4),
            "depth_values": (1, self.num_depth),
        }
        if with_inverse:
            shapes["inverse_proj_matrices"] = (1, self.views, 4, 4)
        return shapes


CASES: dict[str, Case] = {
    "small": Case("small", 3, 128, 160, 48),
    "seed": Case("seed", 3, 512, 640, 192),
    "dtu": Case("dtu", 5, 1184, 1600, 192),
}


def get_case(name: str) -> Case:
    try:
        return CASES[name]
    except KeyError:
        raise InvalidArgument("case", "unknown case", observed=name, expected=f"one of {', '.join(CASES)}",
                              fix="pick a listed case (--cases)") from None


def case_views(case: Case, scene: str | Path | None = None) -> Views:
    """Views for ``case``: from a DTU-format folder (default: the bundled scene), or rendered
    synthetically when the folder's images are smaller than the case (e.g. the DTU shape)."""
    folder = Path(scene) if scene is not None else BUNDLED_SCENE
    views = load_views(folder, num_views=case.views)
    h, w = views.size
    if h < case.height or w < case.width:
        if scene is not None:
            raise InvalidArgument(str(folder), "images are smaller than the case", observed=f"{h}x{w}",
                                  expected=f"at least {case.height}x{case.width} for case {case.name}",
                                  fix="choose a smaller case (--cases small) or a larger scene")
        return scene_views(render_scene(SceneSpec(seed=0, num_views=case.views, height=case.height, width=case.width)))
    return fit_to_size(views, case.height, case.width)


def case_feed(case: Case, views: Views, with_inverse: bool) -> dict[str, torch.Tensor]:
    return make_feed(views, case.num_depth, case.interval_scale, with_inverse=with_inverse)
