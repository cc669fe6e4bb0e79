"""harness.data.synthetic: rendered scenes with exact ground truth in MVSNet's conventions."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from harness.data.synthetic import (
    DTU_DEPTH_INTERVAL,
    DTU_DEPTH_MIN,
    DTU_INTRINSICS,
    Scene,
    SceneSpec,
    intrinsics_for,
    render_scene,
)
from harness.data.views import projection_matrices
from harness.errors import InvalidArgument, ShapeError

#: deepest ground truth: DTU's 192 hypotheses at interval 2.5 mm * 1.06
DEPTH_MAX = DTU_DEPTH_MIN + DTU_DEPTH_INTERVAL * 1.06 * 191


@pytest.fixture(scope="module")
def consistency_scene() -> Scene:
    """Large enough that the texture is well resolved, so photo-consistency is sharp (~0.2 s)."""
    return render_scene(SceneSpec(seed=0, num_views=3, height=256, width=320))


def _reproject(scene: Scene, depth_scale: float = 1.0, shift_px: float = 0.0) -> list[torch.Tensor]:
    """Per source view: |colour(source at the reprojected point) - colour(reference)| for every masked
    ground-truth pixel that lands inside the source image, following MVSNet's conventions.

    Quarter-resolution pixel (x, y) of the reference with depth z is the homogeneous point
    (x z, y z, z, 1) of P_ref (K/4); P_src maps it to (u, v) at quarter resolution, i.e. full-res
    (4u, 4v); the reference colour is the full-res pixel (4x, 4y).
    """
    proj = projection_matrices(scene.intrinsics, scene.extrinsics).to(torch.float64)
    hq, wq = scene.depth.shape
    ys, xs = torch.meshgrid(torch.arange(hq, dtype=torch.float64), torch.arange(wq, dtype=torch.float64),
                            indexing="ij")
    mask = scene.mask
    z = scene.depth.to(torch.float64)[mask] * depth_scale
    x, y = xs[mask], ys[mask]
    world = torch.linalg.inv(proj[0]) @ torch.stack([x * z, y * z, z, torch.ones_like(z)])
    height, width = scene.images.shape[2:]
    reference = scene.images[0][:, (4 * y).long(), (4 * x).long()]
    diffs = []
    for view in range(1, scene.images.shape[0]):
        p = proj[view] @ world
        u = 4 * p[0] / p[2] + shift_px
        v = 4 * p[1] / p[2] + shift_px
        inside = (p[2] > 0) & (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)
        # pixel centres at integer coordinates: align_corners=True maps -1/+1 to pixels 0 and W-1
        grid = torch.stack([u / (width - 1) * 2 - 1, v / (height - 1) * 2 - 1], dim=-1).float().view(1, 1, -1, 2)
        sampled = F.grid_sample(scene.images[view: view + 1], grid, mode="bilinear", align_corners=True)[0, :, 0]
        diffs.append((sampled - reference).abs().mean(dim=0)[inside])
    return diffs


# --- specification --------------------------------------------------------------------------------


def test_scene_spec_defaults_are_the_article_shape_with_five_views() -> None:
    spec = SceneSpec()
    assert (spec.num_views, spec.height, spec.width) == (5, 512, 640)
    assert (spec.depth_min, spec.depth_interval) == (425.0, 2.5)


@pytest.mark.parametrize("num_views", [1, 0, -3])
def test_scene_spec_refuses_fewer_than_two_views(num_views: int) -> None:
    with pytest.raises(InvalidArgument, match="too few views"):
        SceneSpec(num_views=num_views)


@pytest.mark.parametrize(("height", "width"), [(100, 160), (128, 150), (120, 150), (16, 32)])
def test_scene_spec_refuses_sizes_that_are_not_multiples_of_32(height: int, width: int) -> None:
    with pytest.raises(ShapeError) as info:
        SceneSpec(height=height, width=width)
    assert isinstance(info.value, InvalidArgument)
    assert str(info.value).startswith("SceneSpec |")


@pytest.mark.parametrize("count", [-1, 17])
def test_scene_spec_refuses_rectangle_counts_out_of_range(count: int) -> None:
    with pytest.raises(InvalidArgument, match="num_rectangles"):
        SceneSpec(num_rectangles=count)


def test_scene_spec_is_frozen_and_hashable() -> None:
    spec = SceneSpec(seed=4)
    with pytest.raises(AttributeError):
        spec.seed = 5  # type: ignore[misc]
    assert hash(spec) == hash(SceneSpec(seed=4))


def test_intrinsics_for_the_dtu_size_are_dtus_camera() -> None:
    fx, fy, cx, cy = DTU_INTRINSICS
    expected = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float64)
    assert torch.equal(intrinsics_for(1200, 1600), expected)


def test_intrinsics_for_scale_x_by_width_and_y_by_height() -> None:
    fx, fy, cx, cy = DTU_INTRINSICS
    k = intrinsics_for(512, 640)
    assert k.dtype == torch.float64
    torch.testing.assert_close(k, torch.tensor([[fx * 0.4, 0, cx * 0.4], [0, fy * 512 / 1200, cy * 512 / 1200],
                                                [0, 0, 1]], dtype=torch.float64))


# --- rendering ------------------------------------------------------------------------------------


def test_render_is_bitwise_deterministic_for_a_seed(small_scene: Scene) -> None:
    again = render_scene(small_scene.spec)
    for name in ("images", "intrinsics", "extrinsics", "depth", "mask"):
        assert torch.equal(getattr(again, name), getattr(small_scene, name)), name
    assert again.pairs == small_scene.pairs


def test_render_differs_across_seeds(small_scene: Scene) -> None:
    other = render_scene(SceneSpec(seed=small_scene.spec.seed + 1, num_views=4, height=64, width=96))
    assert not torch.equal(other.images, small_scene.images)
    assert not torch.equal(other.extrinsics, small_scene.extrinsics)
    assert not torch.equal(other.depth, small_scene.depth)


def test_render_shapes_dtypes_and_value_range(small_scene: Scene) -> None:
    spec = small_scene.spec
    n, h, w = spec.num_views, spec.height, spec.width
    assert small_scene.images.shape == (n, 3, h, w) and small_scene.images.dtype == torch.float32
    assert float(small_scene.images.min()) >= 0.0 and float(small_scene.images.max()) <= 1.0
    assert small_scene.intrinsics.shape == (n, 3, 3) and small_scene.intrinsics.dtype == torch.float64
    assert small_scene.extrinsics.shape == (n, 4, 4) and small_scene.extrinsics.dtype == torch.float64
    assert small_scene.depth.shape == (h // 4, w // 4) and small_scene.depth.dtype == torch.float32
    assert small_scene.mask.shape == (h // 4, w // 4) and small_scene.mask.dtype == torch.bool
    assert (small_scene.depth_min, small_scene.depth_interval) == (spec.depth_min, spec.depth_interval)


def test_images_are_textured_not_flat(small_scene: Scene) -> None:
    assert float(small_scene.images.std(dim=(2, 3)).min()) > 0.05


def test_every_view_uses_the_intrinsics_of_its_image_size(small_scene: Scene) -> None:
    expected = intrinsics_for(small_scene.spec.height, small_scene.spec.width)
    for k in small_scene.intrinsics:
        assert torch.equal(k, expected)


def test_extrinsics_are_rigid_world_to_camera_transforms(small_scene: Scene) -> None:
    rot = small_scene.extrinsics[:, :3, :3]
    eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
    torch.testing.assert_close(rot @ rot.transpose(1, 2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(len(rot), dtype=torch.float64))
    assert torch.equal(small_scene.extrinsics[:, 3], torch.tensor([[0.0, 0, 0, 1]]).expand(len(rot), 4).double())


def test_cameras_sit_about_the_rig_radius_from_the_scene(small_scene: Scene) -> None:
    ext = small_scene.extrinsics
    centres = -(ext[:, :3, :3].transpose(1, 2) @ ext[:, :3, 3:])[..., 0]
    assert torch.all((centres.norm(dim=1) - small_scene.spec.distance).abs() < 100)


def test_ground_truth_depth_lies_in_dtus_range_where_masked(small_scene: Scene) -> None:
    depth, mask = small_scene.depth, small_scene.mask
    assert bool(mask.any())
    assert float(depth[mask].min()) >= DTU_DEPTH_MIN
    assert float(depth[mask].max()) <= DEPTH_MAX + 1e-3
    assert bool((depth[~mask] == 0).all())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ground_truth_depth_range_holds_across_seeds(seed: int) -> None:
    scene = render_scene(SceneSpec(seed=seed, num_views=2, height=64, width=64))
    values = scene.depth[scene.mask]
    assert values.numel() > 0.5 * scene.mask.numel()
    assert float(values.min()) >= 425.0 and float(values.max()) <= 935.0


def test_photometric_jitter_changes_only_the_source_views() -> None:
    plain = render_scene(SceneSpec(seed=5, num_views=3, height=64, width=64))
    jittered = render_scene(SceneSpec(seed=5, num_views=3, height=64, width=64, photometric_jitter=0.2))
    assert torch.equal(plain.images[0], jittered.images[0])
    assert torch.equal(plain.depth, jittered.depth)
    assert not torch.equal(plain.images[1:], jittered.images[1:])


# --- geometric consistency: the ground truth and the cameras agree in MVSNet's conventions -------------


def test_reference_depth_reprojects_onto_the_same_colour_in_every_source_view(consistency_scene: Scene) -> None:
    for view, diff in enumerate(_reproject(consistency_scene), start=1):
        assert diff.numel() > 0.5 * consistency_scene.mask.sum(), f"view {view}: too few points land inside"
        assert float(diff.median()) < 0.02, f"view {view}: median colour error {float(diff.median()):.4f}"


def test_wrong_depth_breaks_photo_consistency(consistency_scene: Scene) -> None:
    right = [float(d.median()) for d in _reproject(consistency_scene)]
    wrong = [float(d.median()) for d in _reproject(consistency_scene, depth_scale=1.1)]
    for view, (good, bad) in enumerate(zip(right, wrong), start=1):
        assert bad > 0.08 and bad > 5 * good, f"view {view}: right {good:.4f}, wrong depth {bad:.4f}"


def test_half_pixel_shift_breaks_photo_consistency(consistency_scene: Scene) -> None:
    # pixel centres at integer coordinates: a half-pixel convention error would show up here
    right = [float(d.median()) for d in _reproject(consistency_scene)]
    shifted = [float(d.median()) for d in _reproject(consistency_scene, shift_px=0.5)]
    for view, (good, bad) in enumerate(zip(right, shifted), start=1):
        assert bad > 2.5 * good, f"view {view}: right {good:.4f}, shifted {bad:.4f}"


def test_ground_truth_is_z_depth_not_ray_length(consistency_scene: Scene) -> None:
    # back-project with the ray length instead of z: the corners move, photo-consistency drops
    k = consistency_scene.intrinsics[0].clone()
    k[:2] /= 4
    hq, wq = consistency_scene.depth.shape
    ys, xs = torch.meshgrid(torch.arange(hq, dtype=torch.float64), torch.arange(wq, dtype=torch.float64),
                            indexing="ij")
    rays = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ torch.linalg.inv(k).T
    stretch = rays.norm(dim=-1)  # ray length per unit z, > 1 off-centre
    assert float(stretch.max()) > 1.02  # the test has leverage at this field of view
    ray_length_scene = Scene(
        consistency_scene.spec, consistency_scene.images, consistency_scene.intrinsics,
        consistency_scene.extrinsics, (consistency_scene.depth.double() * stretch).float(), consistency_scene.mask,
    )
    right = [float(d.median()) for d in _reproject(consistency_scene)]
    wrong = [float(d.median()) for d in _reproject(ray_length_scene)]
    for good, bad in zip(right, wrong):
        assert bad > 3 * good


# --- pairs ----------------------------------------------------------------------------------------


def test_pairs_list_every_other_view_for_each_reference(small_scene: Scene) -> None:
    n = small_scene.spec.num_views
    assert sorted(small_scene.pairs) == list(range(n))
    for ref, sources in small_scene.pairs.items():
        assert sorted(src for src, _ in sources) == [v for v in range(n) if v != ref]


def test_pair_scores_are_positive_and_descending(small_scene: Scene) -> None:
    for sources in small_scene.pairs.values():
        scores = [score for _, score in sources]
        assert all(score > 0 for score in scores)
        assert scores == sorted(scores, reverse=True)


def test_pair_scores_are_symmetric(small_scene: Scene) -> None:
    score = {(ref, src): s for ref, sources in small_scene.pairs.items() for src, s in sources}
    for (ref, src), value in score.items():
        assert score[(src, ref)] == value
