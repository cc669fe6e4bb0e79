"""harness.data.cases: named input shapes and the data that fills them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import harness.data.cases as cases_module
from harness.data.cases import CASES, DTU_INTERVAL_SCALE, DTU_NUM_DEPTH, Case, case_feed, case_views, get_case
from harness.data.scenes import scene_views
from harness.data.synthetic import Scene, SceneSpec
from harness.data.views import depth_hypotheses
from harness.errors import InvalidArgument
from harness.model.inputs import check_image_size, check_num_depth

#: DTU's depth range with 192 planes at 2.5 mm * 1.06: 425 .. 931.15 mm
DTU_FIRST_DEPTH = 425.0
DTU_LAST_DEPTH = 425.0 + 2.5 * 1.06 * 191


@pytest.fixture(scope="module")
def small_views():
    return case_views(CASES["small"])


def test_the_three_cases_have_their_documented_shapes() -> None:
    assert list(CASES) == ["small", "seed", "dtu"]
    shapes = {name: (c.views, c.height, c.width, c.num_depth) for name, c in CASES.items()}
    assert shapes == {"small": (3, 128, 160, 48), "seed": (3, 512, 640, 192), "dtu": (5, 1184, 1600, 192)}
    assert all(case.name == name for name, case in CASES.items())


@pytest.mark.parametrize("name", list(CASES))
def test_every_case_fits_mvsnet(name: str) -> None:
    case = CASES[name]
    check_image_size(case.height, case.width)
    check_num_depth(case.num_depth)


@pytest.mark.parametrize("name", list(CASES))
def test_interval_scale_keeps_dtus_depth_range_for_every_case(name: str) -> None:
    case = CASES[name]
    hyps = depth_hypotheses(425.0, 2.5 * case.interval_scale, case.num_depth)
    step = 2.5 * case.interval_scale
    assert float(hyps[0]) == DTU_FIRST_DEPTH
    # D planes span (D-1) steps: the last plane is within one step of DTU's deepest one
    assert DTU_LAST_DEPTH - step <= float(hyps[-1]) <= DTU_LAST_DEPTH + 1e-3


def test_interval_scale_is_dtus_for_192_planes_and_grows_as_planes_shrink() -> None:
    assert CASES["seed"].interval_scale == pytest.approx(DTU_INTERVAL_SCALE)
    assert CASES["dtu"].interval_scale == pytest.approx(1.06)
    assert CASES["small"].interval_scale == pytest.approx(1.06 * 4)
    assert Case("x", 3, 128, 160, 96).interval_scale == pytest.approx(DTU_INTERVAL_SCALE * DTU_NUM_DEPTH / 96)


def test_shape_id_names_views_size_and_planes() -> None:
    assert CASES["seed"].shape_id == "3x512x640xD192"
    assert CASES["dtu"].shape_id == "5x1184x1600xD192"


@pytest.mark.parametrize("with_inverse", [False, True])
def test_input_shapes_describe_the_feed(with_inverse: bool) -> None:
    shapes = CASES["dtu"].input_shapes(with_inverse)
    expected = {"imgs": (1, 5, 3, 1184, 1600), "proj_matrices": (1, 5, 4, 4), "depth_values": (1, 192)}
    if with_inverse:
        expected["inverse_proj_matrices"] = (1, 5, 4, 4)
    assert shapes == expected


@pytest.mark.parametrize("name", list(CASES))
def test_get_case_returns_the_named_case(name: str) -> None:
    assert get_case(name) is CASES[name]


def test_get_case_unknown_name_lists_the_cases() -> None:
    with pytest.raises(InvalidArgument) as info:
        get_case("bogus")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "bogus" in message
    assert "small, seed, dtu" in message


def test_case_views_small_from_the_bundled_scene(small_views) -> None:
    assert small_views.size == (128, 160)
    assert small_views.images.shape == (3, 3, 128, 160)
    assert len(small_views.view_ids) == 3 and small_views.view_ids[0] == 0
    assert small_views.depth is not None and small_views.depth.shape == (32, 40)
    assert small_views.mask is not None and small_views.mask.shape == (32, 40)
    # downscaled by 4 from 512x640: the intrinsics follow
    assert float(small_views.intrinsics[0, 0, 0]) == pytest.approx(2892.33 * 640 / 1600 / 4)


def test_case_views_seed_uses_the_bundled_scene_as_is() -> None:
    views = case_views(CASES["seed"])
    assert views.size == (512, 640) and views.images.shape[0] == 3
    assert views.depth is not None and views.depth.shape == (128, 160)


def test_case_views_renders_a_synthetic_scene_when_the_bundled_one_is_too_small(monkeypatch: pytest.MonkeyPatch,
                                                                              small_scene: Scene) -> None:
    requested: list[SceneSpec] = []

    def fake_render(spec: SceneSpec) -> Scene:  # the real 5x1184x1600 render takes seconds
        requested.append(spec)
        return small_scene

    monkeypatch.setattr(cases_module, "render_scene", fake_render)
    views = case_views(CASES["dtu"])
    assert [(s.seed, s.num_views, s.height, s.width) for s in requested] == [(0, 5, 1184, 1600)]
    assert views.view_ids == scene_views(small_scene).view_ids


def test_case_views_refuses_a_user_scene_smaller_than_the_case(small_scene_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match="images are smaller than the case") as info:
        case_views(CASES["small"], scene=small_scene_dir)  # 64x96 < 128x160
    assert str(info.value).startswith(str(small_scene_dir))
    assert "--cases small" in str(info.value) and "--harness-" not in str(info.value)  # the CLI spelling; fronts translate


def test_case_views_takes_a_user_scene_path_as_str(small_scene_dir: Path) -> None:
    tiny = Case("tiny", 3, 64, 96, 8)
    views = case_views(tiny, scene=str(small_scene_dir))
    assert views.size == (64, 96) and views.source == str(small_scene_dir)


@pytest.mark.parametrize("with_inverse", [False, True])
def test_case_feed_matches_the_case_input_shapes(small_views, with_inverse: bool) -> None:
    case = CASES["small"]
    feed = case_feed(case, small_views, with_inverse=with_inverse)
    assert {name: tuple(t.shape) for name, t in feed.items()} == case.input_shapes(with_inverse)
    assert all(t.dtype == torch.float32 for t in feed.values())
    assert float(feed["depth_values"][0, 0]) == 425.0
    assert float(feed["depth_values"][0, -1]) == pytest.approx(425.0 + 2.5 * case.interval_scale * 47, abs=1e-3)
