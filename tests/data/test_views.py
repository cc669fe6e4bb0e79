"""harness.data.views: reference + source views, MVSNet's input tensors, resizing and loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.dtu import write_image
from harness.data.pfm import write_pfm
from harness.data.synthetic import Scene, intrinsics_for
from harness.data.views import (
    Views,
    crop_to_valid,
    depth_hypotheses,
    downscale,
    fit_to_size,
    load_views,
    make_feed,
    projection_matrices,
)
from harness.errors import DataFormatError, InvalidArgument, MissingFile, ShapeError


def _views(height: int, width: int, num_views: int = 2, images: torch.Tensor | None = None,
           with_depth: bool = True) -> Views:
    """Views with DTU-like cameras; ground truth (if any) holds its flat index so crops are traceable."""
    if images is None:
        images = torch.rand((num_views, 3, height, width), generator=torch.Generator().manual_seed(0))
    k = intrinsics_for(height - height % 32 or 32, width - width % 32 or 32).unsqueeze(0).repeat(num_views, 1, 1)
    ext = torch.eye(4, dtype=torch.float64).repeat(num_views, 1, 1)
    ext[:, 0, 3] = torch.arange(num_views, dtype=torch.float64) * 50.0  # a baseline along x
    ext[:, 2, 3] = 650.0
    depth = mask = None
    if with_depth:
        hq, wq = height // 4, width // 4
        depth = torch.arange(hq * wq, dtype=torch.float32).view(hq, wq) + 1.0
        mask = (torch.arange(hq * wq) % 3 != 0).view(hq, wq)
    return Views(images=images, intrinsics=k, extrinsics=ext, depth_min=425.0, depth_interval=2.5,
                 view_ids=tuple(range(num_views)), depth=depth, mask=mask, source="test-views")


def _coordinate_images(height: int, width: int, axis: str) -> torch.Tensor:
    """``[2, 3, H, W]`` whose value is the pixel's x (or y) coordinate."""
    if axis == "x":
        grid = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width).expand(2, 3, height, width)
    else:
        grid = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1).expand(2, 3, height, width)
    return grid.contiguous()


def _assert_inverse(proj: torch.Tensor, inverse: torch.Tensor) -> None:
    """``proj @ inverse`` is the identity, up to float32 storage of both (checked in float64).

    The translation column sums terms of size |P| |P^-1| that cancel, so its tolerance scales with them.
    """
    p, q = proj.to(torch.float64), inverse.to(torch.float64)
    product = p @ q
    eye = torch.eye(4, dtype=torch.float64).expand_as(product)
    torch.testing.assert_close(product[..., :, :3], eye[..., :, :3], atol=1e-5, rtol=0)
    term_size = (p.abs() @ q.abs())[..., :, 3]
    assert bool(((product[..., :, 3] - eye[..., :, 3]).abs() <= 1e-6 * term_size).all())


# --- depth hypotheses and projection matrices --------------------------------------------------------


def test_depth_hypotheses_are_dtus_192_planes_in_float32() -> None:
    hyps = depth_hypotheses(425.0, 2.5 * 1.06, 192)
    assert hyps.dtype == torch.float32 and hyps.shape == (192,)
    exact = 425.0 + 2.65 * torch.arange(192, dtype=torch.float64)
    assert float((hyps.to(torch.float64) - exact).abs().max()) <= 1e-4
    assert float(hyps[0]) == 425.0
    assert float(hyps[-1]) == pytest.approx(931.15, abs=1e-4)


def test_depth_hypotheses_do_not_accumulate_float32_rounding() -> None:
    # each plane is computed in float64 then rounded once: the error stays below half a float32 ulp
    hyps = depth_hypotheses(425.0, 0.1, 4096)
    exact = 425.0 + 0.1 * torch.arange(4096, dtype=torch.float64)
    ulp = torch.finfo(torch.float32).eps * exact
    assert bool(((hyps.to(torch.float64) - exact).abs() <= 0.5 * ulp).all())


def test_depth_hypotheses_follow_the_sign_of_the_interval() -> None:
    hyps = depth_hypotheses(935.0, -2.5, 8)
    assert torch.equal(hyps, torch.tensor([935.0, 932.5, 930.0, 927.5, 925.0, 922.5, 920.0, 917.5]))


def test_projection_matrices_use_k_divided_by_4_in_its_first_two_rows(small_scene: Scene) -> None:
    k, ext = small_scene.intrinsics, small_scene.extrinsics
    proj = projection_matrices(k, ext)
    assert proj.dtype == torch.float32 and proj.shape == (k.shape[0], 4, 4)
    k4 = k.clone()
    k4[:, 0, :] /= 4
    k4[:, 1, :] /= 4
    expected = k4 @ ext[:, :3, :4]
    torch.testing.assert_close(proj[:, :3, :4].to(torch.float64), expected, rtol=1e-6, atol=1e-3)
    assert torch.equal(proj[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(k.shape[0], 4))


def test_projection_matrices_map_a_camera_point_to_quarter_resolution_pixels() -> None:
    k = torch.tensor([[[800.0, 0, 320], [0, 800, 256], [0, 0, 1]]], dtype=torch.float64)
    proj = projection_matrices(k, torch.eye(4, dtype=torch.float64).unsqueeze(0))[0].to(torch.float64)
    p = proj @ torch.tensor([100.0, -50.0, 1000.0, 1.0], dtype=torch.float64)
    u, v = p[0] / p[2], p[1] / p[2]
    # full resolution: (800*0.1+320, 800*-0.05+256) = (400, 216); features are 4x smaller
    assert (float(u), float(v)) == pytest.approx((100.0, 54.0))


def test_projection_matrices_leave_their_inputs_unchanged(small_scene: Scene) -> None:
    k, ext = small_scene.intrinsics.clone(), small_scene.extrinsics.clone()
    projection_matrices(k, ext)
    assert torch.equal(k, small_scene.intrinsics) and torch.equal(ext, small_scene.extrinsics)


# --- the feed -------------------------------------------------------------------------------------


def test_make_feed_shapes_and_dtypes() -> None:
    views = _views(64, 96, num_views=3)
    feed = make_feed(views, num_depth=48, interval_scale=4.24)
    assert set(feed) == {"imgs", "proj_matrices", "depth_values"}
    assert feed["imgs"].shape == (1, 3, 3, 64, 96)
    assert feed["proj_matrices"].shape == (1, 3, 4, 4)
    assert feed["depth_values"].shape == (1, 48)
    assert all(t.dtype == torch.float32 for t in feed.values())
    assert feed["imgs"].is_contiguous()
    assert torch.equal(feed["imgs"][0], views.images)
    assert torch.equal(feed["proj_matrices"][0], projection_matrices(views.intrinsics, views.extrinsics))


def test_make_feed_scales_the_camera_interval() -> None:
    feed = make_feed(_views(64, 96), num_depth=48, interval_scale=4.24)
    assert torch.equal(feed["depth_values"][0], depth_hypotheses(425.0, 2.5 * 4.24, 48))


def test_make_feed_with_inverse_adds_the_inverse_projections() -> None:
    views = _views(64, 96, num_views=3)
    feed = make_feed(views, num_depth=8, interval_scale=1.0, with_inverse=True)
    inverse = feed["inverse_proj_matrices"]
    assert inverse.shape == (1, 3, 4, 4) and inverse.dtype == torch.float32
    # the float64 inverse, stored as float32 (the precomputed workaround)
    assert torch.equal(inverse, torch.linalg.inv(feed["proj_matrices"].to(torch.float64)).to(torch.float32))
    _assert_inverse(feed["proj_matrices"], inverse)


def test_make_feed_inverse_of_a_synthetic_rig_is_accurate(small_scene: Scene) -> None:
    views = Views(small_scene.images, small_scene.intrinsics, small_scene.extrinsics, 425.0, 2.5, (0, 1, 2, 3))
    feed = make_feed(views, num_depth=16, interval_scale=1.0, with_inverse=True)
    _assert_inverse(feed["proj_matrices"], feed["inverse_proj_matrices"])


@pytest.mark.parametrize("num_depth", [0, 4, 50, 191])
def test_make_feed_refuses_depth_counts_that_are_not_multiples_of_8(num_depth: int) -> None:
    with pytest.raises(ShapeError, match="depth hypotheses"):
        make_feed(_views(64, 96), num_depth=num_depth, interval_scale=1.0)


# --- downscale ------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 4])
def test_downscale_divides_image_size_and_intrinsic_rows(factor: int) -> None:
    views = _views(128, 160)
    small = downscale(views, factor)
    assert small.size == (128 // factor, 160 // factor)
    assert small.images.shape == (2, 3, 128 // factor, 160 // factor) and small.images.dtype == torch.float32
    expected = views.intrinsics.clone()
    expected[:, :2, :] /= factor
    assert torch.equal(small.intrinsics, expected)
    assert torch.equal(small.extrinsics, views.extrinsics)
    assert (small.depth_min, small.depth_interval, small.view_ids) == (425.0, 2.5, views.view_ids)


@pytest.mark.parametrize("factor", [2, 4])
def test_downscale_subsamples_the_ground_truth(factor: int) -> None:
    views = _views(128, 160)
    small = downscale(views, factor)
    assert views.depth is not None and views.mask is not None
    assert torch.equal(small.depth, views.depth[::factor, ::factor])
    assert torch.equal(small.mask, views.mask[::factor, ::factor])
    assert small.depth.shape == (small.size[0] // 4, small.size[1] // 4)


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("axis", ["x", "y"])
def test_downscale_keeps_pixel_k_at_old_pixel_factor_times_k(factor: int, axis: str) -> None:
    height, width = 96, 128
    small = downscale(_views(height, width, images=_coordinate_images(height, width, axis)), factor)
    length = width if axis == "x" else height
    for k in range(small.images.shape[3 if axis == "x" else 2]):
        if factor * k - factor < 0 or factor * k + factor > length - 1:
            continue  # the blur's replicate padding bends the ramp at the borders
        value = small.images[:, :, :, k] if axis == "x" else small.images[:, :, k, :]
        torch.testing.assert_close(value, torch.full_like(value, float(factor * k)), atol=1e-3, rtol=0)


def test_downscale_keeps_a_flat_image_flat() -> None:
    images = torch.full((2, 3, 64, 96), 0.3)
    torch.testing.assert_close(downscale(_views(64, 96, images=images), 4).images, torch.full((2, 3, 16, 24), 0.3))


def test_downscale_smooths_before_subsampling() -> None:
    # a one-pixel checkerboard would alias to a constant 0 or 1 without the blur
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(96), indexing="ij")
    board = ((xx + yy) % 2).float().expand(2, 3, 64, 96).contiguous()
    small = downscale(_views(64, 96, images=board), 2)
    assert float((small.images[:, :, 2:-2, 2:-2] - 0.5).abs().max()) < 0.2


def test_downscale_by_one_returns_the_same_views() -> None:
    views = _views(64, 96)
    assert downscale(views, 1) is views


@pytest.mark.parametrize("factor", [0, -2])
def test_downscale_refuses_non_positive_factors(factor: int) -> None:
    with pytest.raises(InvalidArgument, match="downscale factor"):
        downscale(_views(64, 96), factor)


def test_downscale_leaves_the_original_untouched() -> None:
    views = _views(64, 96)
    k, images = views.intrinsics.clone(), views.images.clone()
    downscale(views, 2)
    assert torch.equal(views.intrinsics, k) and torch.equal(views.images, images)


def test_downscale_without_ground_truth_keeps_none() -> None:
    small = downscale(_views(64, 96, with_depth=False), 2)
    assert small.depth is None and small.mask is None


# --- crop and fit ---------------------------------------------------------------------------------


def test_crop_to_valid_crops_dtus_1200x1600_to_1184x1600_keeping_intrinsics() -> None:
    views = _views(1200, 1600)
    cropped = crop_to_valid(views)
    assert cropped.size == (1184, 1600)
    assert torch.equal(cropped.images, views.images[:, :, :1184, :])  # bottom rows go, top-left stays
    assert cropped.images.is_contiguous()
    assert torch.equal(cropped.intrinsics, views.intrinsics)
    assert views.depth is not None and views.mask is not None
    assert torch.equal(cropped.depth, views.depth[:296, :400])
    assert torch.equal(cropped.mask, views.mask[:296, :400])


def test_crop_to_valid_crops_right_columns_too() -> None:
    cropped = crop_to_valid(_views(96, 100))
    assert cropped.size == (96, 96)
    assert cropped.depth is not None and cropped.depth.shape == (24, 24)


def test_crop_to_valid_returns_valid_views_unchanged() -> None:
    views = _views(64, 96)
    assert crop_to_valid(views) is views


def test_crop_to_valid_refuses_images_smaller_than_32_pixels() -> None:
    with pytest.raises(ShapeError, match="test-views"):
        crop_to_valid(_views(20, 100, with_depth=False))


def test_fit_to_size_downscales_by_an_integer_factor() -> None:
    views = _views(512, 640)
    fitted = fit_to_size(views, 128, 160)
    reference = downscale(views, 4)
    assert fitted.size == (128, 160)
    assert torch.equal(fitted.images, reference.images)
    assert torch.equal(fitted.intrinsics, reference.intrinsics)
    assert fitted.depth is not None and fitted.depth.shape == (32, 40)


def test_fit_to_size_only_crops_when_the_factor_is_one() -> None:
    views = _views(1200, 1600)
    fitted = fit_to_size(views, 1184, 1600)
    assert fitted.size == (1184, 1600)
    assert torch.equal(fitted.images, views.images[:, :, :1184])
    assert torch.equal(fitted.intrinsics, views.intrinsics)


def test_fit_to_size_crops_bottom_right_after_downscaling_to_another_aspect() -> None:
    views = _views(512, 640)
    fitted = fit_to_size(views, 256, 256)
    half = downscale(views, 2)
    assert fitted.size == (256, 256)
    assert torch.equal(fitted.images, half.images[:, :, :256, :256])
    assert torch.equal(fitted.intrinsics, half.intrinsics)
    assert half.depth is not None
    assert torch.equal(fitted.depth, half.depth[:64, :64])


def test_fit_to_size_refuses_sizes_larger_than_the_images() -> None:
    with pytest.raises(InvalidArgument, match="smaller than the requested size"):
        fit_to_size(_views(128, 160), 256, 320)


def test_fit_to_size_refuses_target_sizes_mvsnet_cannot_take() -> None:
    with pytest.raises(ShapeError):
        fit_to_size(_views(128, 160), 100, 100)


# --- loading a DTU-format folder -------------------------------------------------------------------


def test_load_views_returns_the_reference_first_and_sources_in_pair_order(small_scene_dir: Path,
                                                                           small_scene: Scene) -> None:
    views = load_views(small_scene_dir)
    expected_ids = (0, *[src for src, _ in small_scene.pairs[0]][:2])
    assert views.view_ids == expected_ids
    ids = list(expected_ids)
    assert views.images.shape == (3, 3, 64, 96) and views.images.dtype == torch.float32
    assert float((views.images - small_scene.images[ids]).abs().mean()) < 0.02
    torch.testing.assert_close(views.intrinsics, small_scene.intrinsics[ids], atol=1e-6, rtol=0)
    torch.testing.assert_close(views.extrinsics, small_scene.extrinsics[ids], atol=1e-6, rtol=0)
    assert views.intrinsics.dtype == torch.float64 and views.extrinsics.dtype == torch.float64
    assert (views.depth_min, views.depth_interval) == (425.0, 2.5)
    assert views.source == str(small_scene_dir)


def test_load_views_images_are_matched_to_their_view_ids(small_scene_dir: Path, small_scene: Scene) -> None:
    views = load_views(small_scene_dir, num_views=4)
    for position, view in enumerate(views.view_ids):
        errors = [float((views.images[position] - small_scene.images[other]).abs().mean()) for other in range(4)]
        assert int(np.argmin(errors)) == view


def test_load_views_reads_the_reference_ground_truth(small_scene_dir: Path, small_scene: Scene) -> None:
    views = load_views(small_scene_dir)
    assert views.depth is not None and views.mask is not None
    assert torch.equal(views.depth, small_scene.depth)
    assert torch.equal(views.mask, small_scene.mask)


def test_load_views_with_another_reference_uses_its_pair_line(small_scene_dir: Path, small_scene: Scene) -> None:
    views = load_views(small_scene_dir, ref_view=2, num_views=3)
    assert views.view_ids == (2, *[src for src, _ in small_scene.pairs[2]][:2])
    assert views.depth is None and views.mask is None  # ground truth exists for view 0 only


def test_load_views_without_a_mask_derives_it_from_positive_depth(scene_copy: Path) -> None:
    (scene_copy / "masks" / "00000000.png").unlink()
    depth = np.full((16, 24), 600.0, dtype=np.float32)
    depth[:4] = 0.0
    write_pfm(scene_copy / "depths" / "00000000.pfm", depth)
    views = load_views(scene_copy)
    assert views.mask is not None
    assert torch.equal(views.mask, torch.from_numpy(depth > 0))


def test_load_views_accepts_png_images(scene_copy: Path) -> None:
    image = np.full((64, 96, 3), 0.25, dtype=np.float32)
    (scene_copy / "images" / "00000000.jpg").unlink()
    write_image(scene_copy / "images" / "00000000.png", image)
    views = load_views(scene_copy)
    torch.testing.assert_close(views.images[0], torch.full((3, 64, 96), 64 / 255))


def test_load_views_missing_folder_raises_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFile, match="scene folder not found"):
        load_views(tmp_path / "no-scene")


@pytest.mark.parametrize(
    "remove",
    ["pair.txt", "cams/00000000_cam.txt", "cams/SOURCE_cam.txt", "images/00000000.jpg", "images/SOURCE.jpg", "cams"],
)
def test_load_views_missing_file_raises_missing_file(scene_copy: Path, small_scene: Scene, remove: str) -> None:
    source = small_scene.pairs[0][0][0]
    target = scene_copy / remove.replace("SOURCE", f"{source:08d}")
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    with pytest.raises(MissingFile) as info:
        load_views(scene_copy)
    assert isinstance(info.value, FileNotFoundError)
    assert target.name in str(info.value) or "cams" in str(info.value)


def test_load_views_unknown_reference_raises_invalid_argument(small_scene_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match="reference view not listed: 99"):
        load_views(small_scene_dir, ref_view=99)


def test_load_views_with_too_few_sources_raises_invalid_argument(small_scene_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match="too few source views"):
        load_views(small_scene_dir, num_views=5)


@pytest.mark.parametrize("num_views", [0, -1])
def test_load_views_refuses_fewer_than_two_views(small_scene_dir: Path, num_views: int) -> None:
    # MVSNet needs a reference and at least one source; a non-positive count must not slice
    # pair.txt's list from the end (num_views=0 would otherwise load all sources but the last)
    with pytest.raises(InvalidArgument):
        load_views(small_scene_dir, num_views=num_views)


def test_load_views_images_of_different_sizes_raise_data_format_error(scene_copy: Path, small_scene: Scene) -> None:
    source = small_scene.pairs[0][0][0]
    write_image(scene_copy / "images" / f"{source:08d}.jpg", np.zeros((32, 96, 3), dtype=np.float32))
    with pytest.raises(DataFormatError, match="images differ in size") as info:
        load_views(scene_copy)
    assert f"{source:08d}.jpg 32x96 vs the reference view" in str(info.value)  # the odd file is named


def test_load_views_ground_truth_of_the_wrong_size_raises_data_format_error(scene_copy: Path) -> None:
    depth_file = scene_copy / "depths" / "00000000.pfm"
    write_pfm(depth_file, np.ones((64, 96), dtype=np.float32))  # full resolution instead of 1/4
    with pytest.raises(DataFormatError, match="ground-truth depth has the wrong size") as info:
        load_views(scene_copy)
    assert str(info.value).startswith(str(depth_file))


def test_load_views_colour_pfm_as_ground_truth_raises_data_format_error(scene_copy: Path) -> None:
    write_pfm(scene_copy / "depths" / "00000000.pfm", np.ones((16, 24, 3), dtype=np.float32))
    with pytest.raises(DataFormatError):
        load_views(scene_copy)


def test_load_views_mask_of_the_wrong_size_raises_data_format_error(scene_copy: Path) -> None:
    write_image(scene_copy / "masks" / "00000000.png", np.ones((64, 96, 3), dtype=np.float32))
    with pytest.raises(DataFormatError):
        load_views(scene_copy)


def test_load_views_malformed_cam_file_raises_data_format_error(scene_copy: Path) -> None:
    (scene_copy / "cams" / "00000000_cam.txt").write_text("extrinsic\n1 0 0\n")
    with pytest.raises(DataFormatError, match="00000000_cam.txt:2"):
        load_views(scene_copy)
