"""Synthetic scenes to and from DTU-format folders, and the bundled default scene.

The bundled scene is regenerated, bit for bit on the same platform, by::

    python -m harness make-scene fixtures/scenes/synthetic-000 --seed 0
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.data.dtu import Camera, view_file, write_cam_file, write_image, write_pair_file
from harness.data.pfm import write_pfm
from harness.data.synthetic import Scene
from harness.data.views import Views

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_SCENE = PROJECT_ROOT / "fixtures" / "scenes" / "synthetic-000"


def scene_views(scene: Scene) -> Views:
    """The scene's views in memory (reference = view 0, sources in pair order)."""
    order = [0] + [src for src, _ in scene.pairs[0]]
    return Views(
        images=scene.images[order].cpu().float(),
        intrinsics=scene.intrinsics[order].cpu(),
        extrinsics=scene.extrinsics[order].cpu(),
        depth_min=scene.depth_min,
        depth_interval=scene.depth_interval,
        view_ids=tuple(order),
        depth=scene.depth.cpu(),
        mask=scene.mask.cpu(),
        source=f"synthetic(seed={scene.spec.seed})",
    )


def write_scene(scene: Scene, folder: str | Path, jpeg_quality: int = 95) -> Path:
    """Write ``scene`` as a DTU-format folder (images as JPEG, reference ground truth as PFM)."""
    folder = Path(folder)
    for view in range(scene.images.shape[0]):
        image = scene.images[view].permute(1, 2, 0).cpu().numpy()
        write_image(view_file(folder, "images", view, ".jpg"), image, quality=jpeg_quality)
        camera = Camera(
            intrinsics=scene.intrinsics[view].cpu().numpy(),
            extrinsics=scene.extrinsics[view].cpu().numpy(),
            depth_min=scene.depth_min,
            depth_interval=scene.depth_interval,
        )
        write_cam_file(view_file(folder, "cams", view, "_cam.txt"), camera)
    write_pair_file(folder / "pair.txt", scene.pairs)
    write_pfm(view_file(folder, "depths", 0, ".pfm"), scene.depth.cpu().numpy().astype(np.float32))
    mask = scene.mask.cpu().numpy().astype(np.float32)
    write_image(view_file(folder, "masks", 0, ".png"), np.repeat(mask[:, :, None], 3, axis=2))
    return folder


def gt_available(views: Views) -> bool:
    return views.depth is not None and views.mask is not None and bool(torch.as_tensor(views.mask).any())
