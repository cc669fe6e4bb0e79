"""Unit tests of harness/properties.py: strategies draw valid rigs, the metamorphic transforms do
what they say, profiles and legs are chosen as documented. No rendering, no export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.chain import Chain, ChainConfig, Leg
from harness.data.synthetic import SceneSpec
from harness.data.views import Views, make_feed
from harness.errors import BackendUnavailable, InvalidArgument
from harness.properties import (
    BOUNDS,
    FAR_PLANE,
    NEAR_PLANE,
    TORCH_LEG,
    RigCase,
    RigRunners,
    metamorphic_legs,
    misplace_hypotheses,
    permute_sources,
    property_legs,
    rig_cases,
    scale_rig,
    settings_for,
    source_orders,
)

QUICK, FULL = BOUNDS["quick"], BOUNDS["full"]
DRAWS = settings(max_examples=60, derandomize=True, database=None, deadline=None)


def _views(n: int = 4) -> Views:
    """Distinguishable views (image i is filled with i) with random cameras, no rendering."""
    gen = torch.Generator().manual_seed(0)
    extrinsics = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    extrinsics[:, :3, :3] = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64))[0]
    extrinsics[:, :3, 3] = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 100
    intrinsics = torch.tensor([[80.0, 0, 32], [0, 80.0, 32], [0, 0, 1]], dtype=torch.float64).repeat(n, 1, 1)
    intrinsics[:, 0, 0] += torch.arange(n)  # distinguishable per view
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 64, 64).contiguous() / n
    depth = torch.full((16, 16), 700.0)
    return Views(images, intrinsics, extrinsics, 425.0, 2.5, tuple(range(10, 10 + n)), depth, depth > 0)


# -- strategies -------------------------------------------------------------------------------

@DRAWS
@given(rig=rig_cases(QUICK))
def test_quick_rigs_have_valid_sizes_views_and_depths(rig):
    spec = rig.spec
    assert spec.height % 32 == 0 and spec.width % 32 == 0
    assert QUICK.height[0] <= spec.height <= QUICK.height[1] and QUICK.width[0] <= spec.width <= QUICK.width[1]
    assert QUICK.views[0] <= spec.num_views <= QUICK.views[1]
    assert rig.num_depth % 8 == 0 and QUICK.num_depth[0] <= rig.num_depth <= QUICK.num_depth[1]
    assert 0 <= spec.num_rectangles <= 5 and 0.0 <= spec.photometric_jitter <= 0.2
    low, high = spec.view_spread_deg
    assert 2.0 <= low <= high <= low + 6.0


@DRAWS
@given(rig=rig_cases(FULL, min_views=3, exported=True))
def test_min_views_and_the_export_cap_bound_the_view_count(rig):
    assert 3 <= rig.spec.num_views <= FULL.max_views_exported


@DRAWS
@given(rig=rig_cases(QUICK, exported=True))
def test_quick_rigs_that_are_exported_have_at_most_three_views(rig):
    assert 2 <= rig.spec.num_views <= 3


@pytest.mark.parametrize("num_depth", [16, 24, 32, 48])
def test_rig_hypotheses_span_the_dtu_range(num_depth):
    rig = RigCase(SceneSpec(num_views=2, height=64, width=64), num_depth)
    values = make_feed(_views(2), num_depth, rig.interval_scale)["depth_values"][0]
    interval = 2.5 * rig.interval_scale
    assert float(values[0]) == 425.0
    assert abs(float(values[-1]) - FAR_PLANE) <= interval


@DRAWS
@given(data=st.data(), num_views=st.integers(3, 6))
def test_source_orders_are_permutations_other_than_the_identity(data, num_views):
    order = data.draw(source_orders(num_views))
    assert sorted(order) == list(range(1, num_views))
    assert order != sorted(order)


def test_rig_bounds_give_low_middle_and_high_cases_on_the_grid():
    low, mid, high = (QUICK.case("b", 3, i) for i in range(3))
    assert (low.height, low.width, low.num_depth) == (64, 64, 16)
    assert (high.height, high.width, high.num_depth) == (128, 160, 32)
    assert mid.height % 32 == 0 and mid.width % 32 == 0 and mid.num_depth % 8 == 0
    assert low.views == mid.views == high.views == 3


# -- transforms -------------------------------------------------------------------------------

def test_permutation_keeps_the_reference_first_and_moves_sources_together():
    views = _views(4)
    permuted = permute_sources(views, [3, 1, 2])
    for i, source in enumerate([0, 3, 1, 2]):
        assert torch.equal(permuted.images[i], views.images[source])
        assert torch.equal(permuted.extrinsics[i], views.extrinsics[source])
        assert torch.equal(permuted.intrinsics[i], views.intrinsics[source])
    assert permuted.view_ids == (10, 13, 11, 12)
    assert permuted.depth_min == views.depth_min and torch.equal(permuted.depth, views.depth)


@pytest.mark.parametrize("order", [[0, 1, 2], [1, 2], [1, 1, 2], [1, 2, 4]])
def test_permutation_refuses_anything_but_a_permutation_of_the_sources(order):
    with pytest.raises(InvalidArgument, match="not a permutation"):
        permute_sources(_views(4), order)


@pytest.mark.parametrize("scale", [0.5, 1.37, 2.0])
def test_scaling_scales_translations_and_depths_only(scale):
    views = _views(3)
    before = views.extrinsics.clone()
    scaled = scale_rig(views, scale)
    assert torch.equal(views.extrinsics, before)  # the input is not modified
    assert torch.allclose(scaled.extrinsics[:, :3, 3], views.extrinsics[:, :3, 3] * scale)
    assert torch.equal(scaled.extrinsics[:, :3, :3], views.extrinsics[:, :3, :3])
    assert torch.equal(scaled.extrinsics[:, 3], views.extrinsics[:, 3])
    assert torch.equal(scaled.intrinsics, views.intrinsics) and torch.equal(scaled.images, views.images)
    assert scaled.depth_min == pytest.approx(425.0 * scale) and scaled.depth_interval == pytest.approx(2.5 * scale)
    assert torch.allclose(scaled.depth, views.depth * scale)
    hypotheses = make_feed(views, 16, 3.0)["depth_values"]
    assert torch.allclose(make_feed(scaled, 16, 3.0)["depth_values"], hypotheses * scale, rtol=1e-6)


@pytest.mark.parametrize("num_depth", [16, 32])
def test_misplaced_hypotheses_lie_beyond_the_far_or_before_the_near_plane(num_depth):
    views = _views(2)
    rig = RigCase(SceneSpec(num_views=2, height=64, width=64), num_depth)
    far = make_feed(misplace_hypotheses(views, rig, "far"), num_depth, rig.interval_scale)["depth_values"]
    near = make_feed(misplace_hypotheses(views, rig, "near"), num_depth, rig.interval_scale)["depth_values"]
    assert float(far.min()) > FAR_PLANE
    assert 0 < float(near.min()) and float(near.max()) < NEAR_PLANE
    with pytest.raises(InvalidArgument):
        misplace_hypotheses(views, rig, "sideways")


# -- profiles and legs ------------------------------------------------------------------------

def test_settings_follow_the_harness_profile():
    quick, full = settings_for("quick"), settings_for("full")
    assert quick.max_examples == 6 and quick.derandomize and quick.deadline is None and quick.database is None
    assert full.max_examples == 40 and not full.derandomize


def test_an_explicit_hypothesis_profile_wins():
    chosen = settings_for("quick", explicit="default")
    assert chosen.max_examples == settings().max_examples


def test_quick_property_legs_use_the_first_exporter_only():
    args = (("ort-cpu", "trt-fp16"), ("raw", "simplified"), ("precomputed", "closed_form"), ("torchscript", "dynamo"))
    quick, full = property_legs("quick", *args), property_legs("full", *args)
    assert {leg.exporter for leg in quick} == {"torchscript"}
    assert all(leg.case == "rigs" for leg in full) and len(set(quick)) == len(quick)
    assert quick[0].id == "ort-cpu-raw-vs-torch-fp32-precomputed-torchscript-rigs"
    ids = {leg.id for leg in quick}
    # every candidate on every variant of the first graph; the other workaround on the first candidate
    assert ids == {"ort-cpu-raw-vs-torch-fp32-precomputed-torchscript-rigs",
                   "ort-cpu-simplified-vs-torch-fp32-precomputed-torchscript-rigs",
                   "trt-fp16-raw-vs-torch-fp32-precomputed-torchscript-rigs",
                   "trt-fp16-simplified-vs-torch-fp32-precomputed-torchscript-rigs",
                   "ort-cpu-raw-vs-torch-fp32-closed_form-torchscript-rigs"}
    # full adds the other exporter (every variant) on the first candidate
    assert {leg.id for leg in full} - ids == {"ort-cpu-raw-vs-torch-fp32-precomputed-dynamo-rigs",
                                              "ort-cpu-simplified-vs-torch-fp32-precomputed-dynamo-rigs"}


def test_property_legs_give_a_candidate_its_first_possible_workaround():
    legs = property_legs("quick", ("ort-cpu", "trt-fp32"), ("raw",), ("custom_op", "precomputed"), ("torchscript",))
    # custom_op has no TensorRT leg: trt-fp32 falls to the next workaround
    assert [leg.id for leg in legs] == ["ort-cpu-raw-vs-torch-fp32-custom_op-torchscript-rigs",
                                        "trt-fp32-raw-vs-torch-fp32-precomputed-torchscript-rigs",
                                        "ort-cpu-raw-vs-torch-fp32-precomputed-torchscript-rigs"]


def test_metamorphic_legs_are_torch_then_fp32_onnx_runtime():
    legs = metamorphic_legs(("ort-cpu-fp16", "trt-fp32", "ort-cpu", "ort-cuda"), ("closed_form",), ("dynamo",))
    assert legs[0] is TORCH_LEG
    assert [leg.candidate for leg in legs[1:]] == ["ort-cpu", "ort-cuda"]
    assert all(leg.workaround == "closed_form" and leg.exporter == "dynamo" for leg in legs[1:])


def test_metamorphic_legs_skip_workaround_exporter_pairs_that_do_not_exist():
    legs = metamorphic_legs(("ort-cpu",), ("custom_op", "precomputed"), ("dynamo", "torchscript"))
    assert (legs[1].workaround, legs[1].exporter) == ("custom_op", "torchscript")  # custom_op: torchscript only
    legs = metamorphic_legs(("ort-cpu",), ("custom_op",), ("dynamo",))
    assert legs == [TORCH_LEG]


# -- runners (no export) ----------------------------------------------------------------------

@pytest.fixture
def runners(tmp_path):
    return RigRunners(Chain(ChainConfig(cache_dir=tmp_path, device="cpu")), QUICK)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
@pytest.mark.parametrize(("candidate", "missing"), [("ort-cuda", "no CUDA device"), ("ort-cuda-fp16", "no CUDA device"),
                                                    ("nope-x", "no such backend")])
def test_unavailable_backends_name_what_is_missing(runners, candidate, missing):
    with pytest.raises(BackendUnavailable, match=missing):
        runners.require(Leg(candidate, "raw", "precomputed", "torchscript", "rigs"))


def test_torch_leg_uses_the_chains_reference_runner(runners):
    assert runners.runner(TORCH_LEG, 3) is runners.chain.torch_runner("fp32")


def test_export_feed_has_the_view_count_and_the_chains_export_shape(runners):
    feed = runners.export_feed(2)
    assert tuple(feed["imgs"].shape) == (1, 2, 3, 128, 160)
    assert tuple(feed["depth_values"].shape) == (1, 48)
    assert tuple(feed["inverse_proj_matrices"].shape) == (1, 2, 4, 4)


def test_hypothesis_profiles_are_namespaced_and_leave_a_users_own_alone():
    settings.register_profile("quick", max_examples=1234)  # a user's own profile of the generic name
    try:
        assert settings.get_profile("quick").max_examples == 1234
        assert settings_for("quick").max_examples == 6  # the harness uses harness-quick
        assert settings.get_profile("harness-full").max_examples == 40
    finally:
        settings.register_profile("quick")


def test_property_legs_leave_backends_that_consume_the_model_to_the_fixed_cases():
    legs = property_legs("full", ("torch-fast-fp16", "ort-cpu"), ("raw",), ("precomputed",), ("torchscript",))
    assert [leg.candidate for leg in legs] == ["ort-cpu"]


def test_property_engines_run_with_the_chains_trt_settings(tmp_path, monkeypatch):
    """The property suite once ignored --harness-trt-cuda-graph and the buffer mode: its TensorRT
    runners now get the chain's run settings, as every other front's do."""
    from types import SimpleNamespace

    from harness.backends import registry, trt_api
    from harness.convert import engine as engine_module

    chain = Chain(ChainConfig(cache_dir=tmp_path, device="cpu", trt_cuda_graph=True, trt_buffers="pycuda"))
    rigs = RigRunners(chain, QUICK)
    built = SimpleNamespace(path=tmp_path / "e.plan", sha256="ab" * 32)
    made: dict = {}

    class FakeEngineFromOnnx:
        def __init__(self, artifact, settings, profile, cache):
            made["precision"] = settings.precision

        def __call__(self):
            return built

    class Prepared:
        def prepare(self):
            return self

    monkeypatch.setattr(trt_api, "bind", lambda flavour=None: None)
    monkeypatch.setattr(registry, "require", lambda name: None)
    monkeypatch.setattr(engine_module, "EngineFromOnnx", FakeEngineFromOnnx)
    monkeypatch.setattr(rigs, "onnx", lambda *a, **k: SimpleNamespace(path=tmp_path / "g.onnx"))
    monkeypatch.setattr(registry, "make_runner", lambda name, path, **settings: made.update(name=name, **settings) or Prepared())
    rigs.runner(Leg("trt-tf32", "simplified", "precomputed", "torchscript", "rigs"), 3)
    assert made["name"] == "trt-tf32" and made["precision"] == "tf32"
    assert made["cuda_graph"] is True and made["buffers"] == "pycuda"
    assert made == {**made, **chain.trt_settings(built)}


def test_seeded_rigs_are_pure_functions_of_the_seed_inside_the_full_bounds():
    from harness.properties import EDGE_SEEDS_FROM, seeded_rig

    bounds = BOUNDS["full"]
    rigs = [seeded_rig(seed, bounds) for seed in (*range(1, 41), *range(EDGE_SEEDS_FROM, EDGE_SEEDS_FROM + 40))]
    assert rigs[:3] == [seeded_rig(seed, bounds) for seed in (1, 2, 3)]
    for rig in rigs:
        assert bounds.views[0] <= rig.spec.num_views <= bounds.max_views_exported
        assert bounds.height[0] <= rig.spec.height <= bounds.height[1] and rig.spec.height % 32 == 0
        assert bounds.width[0] <= rig.spec.width <= bounds.width[1] and rig.spec.width % 32 == 0
        assert bounds.num_depth[0] <= rig.num_depth <= bounds.num_depth[1] and rig.num_depth % 8 == 0

    def at_bounds(group):
        return sum(r.num_depth in bounds.num_depth for r in group) + sum(r.spec.num_views in (2, 5) for r in group)

    assert at_bounds(rigs[40:]) > at_bounds(rigs[:40])  # edge-biased seeds sit at the bounds more often


def test_the_property_rigs_corpus_renders_its_rigs_in_memory():
    from harness.gates.calibration import corpus, item_feed, item_views

    items = corpus("property-rigs", [3])
    assert [i.id for i in items] == ["rig-00003"] and items[0].layout == "memory" and not items[0].case
    views = item_views(items[0], Path("/nonexistent"))  # no folder is written or read
    feed = item_feed(items[0], views)
    assert tuple(feed["imgs"].shape[1:3]) == (items[0].spec["num_views"], 3)
    assert feed["depth_values"].shape[-1] == items[0].num_depth
