"""False alarms of faithful conversions, each kept as a regression test.

Each case below failed the gate on main before the limits were calibrated (issue 21): the limits
had been fitted to the bundled scene and gated all-pixel statistics, which ambiguous pixels
(textureless surfaces, occlusion edges, truncated-index flips) dominate. Where the input still
trips main's statistic with today's graphs, the test shows that first; then that the calibrated
gate (fixtures/tolerances.toml, derived from the calibration records) passes the same faithful
leg. The FP16 graph is now converted from the FP32 export (closer to FP32 than main's traced
mixed-precision export), so its inputs no longer reach main's FP16 limits: their values on main
are quoted in the docstrings instead.
"""

from __future__ import annotations

import pytest

from harness.chain import Chain, ChainConfig, Leg, run_leg
from harness.compare import compare
from harness.data.scenes import write_scene
from harness.data.synthetic import SceneSpec, render_scene
from harness.gates.limits import Tolerances
from harness.localize import leg_stage_errors

#: What main gated the small case with (fixtures/tolerances.toml before calibration), quoted so
#: that each test can show its input still trips the old gate.
MAIN_SMALL_FP32_MAX_INTERVALS = 3e-3


@pytest.fixture(scope="module")
def tolerances() -> Tolerances:
    return Tolerances.load()


def _chain(tmp_path_factory, name: str, spec: SceneSpec, align_corners: bool = True) -> Chain:
    folder = tmp_path_factory.getbasetemp() / "false-alarm-scenes" / name
    if not (folder / "pair.txt").is_file():
        write_scene(render_scene(spec), folder)
    cache = tmp_path_factory.getbasetemp() / "shared-onnx-cache"
    return Chain(ChainConfig(scene=folder, device="cpu", cache_dir=cache, align_corners=align_corners))


def _stat(chain: Chain, leg: Leg, metric: str) -> float:
    outputs = chain.candidate_runner(leg).infer(chain.workaround_feed(leg.case, leg.workaround))
    diffs = compare(chain.reference_outputs(leg.case), outputs, depth_values=chain.feed(leg.case)["depth_values"])
    return diffs["depth"].metrics[metric]


def test_fp16_leg_on_a_parallel_camera_scene_with_flat_planes_passes(tmp_path_factory, tolerances):
    """An independent layout (parallel cameras on a line, half the planes flat, coarse texture),
    512x640 images run at the small case: main's FP16 graph gave an all-pixel p99 of 0.1001 steps
    against its limit of 0.1 (ONNX Runtime CPU, main's traced mixed-precision FP16 export)."""
    spec = SceneSpec(seed=6, num_views=3, height=512, width=640, rig="line", textureless=0.5, texture_scale=2.5)
    chain = _chain(tmp_path_factory, "line-6", spec)
    leg = Leg("ort-cpu-fp16", "raw", "precomputed", "torchscript", "small")
    result = run_leg(chain, leg, tolerances)
    assert result.passed, [d.row() for d in result.diffs.values()]
    chain.close()


@pytest.mark.parametrize("candidate, metric, main_limit", [
    ("ort-cpu", "max_intervals", MAIN_SMALL_FP32_MAX_INTERVALS),
    ("ort-cpu-fp16", None, None),  # main's traced FP16 graph: all-pixel p99 0.139 steps against 0.1
])
def test_legs_in_the_align_corners_false_convention_pass_on_generator_seed_7(tmp_path_factory, tolerances,
                                                                            candidate, metric, main_limit):
    """``run --cases small --scene <seed 7> --align-corners false`` failed 4 of its 6 legs on main
    (ONNX Runtime's kernel noise at a few ambiguous pixels; torch against torch is bit-identical)."""
    chain = _chain(tmp_path_factory, "gen-7", SceneSpec(seed=7, num_views=3, height=512, width=640), align_corners=False)
    leg = Leg(candidate, "raw", "precomputed", "torchscript", "small")
    if metric is not None:
        assert _stat(chain, leg, metric) > main_limit
    result = run_leg(chain, leg, tolerances)
    assert result.passed, [d.row() for d in result.diffs.values()]
    chain.close()


def test_stage_gates_pass_a_faithful_graph_on_generator_seed_11(tmp_path_factory, tolerances):
    """The stage gate failed the project's own graph on seed 11 on main (``prob relative 0.0001
    (limit 1e-04) EXCEEDS``): the probability volume's maximum moves with the scene."""
    chain = _chain(tmp_path_factory, "gen-11", SceneSpec(seed=11, num_views=3, height=512, width=640))
    leg = Leg("ort-cpu", "simplified", "precomputed", "torchscript", "small")
    assert tolerances.stages_measured(leg.candidate, leg.precision, leg.case)  # they count in the verdict
    rows = leg_stage_errors(chain, leg, tolerances)
    assert all(r.passed for r in rows), "\n".join(r.row() for r in rows)
    chain.close()


def test_world_scaling_relation_passes_where_mains_constant_failed(tmp_path_factory, tolerances):
    """The property suite's world-scaling relation (depth(s x rig) / s against depth(rig)) was gated
    by a constant 0.01 steps at every pixel; on this D=16 rig torch's own float32 rounding moves one
    ambiguous pixel by 0.016 steps (the H200 failed the same way: 0.342 mm against 0.318 mm). The
    calibrated torch-vs-torch gate counts the world-scaling relation among its benign samples."""
    from harness.data.synthetic import SceneSpec as Spec
    from harness.properties import BOUNDS, TORCH_LEG, RigCase, RigRunners, rig_feed, scale_rig

    chain = Chain(ChainConfig(device="cpu", cache_dir=tmp_path_factory.getbasetemp() / "shared-onnx-cache"))
    runners = RigRunners(chain, BOUNDS["quick"])
    rig = RigCase(Spec(seed=7, num_views=3, height=160, width=288, num_rectangles=2, supersample=1), 16)
    feed, reference = runners.reference(rig)
    scaled = runners.infer(TORCH_LEG, rig_feed(rig, scale_rig(runners.views(rig), 1.7)))
    unscaled = {"depth": scaled["depth"] / 1.7, "photometric_confidence": scaled["photometric_confidence"]}
    gates = tolerances.lookup("torch-fp32", "torch-fp32", "fp32", ("depth", "photometric_confidence"))
    diffs = compare(reference, unscaled, gates, depth_values=feed["depth_values"])
    assert diffs["depth"].metrics["max_intervals"] > 0.01  # main's constant
    assert all(diffs.values()), [d.row() for d in diffs.values()]
    runners.close()
    chain.close()


#: Before the property suite's own rigs were calibrated (2026-12-03), the CPU limit of ONNX Runtime
#: FP32 against torch (max_intervals_confident) came from the generator's scene folders alone.
PRE_RIGS_CPU_FP32_MAX_INTERVALS = 6.2e-3


def _ort_cpu_fp32_on_seed_323(tmp_path_factory, tolerances, width: int, spread: tuple[float, float], jitter: float,
                              workaround: str) -> dict:
    """The parity diffs of ONNX Runtime CPU FP32 (raw graph) on the 5-view D=16 rig of seed 323."""
    from harness.properties import BOUNDS, RigCase, RigRunners

    chain = Chain(ChainConfig(device="cpu", cache_dir=tmp_path_factory.getbasetemp() / "shared-onnx-cache"))
    runners = RigRunners(chain, BOUNDS["full"])
    rig = RigCase(SceneSpec(seed=323, num_views=5, height=224, width=width, num_rectangles=0,
                            view_spread_deg=spread, photometric_jitter=jitter), 16)
    leg = Leg("ort-cpu", "raw", workaround, "torchscript", "rigs")
    feed, reference = runners.reference(rig)
    gates = tolerances.lookup(leg.reference, leg.candidate, leg.precision, ("depth", "photometric_confidence"),
                              machine=chain.machine_class(leg.candidate))
    diffs = compare(reference, runners.infer(leg, feed), gates, depth_values=feed["depth_values"])
    runners.close()
    chain.close()
    return diffs


def test_ort_cpu_fp32_passes_on_the_rig_the_full_property_suite_failed(tmp_path_factory, tolerances):
    """The full-profile property suite failed all 6 ONNX Runtime CPU FP32 rig legs on the 2-core
    machine (torch 2.13, onnxruntime 1.32, Hypothesis 6.170): Hypothesis shrank each failure to a
    5-view D=16 rig of one slanted background plane (seed 323): on this one (224x224) the
    precomputed/torchscript graphs gave depth max_intervals_confident 0.00738 against 0.0062. Such
    rigs (supersampled, in memory, at the bounds of the rig space) were not in the calibration
    corpus; the property-rigs family (edge-biased seeds included) now is, and the limit derived from
    it passes this rig (the next test has the variant that needed a larger corpus)."""
    diffs = _ort_cpu_fp32_on_seed_323(tmp_path_factory, tolerances, 224, (8.0, 8.5), 0.02, "precomputed")
    assert diffs["depth"].metrics["max_intervals_confident"] > PRE_RIGS_CPU_FP32_MAX_INTERVALS
    assert all(diffs.values()), [d.row() for d in diffs.values()]


def test_ort_cpu_fp32_passes_on_the_wider_rig_the_full_property_suite_failed(tmp_path_factory, tolerances):
    """The same rig at 224x256 with spread (8, 11) degrees and 3 % gain jitter failed the CPU limit
    derived from 100 rigs (0.011): depth max_intervals_confident 0.0125 (closed_form), 0.0131
    (dynamo), 0.0104 (custom_op), every graph's worst at one pixel while its p99 stays near 1e-4
    steps: a heavy-tailed maximum. 130 more rigs (seeds 61-130, 1041-1100) found benign worsts of
    0.0070 on their own, and the limit derived by the same rule (x3) is 0.022."""
    diffs = _ort_cpu_fp32_on_seed_323(tmp_path_factory, tolerances, 256, (8.0, 11.0), 0.03, "closed_form")
    assert diffs["depth"].metrics["max_intervals_confident"] > 0.011  # what the 100-rig limit failed
    assert all(diffs.values()), [d.row() for d in diffs.values()]
