"""Input checks: every malformed input is refused with a HarnessError that says what to change."""

from __future__ import annotations

import re

import pytest
import torch

from harness.errors import HarnessError, InvalidInput, ShapeError
from harness.model.geometry import inverse_precomputed
from harness.model.inputs import check_image_size, check_num_depth, check_shapes, check_values, nearest_valid_size

# '<subject> | <problem>: <observed>. Expected: <allowed>. Fix: <step>.' (harness/errors.py, DESIGN.md)
MESSAGE = re.compile(r"^(?P<subject>[^|]+?) \| (?P<problem>[^:]+): (?P<observed>.+)\. Expected: .+\. Fix: .+\.$")


def _inputs(make_projections, batch=1, views=3, height=64, width=64, num_depth=16, seed=0):
    """Valid MVSNet inputs: images, realistic projections, their inverses, DTU-like hypotheses."""
    gen = torch.Generator().manual_seed(seed)
    proj = make_projections(batch, views, seed=seed, height=height // 4, width=width // 4).to(torch.float32)
    return {
        "imgs": torch.rand(batch, views, 3, height, width, generator=gen),
        "proj_matrices": proj,
        "depth_values": (425.0 + 2.65 * torch.arange(num_depth, dtype=torch.float32)).expand(batch, -1).contiguous(),
        "inverse_proj_matrices": inverse_precomputed(proj).contiguous(),
    }


def _assert_well_formed(error: HarnessError, subject: str) -> None:
    assert isinstance(error, HarnessError)
    assert isinstance(error, ValueError)
    assert error.subject == subject
    match = MESSAGE.match(str(error))
    assert match is not None, f"message does not have the harness shape: {error}"
    assert match["subject"] == subject


# ---------------------------------------------------------------- valid inputs


@pytest.mark.parametrize("with_inverse", [False, True])
def test_valid_inputs_pass_both_checks(make_projections, with_inverse):
    feed = _inputs(make_projections, batch=2, views=3, height=64, width=96, num_depth=24)
    if not with_inverse:
        del feed["inverse_proj_matrices"]
    check_shapes(**feed)
    check_values(**feed)


def test_check_values_accepts_decreasing_hypotheses(make_projections):
    feed = _inputs(make_projections)
    feed["depth_values"] = feed["depth_values"].flip(1).contiguous()
    check_values(**feed)


def test_check_values_accepts_a_singular_source_projection(make_projections):
    # Only the reference projection is inverted; a degenerate source view merely sees nothing.
    feed = _inputs(make_projections)
    feed["proj_matrices"][0, 1, 2] = feed["proj_matrices"][0, 1, 0]
    check_values(feed["imgs"], feed["proj_matrices"], feed["depth_values"])


# ---------------------------------------------------------------- check_shapes


def _bad_shapes(feed: dict[str, torch.Tensor]) -> dict[str, tuple[dict[str, torch.Tensor], str]]:
    imgs, proj, depth, inv = feed["imgs"], feed["proj_matrices"], feed["depth_values"], feed["inverse_proj_matrices"]
    return {
        "imgs-rank-4": (dict(imgs=imgs[0], proj_matrices=proj, depth_values=depth), "imgs"),
        "imgs-rank-6": (dict(imgs=imgs.unsqueeze(0), proj_matrices=proj, depth_values=depth), "imgs"),
        "imgs-grey": (dict(imgs=imgs[:, :, :1], proj_matrices=proj, depth_values=depth), "imgs"),
        "imgs-channels-last": (dict(imgs=imgs.permute(0, 1, 3, 4, 2), proj_matrices=proj, depth_values=depth), "imgs"),
        "one-view": (dict(imgs=imgs[:, :1], proj_matrices=proj[:, :1], depth_values=depth), "imgs"),
        "proj-fewer-views": (dict(imgs=imgs, proj_matrices=proj[:, :2], depth_values=depth), "proj_matrices"),
        "proj-3x4": (dict(imgs=imgs, proj_matrices=proj[:, :, :3], depth_values=depth), "proj_matrices"),
        "proj-no-batch": (dict(imgs=imgs, proj_matrices=proj[0], depth_values=depth), "proj_matrices"),
        "inverse-fewer-views": (
            dict(imgs=imgs, proj_matrices=proj, depth_values=depth, inverse_proj_matrices=inv[:, :2]),
            "inverse_proj_matrices",
        ),
        "depth-rank-1": (dict(imgs=imgs, proj_matrices=proj, depth_values=depth[0]), "depth_values"),
        "depth-batch-2": (dict(imgs=imgs, proj_matrices=proj, depth_values=depth.expand(2, -1)), "depth_values"),
        "height-100": (
            dict(imgs=torch.zeros(1, 3, 3, 100, 64), proj_matrices=proj, depth_values=depth), "imgs"),
        "width-48": (dict(imgs=torch.zeros(1, 3, 3, 64, 48), proj_matrices=proj, depth_values=depth), "imgs"),
        "depth-12": (dict(imgs=imgs, proj_matrices=proj, depth_values=depth[:, :12]), "depth_values"),
        "depth-4": (dict(imgs=imgs, proj_matrices=proj, depth_values=depth[:, :4]), "depth_values"),
        "depth-0": (dict(imgs=imgs, proj_matrices=proj, depth_values=depth[:, :0]), "depth_values"),
    }


BAD_SHAPE_CASES = [
    "imgs-rank-4", "imgs-rank-6", "imgs-grey", "imgs-channels-last", "one-view", "proj-fewer-views", "proj-3x4",
    "proj-no-batch", "inverse-fewer-views", "depth-rank-1", "depth-batch-2", "height-100", "width-48", "depth-12",
    "depth-4", "depth-0",
]


@pytest.mark.parametrize("bad_case", BAD_SHAPE_CASES)
def test_check_shapes_refuses_malformed_shape_with_shape_error(make_projections, bad_case):
    feed = _inputs(make_projections, batch=1, views=3, height=64, width=64, num_depth=16)
    kwargs, subject = _bad_shapes(feed)[bad_case]
    with pytest.raises(ShapeError) as info:
        check_shapes(**kwargs)
    _assert_well_formed(info.value, subject)


def test_check_shapes_names_the_view_count_when_only_one_view_is_given(make_projections):
    feed = _inputs(make_projections, views=2)
    with pytest.raises(ShapeError, match=r"too few views: N=1\. Expected: N >= 2"):
        check_shapes(feed["imgs"][:, :1], feed["proj_matrices"][:, :1], feed["depth_values"])


def test_check_shapes_names_the_expected_matrix_shape(make_projections):
    feed = _inputs(make_projections, batch=2, views=3)
    with pytest.raises(ShapeError, match=re.escape("[2, 3, 4, 4]")):
        check_shapes(feed["imgs"], feed["proj_matrices"][:, :2], feed["depth_values"])


@pytest.mark.parametrize(
    ("height", "width", "suggestion"),
    [(100, 64, "96x64"), (64, 150, "64x160"), (500, 650, "512x640"), (10, 64, "32x64")],
)
def test_check_shapes_refuses_size_not_multiple_of_32_and_suggests_nearest(make_projections, height, width, suggestion):
    feed = _inputs(make_projections)
    with pytest.raises(ShapeError) as info:
        check_shapes(torch.zeros(1, 3, 3, height, width), feed["proj_matrices"], feed["depth_values"])
    message = str(info.value)
    assert "divisible by 8" in message
    assert re.search(rf"Fix: [^.]*\b{suggestion}\b", message), message
    _assert_well_formed(info.value, "imgs")


def test_check_shapes_names_only_the_offending_dimension(make_projections):
    feed = _inputs(make_projections)
    with pytest.raises(ShapeError) as info:
        check_shapes(torch.zeros(1, 3, 3, 64, 100), feed["proj_matrices"], feed["depth_values"])
    assert "W=100 (so W/4=25)" in str(info.value)
    assert "H=64" not in str(info.value)


def test_check_image_size_points_dtu_images_at_the_original_crop():
    # DTU's 1200x1600 images are cropped to 1184x1600 by MVSNet_pytorch (and by crop_to_valid);
    # a crop can only make an image smaller, so 1216 (also 16 pixels away) is not a fix.
    with pytest.raises(ShapeError) as info:
        check_image_size(1200, 1600)
    assert re.search(r"Fix: [^.]*\b1184x1600\b", str(info.value)), str(info.value)


@pytest.mark.parametrize(("size", "nearest"), [(100, 96), (150, 160), (1600, 1600), (500, 512), (1, 32), (32, 32)])
def test_nearest_valid_size_is_the_closest_positive_multiple_of_32(size, nearest):
    assert nearest_valid_size(size) == nearest


@pytest.mark.parametrize(("num_depth", "suggested"), [(12, 16), (4, 8), (190, 192), (0, 8)])
def test_check_num_depth_refuses_non_multiple_of_8_and_suggests_one(num_depth, suggested):
    with pytest.raises(ShapeError) as info:
        check_num_depth(num_depth)
    assert f"D={num_depth}" in str(info.value)
    assert f"use D={suggested}" in str(info.value)
    _assert_well_formed(info.value, "depth_values")


@pytest.mark.parametrize("num_depth", [8, 48, 192])
def test_check_num_depth_accepts_multiples_of_8(num_depth):
    check_num_depth(num_depth)


# ---------------------------------------------------------------- check_values


@pytest.mark.parametrize("name", ["imgs", "proj_matrices", "depth_values", "inverse_proj_matrices"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_check_values_refuses_non_finite_values_and_names_the_tensor(make_projections, name, bad):
    feed = _inputs(make_projections)
    feed[name].view(-1)[-1] = bad
    with pytest.raises(InvalidInput) as info:
        check_values(**feed)
    _assert_well_formed(info.value, name)
    assert "NaN or Inf" in str(info.value)
    assert f"1 of {feed[name].numel()} values" in str(info.value)


@pytest.mark.parametrize("batch_item", [0, 1])
def test_check_values_refuses_a_singular_reference_projection(make_projections, batch_item):
    feed = _inputs(make_projections, batch=2)
    del feed["inverse_proj_matrices"]
    ref = feed["proj_matrices"][batch_item, 0]
    ref[2] = 2.0 * ref[0]  # two proportional rows
    with pytest.raises(InvalidInput, match="singular") as info:
        check_values(**feed)
    _assert_well_formed(info.value, "proj_matrices")


def test_check_values_refuses_an_all_zero_reference_projection(make_projections):
    feed = _inputs(make_projections)
    del feed["inverse_proj_matrices"]
    feed["proj_matrices"][0, 0] = 0.0
    with pytest.raises(InvalidInput, match="singular"):
        check_values(**feed)


@pytest.mark.parametrize("wrong", ["identity", "transpose", "perturbed-1e-3", "other-view"])
def test_check_values_refuses_an_inverse_that_does_not_invert_the_reference(make_projections, wrong):
    feed = _inputs(make_projections)
    inv = feed["inverse_proj_matrices"]
    if wrong == "identity":
        inv[0, 0] = torch.eye(4)
    elif wrong == "transpose":
        inv[0, 0] = feed["proj_matrices"][0, 0].T
    elif wrong == "perturbed-1e-3":
        inv[0, 0] *= 1.001
    else:
        inv[0, 0] = inv[0, 1].clone()
    with pytest.raises(InvalidInput, match="is not the inverse") as info:
        check_values(**feed)
    _assert_well_formed(info.value, "inverse_proj_matrices")


def test_check_values_accepts_a_float32_copy_of_the_float64_inverse(make_projections):
    feed = _inputs(make_projections, batch=2, views=4)
    feed["inverse_proj_matrices"] = torch.linalg.inv(feed["proj_matrices"].double()).float()
    check_values(**feed)


@pytest.mark.parametrize(
    "depth",
    [
        [425.0, 430.0, 435.0, 432.0, 440.0, 445.0, 450.0, 455.0],  # one step back
        [425.0, 430.0, 430.0, 435.0, 440.0, 445.0, 450.0, 455.0],  # a repeated plane
        [425.0] * 8,  # all equal
    ],
    ids=["one-step-back", "repeated", "constant"],
)
def test_check_values_refuses_non_monotonic_hypotheses(make_projections, depth):
    feed = _inputs(make_projections, num_depth=8)
    feed["depth_values"] = torch.tensor([depth])
    with pytest.raises(InvalidInput, match="not strictly monotonic") as info:
        check_values(**feed)
    _assert_well_formed(info.value, "depth_values")


def test_check_values_refuses_non_monotonic_hypotheses_in_any_batch_item(make_projections):
    feed = _inputs(make_projections, batch=2, num_depth=8)
    feed["depth_values"][1, 4] = feed["depth_values"][1, 2]
    with pytest.raises(InvalidInput, match="not strictly monotonic"):
        check_values(**feed)


@pytest.mark.parametrize("start", [0.0, -100.0])
def test_check_values_refuses_hypotheses_at_or_behind_the_camera(make_projections, start):
    feed = _inputs(make_projections, num_depth=8)
    feed["depth_values"] = (start + 10.0 * torch.arange(8, dtype=torch.float32)).unsqueeze(0)
    with pytest.raises(InvalidInput, match="in front of the camera") as info:
        check_values(**feed)
    _assert_well_formed(info.value, "depth_values")
    assert f"min {start:g}" in str(info.value)
