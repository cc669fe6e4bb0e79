"""harness.data.scenes: synthetic scenes to and from DTU-format folders, and the bundled scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.dtu import read_cam_file, read_image, read_pair_file
from harness.data.pfm import read_pfm
from harness.data.scenes import BUNDLED_SCENE, PROJECT_ROOT, gt_available, scene_views, write_scene
from harness.data.synthetic import Scene, SceneSpec, render_scene
from harness.data.views import Views, load_views

BUNDLED_MAX_BYTES = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def bundled_render() -> Scene:
    """The scene the bundled folder claims to be (seed 0, defaults): the one 512x640 render (~1.5 s)."""
    return render_scene(SceneSpec(seed=0))


# --- write_scene ----------------------------------------------------------------------------------


def test_write_scene_lays_out_a_dtu_folder(small_scene_dir: Path) -> None:
    files = sorted(str(p.relative_to(small_scene_dir)) for p in small_scene_dir.rglob("*") if p.is_file())
    assert files == [
        "cams/00000000_cam.txt", "cams/00000001_cam.txt", "cams/00000002_cam.txt", "cams/00000003_cam.txt",
        "depths/00000000.pfm",
        "images/00000000.jpg", "images/00000001.jpg", "images/00000002.jpg", "images/00000003.jpg",
        "masks/00000000.png",
        "pair.txt",
    ]


def test_write_scene_returns_the_folder_and_creates_it(small_scene: Scene, tmp_path: Path) -> None:
    folder = tmp_path / "new" / "scene"
    assert write_scene(small_scene, folder) == folder
    assert (folder / "pair.txt").is_file()


def test_written_files_hold_the_scene(small_scene_dir: Path, small_scene: Scene) -> None:
    assert read_pair_file(small_scene_dir / "pair.txt") == small_scene.pairs
    for view in range(small_scene.spec.num_views):
        camera = read_cam_file(small_scene_dir / "cams" / f"{view:08d}_cam.txt")
        np.testing.assert_allclose(camera.intrinsics, small_scene.intrinsics[view].numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(camera.extrinsics, small_scene.extrinsics[view].numpy(), rtol=0, atol=1e-6)
        assert (camera.depth_min, camera.depth_interval, camera.extra) == (425.0, 2.5, ())
        image = read_image(small_scene_dir / "images" / f"{view:08d}.jpg")
        assert np.abs(image - small_scene.images[view].permute(1, 2, 0).numpy()).mean() < 0.02
    np.testing.assert_array_equal(read_pfm(small_scene_dir / "depths" / "00000000.pfm"), small_scene.depth.numpy())


def test_write_then_load_round_trips(small_scene_dir: Path, small_scene: Scene) -> None:
    loaded = load_views(small_scene_dir, num_views=small_scene.spec.num_views)
    memory = scene_views(small_scene)
    assert loaded.view_ids == memory.view_ids
    torch.testing.assert_close(loaded.intrinsics, memory.intrinsics, atol=1e-6, rtol=0)
    torch.testing.assert_close(loaded.extrinsics, memory.extrinsics, atol=1e-6, rtol=0)
    assert (loaded.depth_min, loaded.depth_interval) == (memory.depth_min, memory.depth_interval)
    difference = (loaded.images - memory.images).abs()
    assert float(difference.mean()) < 0.02 and float(difference.max()) < 0.5  # JPEG, quality 95
    assert loaded.depth is not None and loaded.mask is not None
    assert torch.equal(loaded.depth, memory.depth)
    assert torch.equal(loaded.mask, memory.mask)


def test_lower_jpeg_quality_gives_smaller_files(small_scene: Scene, small_scene_dir: Path, tmp_path: Path) -> None:
    low = write_scene(small_scene, tmp_path / "low", jpeg_quality=30)
    first_image = Path("images") / "00000000.jpg"
    assert (low / first_image).stat().st_size < (small_scene_dir / first_image).stat().st_size


# --- scene_views ----------------------------------------------------------------------------------


def test_scene_views_orders_reference_then_sources_by_pair_score(small_scene: Scene) -> None:
    views = scene_views(small_scene)
    order = [0] + [src for src, _ in small_scene.pairs[0]]
    assert views.view_ids == tuple(order)
    assert torch.equal(views.images, small_scene.images[order])
    assert torch.equal(views.intrinsics, small_scene.intrinsics[order])
    assert torch.equal(views.extrinsics, small_scene.extrinsics[order])
    assert torch.equal(views.depth, small_scene.depth) and torch.equal(views.mask, small_scene.mask)
    assert views.images.dtype == torch.float32 and views.images.device.type == "cpu"
    assert views.source == "synthetic(seed=3)"


def test_gt_available_needs_depth_and_a_non_empty_mask(small_scene: Scene) -> None:
    views = scene_views(small_scene)
    assert gt_available(views)
    bare = Views(views.images, views.intrinsics, views.extrinsics, 425.0, 2.5, views.view_ids)
    assert not gt_available(bare)
    empty = Views(views.images, views.intrinsics, views.extrinsics, 425.0, 2.5, views.view_ids,
                  depth=views.depth, mask=torch.zeros_like(views.mask))
    assert not gt_available(empty)


# --- the bundled scene ----------------------------------------------------------------------------


def test_bundled_scene_lives_in_the_projects_fixtures() -> None:
    assert BUNDLED_SCENE == PROJECT_ROOT / "fixtures" / "scenes" / "synthetic-000"
    assert (PROJECT_ROOT / "pyproject.toml").is_file()


def test_bundled_scene_loads_with_five_views_at_512x640() -> None:
    views = load_views(BUNDLED_SCENE, num_views=5)
    assert views.images.shape == (5, 3, 512, 640)
    assert views.view_ids[0] == 0 and sorted(views.view_ids) == [0, 1, 2, 3, 4]
    assert views.depth is not None and views.depth.shape == (128, 160)
    assert gt_available(views)


def test_bundled_scene_is_at_most_2_mb_on_disk() -> None:
    total = sum(p.stat().st_size for p in BUNDLED_SCENE.rglob("*") if p.is_file())
    assert total <= BUNDLED_MAX_BYTES, f"{total} bytes"


def test_bundled_scene_is_the_seed_0_render(bundled_render: Scene) -> None:
    # the folder must stay what `python -m harness make-scene ... --seed 0` writes
    loaded = load_views(BUNDLED_SCENE, num_views=5)
    memory = scene_views(bundled_render)
    assert loaded.view_ids == memory.view_ids
    torch.testing.assert_close(loaded.intrinsics, memory.intrinsics, atol=1e-6, rtol=0)
    torch.testing.assert_close(loaded.extrinsics, memory.extrinsics, atol=1e-6, rtol=0)
    assert float((loaded.images - memory.images).abs().mean()) < 0.01
    assert loaded.mask is not None and loaded.depth is not None
    assert float((loaded.mask != memory.mask).float().mean()) < 1e-3
    both = loaded.mask & memory.mask
    assert float((loaded.depth[both] - memory.depth[both]).abs().max()) < 1e-3
