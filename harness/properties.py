"""Property-based and metamorphic inputs for MVSNet: Hypothesis settings profiles, strategies
that draw valid synthetic rigs, metamorphic transforms of a rig, and the dynamic-shape graphs
and runners that the property suite (``suites/test_properties.py``) runs them on.

Profiles (registered on import, namespaced so they never replace a user's own ``quick`` or
``full``): ``harness-quick`` (CI: 6 derandomized examples, so a CI run is reproducible) and
``harness-full`` (40 random examples). ``settings_for`` picks the one matching the harness
profile unless ``--hypothesis-profile`` named one. Units: lengths in mm, angles in degrees.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from harness.backends import registry
from harness.backends.base import Runner
from harness.chain import Chain, Leg, plan_legs
from harness.convert.mixed import MixedOnnxFromOnnx
from harness.convert.onnx_export import ExportConfig, OnnxArtifact, OnnxFromTorch, SimplifiedOnnxFromOnnx
from harness.convert.workarounds import get_workaround
from harness.data.cases import DTU_INTERVAL_SCALE, DTU_NUM_DEPTH, Case
from harness.data.scenes import scene_views
from harness.data.synthetic import DTU_DEPTH_INTERVAL, DTU_DEPTH_MIN, SceneSpec, render_scene
from harness.data.views import Views, make_feed
from harness.errors import InvalidArgument
from harness.model.inputs import DEPTH_MULTIPLE, SIZE_MULTIPLE

# quick skips shrinking: CI reports the first falsifying example it drew (derandomized, so the
# same one on every run); full shrinks it to a minimal rig and prints a @reproduce_failure blob.
#: Hypothesis profile names: ``harness-<harness profile>``.
PROFILE_PREFIX = "harness-"
settings.register_profile(f"{PROFILE_PREFIX}quick", max_examples=6, deadline=None, derandomize=True, database=None,
                          phases=(Phase.explicit, Phase.reuse, Phase.generate),
                          suppress_health_check=[HealthCheck.too_slow])
# explicit derandomize=False: under CI=... Hypothesis's own defaults turn derandomisation on
settings.register_profile(f"{PROFILE_PREFIX}full", max_examples=40, deadline=None, print_blob=True, derandomize=False,
                          phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
                          suppress_health_check=[HealthCheck.too_slow])

#: The scene's depth range: DTU's 192 hypotheses from 425 mm, interval 2.5 mm x 1.06.
NEAR_PLANE = DTU_DEPTH_MIN
FAR_PLANE = DTU_DEPTH_MIN + DTU_DEPTH_INTERVAL * DTU_INTERVAL_SCALE * (DTU_NUM_DEPTH - 1)
#: Misplaced hypotheses: beyond the far plane (same interval), or inside [0.25, 0.75] x near.
FAR_START, NEAR_SPAN = 1.25, (0.25, 0.75)


def settings_for(harness_profile: str, explicit: str | None = None) -> settings:
    """The Hypothesis settings for a run: ``--hypothesis-profile`` when given (Hypothesis's
    plugin has loaded it as the default), else the profile named like the harness profile."""
    if explicit:
        return settings()
    return settings(settings.get_profile(f"{PROFILE_PREFIX}{harness_profile}"), verbosity=settings().verbosity)


@dataclass(frozen=True)
class RigBounds:
    """Inclusive ranges the strategies draw from. Views above ``max_views_exported`` are drawn
    only where no graph is exported (each view count needs its own export)."""

    views: tuple[int, int]
    max_views_exported: int
    height: tuple[int, int]
    width: tuple[int, int]
    num_depth: tuple[int, int]

    def case(self, name: str, views: int, pick: int) -> Case:
        """A Case with ``views`` views at the low (pick 0), middle (1) or high (2) shape."""
        def at(lo: int, hi: int, step: int) -> int:
            return (lo, (lo + hi) // 2 // step * step, hi)[pick]
        return Case(name, views, at(*self.height, SIZE_MULTIPLE), at(*self.width, SIZE_MULTIPLE),
                    at(*self.num_depth, DEPTH_MULTIPLE))


#: Where depth is observable (checked on 30 random rigs with the bundled weights: hypotheses
#: beyond the scene lowered the mean confidence on every one).
OBSERVABLE_SPREAD_DEG = 6.0
OBSERVABLE: dict[str, int] = {"height": 128, "width": 160, "num_depth": 32}

BOUNDS = {
    "quick": RigBounds(views=(2, 5), max_views_exported=3, height=(64, 128), width=(64, 160), num_depth=(16, 32)),
    "full": RigBounds(views=(2, 5), max_views_exported=5, height=(64, 256), width=(64, 320), num_depth=(16, 64)),
}


@dataclass(frozen=True)
class RigCase:
    """A synthetic rig and the depth hypotheses it is run with (425-935 mm, like the cases)."""

    spec: SceneSpec
    num_depth: int

    @property
    def case(self) -> Case:
        return Case("rig", self.spec.num_views, self.spec.height, self.spec.width, self.num_depth)

    @property
    def interval_scale(self) -> float:
        return self.case.interval_scale

    @property
    def shape_id(self) -> str:
        return self.case.shape_id

    def describe(self) -> str:
        return f"case {self.shape_id}, {self.spec!r}"


def _rig_from(pick: Callable[[int, int], int], bounds: RigBounds, min_views: int = 2, exported: bool = False,
              observable: bool = False) -> RigCase:
    """A valid rig, each choice made by ``pick(low, high)`` (an integer in [low, high]): Hypothesis's
    draws for the property suite, a seeded RNG for the calibration corpus (one rig space for both)."""
    def multiple(limits: tuple[int, int], step: int) -> int:
        return pick(-(-limits[0] // step), limits[1] // step) * step

    top = bounds.max_views_exported if exported else bounds.views[1]
    spread_lo, height, width, depth = (2.0, bounds.height, bounds.width, bounds.num_depth)
    if observable:
        spread_lo = OBSERVABLE_SPREAD_DEG
        height = (max(height[0], OBSERVABLE["height"]), max(height[1], OBSERVABLE["height"]))
        width = (max(width[0], OBSERVABLE["width"]), max(width[1], OBSERVABLE["width"]))
        depth = (max(depth[0], OBSERVABLE["num_depth"]), max(depth[1], OBSERVABLE["num_depth"]))
    low_spread = pick(int(2 * spread_lo), 24) / 2  # up to 12 degrees, in half degrees
    spec = SceneSpec(
        seed=pick(0, 2**16 - 1),
        num_views=pick(max(min_views, bounds.views[0]), top),
        height=multiple(height, SIZE_MULTIPLE),
        width=multiple(width, SIZE_MULTIPLE),
        num_rectangles=pick(0, 5),
        view_spread_deg=(low_spread, low_spread + pick(0, 12) / 2),
        photometric_jitter=pick(0, 20) / 100,
    )
    return RigCase(spec, multiple(depth, DEPTH_MULTIPLE))


@st.composite
def rig_cases(draw: st.DrawFn, bounds: RigBounds, min_views: int = 2, exported: bool = False,
              observable: bool = False) -> RigCase:
    """Valid rigs: H, W multiples of 32, D a multiple of 8, 2..N views, 0..5 rectangles.

    ``observable`` keeps to rigs where depth is observable at all: >= 6 degrees between views,
    images >= 128x160 and D >= 32 (OBSERVABLE); the confidence property needs that.
    """
    return _rig_from(lambda low, high: draw(st.integers(low, high)), bounds, min_views, exported, observable)


#: Seeds from here on draw edge-biased rigs (see ``seeded_rig``).
EDGE_SEEDS_FROM = 1001


def seeded_rig(seed: int, bounds: RigBounds, exported: bool = True) -> RigCase:
    """A rig from the space ``rig_cases`` draws from, chosen by a seeded RNG: the calibration
    corpus's ``property-rigs`` family measures the noise of the very inputs the property suite gates.
    Seeds below ``EDGE_SEEDS_FROM`` pick uniformly; from it on each choice is one of its bounds
    with probability 1/3, as Hypothesis favours bounds: its worst rigs sat there (5 views, D=16)."""
    rng = random.Random(f"property-rigs-{seed}")
    if seed < EDGE_SEEDS_FROM:
        return _rig_from(rng.randint, bounds, exported=exported)

    def edge_biased(low: int, high: int) -> int:
        return rng.choice((low, high)) if rng.random() < 1 / 3 else rng.randint(low, high)

    return _rig_from(edge_biased, bounds, exported=exported)


def source_orders(num_views: int) -> st.SearchStrategy[list[int]]:
    """Orders of the source views 1..N-1 other than the identity (N >= 3)."""
    identity = list(range(1, num_views))
    return st.permutations(identity).filter(lambda order: list(order) != identity)


def render_rig(rig: RigCase) -> Views:
    return scene_views(render_scene(rig.spec))


def rig_feed(rig: RigCase, views: Views) -> dict[str, torch.Tensor]:
    """MVSNet's feed with the precomputed inverse (workarounds drop what they do not take)."""
    return make_feed(views, rig.num_depth, rig.interval_scale, with_inverse=True)


# -- metamorphic transforms ----------------------------------------------------------------------

def permute_sources(views: Views, order: Sequence[int]) -> Views:
    """The same rig with the source views (1..N-1) in ``order``; the reference stays view 0."""
    n = views.images.shape[0]
    if sorted(order) != list(range(1, n)):
        raise InvalidArgument("source order", "not a permutation of the source views", observed=list(order), expected=f"1..{n - 1}")
    index = [0, *order]
    return replace(views, images=views.images[index], intrinsics=views.intrinsics[index],
                   extrinsics=views.extrinsics[index], view_ids=tuple(views.view_ids[i] for i in index))


def scale_rig(views: Views, scale: float) -> Views:
    """World scaled by ``scale`` about the origin: camera translations, depth hypotheses and
    ground-truth depth times ``scale``; rotations, intrinsics and images unchanged."""
    extrinsics = views.extrinsics.clone()
    extrinsics[:, :3, 3] *= scale
    depth = views.depth * scale if views.depth is not None else None
    return replace(views, extrinsics=extrinsics, depth_min=views.depth_min * scale,
                   depth_interval=views.depth_interval * scale, depth=depth)


def misplace_hypotheses(views: Views, rig: RigCase, side: str) -> Views:
    """Hypotheses away from the scene: ``far`` starts at FAR_START x the far plane (same
    interval), ``near`` spans NEAR_SPAN x the near plane (a span that fits in front of it)."""
    if side == "far":
        return replace(views, depth_min=FAR_START * FAR_PLANE)
    if side == "near":
        lo, hi = (f * NEAR_PLANE for f in NEAR_SPAN)
        return replace(views, depth_min=lo, depth_interval=(hi - lo) / (rig.num_depth - 1) / rig.interval_scale)
    raise InvalidArgument("misplaced side", "unknown side", observed=side, expected="near or far")


# -- legs, dynamic graphs and runners ------------------------------------------------------------

def property_legs(profile: str, candidates: Sequence[str], variants: Sequence[str], workarounds: Sequence[str],
                  exporters: Sequence[str]) -> list[Leg]:
    """Parity legs on random rigs (case ``rigs``). Rigs vary what the fixed cases cannot (shapes,
    poses, view counts, D), so the graph axes are not fully crossed here (the parity suite crosses
    them at the fixed cases): every candidate runs every graph variant of the first
    workaround/exporter pair; the first candidate also runs the other workarounds (raw graph),
    and in the full profile the other exporters (every variant). Each leg keeps the profile's
    full example count. Backends that consume the torch model itself (the fast path: torch.compile
    and a CUDA graph per shape) are gated at the fixed cases only: every random rig would recompile."""
    candidates = tuple(c for c in candidates if Leg(c, "raw", "precomputed", "torchscript", "rigs").consumes != "model")
    variants = tuple(variants)
    first_exporter = tuple(exporters)[:1]
    legs: list[Leg] = []
    for candidate in candidates:
        for workaround in workarounds:  # the first workaround the candidate can run with the first exporter
            found = plan_legs(("rigs",), (workaround,), first_exporter, variants, (candidate,))
            if found:
                legs += found
                break
    if candidates:
        first = candidates[0]
        legs += plan_legs(("rigs",), tuple(workarounds), first_exporter, variants[:1], (first,))
        if profile == "full":
            legs += plan_legs(("rigs",), tuple(workarounds)[:1], tuple(exporters)[1:], variants, (first,))
    return list(dict.fromkeys(legs))


#: The torch reference as a leg (workaround ``none``: the original three-input call).
TORCH_LEG = Leg("torch-fp32", "eager", "none", "eager", "rigs")


def metamorphic_legs(candidates: Sequence[str], workarounds: Sequence[str], exporters: Sequence[str]) -> list[Leg]:
    """torch strict FP32, then each FP32 ONNX Runtime candidate on the raw dynamic graph of the
    first workaround/exporter pair that exists (plan_legs drops unsupported pairs)."""
    ort = [c for c in candidates if c in ("ort-cpu", "ort-cuda")]
    legs = [plan_legs(("rigs",), tuple(workarounds), tuple(exporters), ("raw",), (c,))[:1] for c in ort]
    return [TORCH_LEG, *(leg for found in legs for leg in found)]


class RigRunners:
    """Runs rigs on a leg's backend: dynamic-shape (H, W, D) graphs per view count, exported
    once per session and cached on disk in the chain's cache; TensorRT profiles span ``bounds``;
    rendered feeds and torch outputs memoised per rig (examples repeat across legs)."""

    def __init__(self, chain: Chain, bounds: RigBounds) -> None:
        self.chain = chain
        self.bounds = bounds
        self._memo: dict[tuple, Any] = {}  # graphs and runners: for the session
        self._rigs: dict[tuple, Any] = {}  # rendered rigs and torch outputs: bounded

    def _once(self, key: tuple, make: Any, per_rig: bool = False) -> Any:
        store = self._rigs if per_rig else self._memo
        if key not in store:
            if per_rig and len(store) >= 128:
                store.clear()
            store[key] = make()
        return store[key]

    def views(self, rig: RigCase) -> Views:
        return self._once(("views", rig), lambda: render_rig(rig), per_rig=True)

    def reference(self, rig: RigCase) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(feed, torch strict FP32 outputs of the original three-input call) for ``rig``."""
        def run() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
            feed = rig_feed(rig, self.views(rig))
            return feed, self.infer(TORCH_LEG, feed)

        return self._once(("reference", rig), run, per_rig=True)

    def infer(self, leg: Leg, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        runner = self.runner(leg, int(feed["imgs"].shape[1]))
        return runner.infer(get_workaround(leg.workaround).prepare_feed(feed))

    def export_feed(self, views: int) -> dict[str, torch.Tensor]:
        """What an export traces: Chain.export_feed's shape (128x160, D=48) with ``views`` views."""
        rig = RigCase(SceneSpec(seed=0, num_views=views, height=128, width=160, num_rectangles=0, supersample=1), 48)
        return rig_feed(rig, render_rig(rig))

    def onnx(self, views: int, workaround: str, exporter: str, variant: str, precision: str = "fp32") -> OnnxArtifact:
        def build() -> OnnxArtifact:
            if variant == "simplified":
                return SimplifiedOnnxFromOnnx(self.onnx(views, workaround, exporter, "raw", precision), self.chain.cache)()
            if precision == "fp16":  # derived from the FP32 export, as the chain does
                return MixedOnnxFromOnnx(self.onnx(views, workaround, exporter, "raw", "fp32"), self.chain.cache)()
            config = ExportConfig(exporter=exporter, opset=self.chain.config.opset, workaround=workaround,  # type: ignore[arg-type]
                                  dynamic=True)
            return OnnxFromTorch(self.chain.model, self.chain.weights_digest, self.export_feed(views), config,
                                 get_workaround(workaround), self.chain.cache)()

        return self._once(("onnx", views, workaround, exporter, variant, precision), build)

    def require(self, leg: Leg) -> None:
        """Raise BackendUnavailable (naming what is missing) before any export work; the registry
        says what the candidate is and whether it can run here."""
        from harness.backends import trt_api

        spec = registry.get(leg.candidate)  # an unknown name: BackendUnavailable naming the known ones
        if spec.consumes == "engine":
            trt_api.bind(self.chain.config.trt_flavour)  # the flavour the chain asks for, not the default
        registry.require(leg.candidate)

    def runner(self, leg: Leg, views: int) -> Runner:
        """The leg's runner for ``views`` views: the chain's torch runner, or one on the dynamic graph."""
        if leg.candidate == TORCH_LEG.candidate:
            return self.chain.torch_runner("fp32")
        return self._once(("runner", leg, views), lambda: self._make_runner(leg, views))

    def _make_runner(self, leg: Leg, views: int) -> Runner:
        from harness.convert.engine import BuildSettings, EngineFromOnnx, Profile

        self.require(leg)
        spec = registry.get(leg.candidate)
        artifact = self.onnx(views, leg.workaround, leg.exporter, leg.variant, leg.graph_precision)
        if spec.consumes == "onnx":
            label = leg.variant if leg.graph_precision == "fp32" else f"fp16-{leg.variant}"
            return registry.make_runner(leg.candidate, artifact.path, label=label).prepare()
        names = get_workaround(leg.workaround).input_names
        low, opt, high = (self.bounds.case(f"rigs-{i}", views, i) for i in range(3))
        config = self.chain.config
        build = BuildSettings(precision=spec.precision, workspace_mib=config.trt_workspace_mib,  # type: ignore[arg-type]
                              optimization_level=config.trt_opt_level, flavour=config.trt_flavour)
        engine = EngineFromOnnx(artifact, build, Profile.around(opt, names, low, high), self.chain.cache)()
        # the chain's run settings: buffers, CUDA graph and runtime cache as every other front
        return registry.make_runner(leg.candidate, engine.path, **self.chain.trt_settings(engine)).prepare()

    def release_runners(self) -> None:
        """Close every runner kept for the session (graphs stay). A run at a full-resolution shape
        calls it between legs: each ONNX Runtime CUDA session keeps its own memory arena, and at
        DTU's 5x1184x1600xD192 a few of them exceed an H200's 139 GiB."""
        for key in [key for key, value in self._memo.items() if isinstance(value, Runner)]:
            self._memo.pop(key).close()

    def close(self) -> None:
        self.release_runners()
        self._memo.clear()
        self._rigs.clear()
