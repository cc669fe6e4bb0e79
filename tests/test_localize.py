"""Tests of harness/localize.py: per-stage divergence localisation and error attribution.

Synthetic stage dicts pin down ``stage_errors`` and the table; the small case on ONNX Runtime
(CPU) checks ``localise`` end to end, including a candidate whose weights differ in
``cost_regularization.prob`` only (so ``cost`` must be the first failing stage); ``attribution``
runs on the small case; and the pytest plugin attaches the table to a failing parity leg.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from harness import localize
from harness.chain import BUNDLED_WEIGHTS, Chain, ChainConfig, Leg
from harness.errors import BackendUnavailable, HarnessError
from harness.gates.limits import Tolerances
from harness.localize import (
    HOPS,
    StageError,
    attribution,
    attribution_table,
    candidate_stages,
    first_failing,
    localisation_table,
    localise,
    stage_errors,
    torch_stages,
)
from harness.model.checkpoint import load_checkpoint, save_checkpoint

pytest_plugins = ["pytester"]

LIMIT = 1e-4
ORDER = ("ref_feature", "warped_1", "warped_2", "variance", "cost", "prob", "depth", "photometric_confidence")
LEG = Leg("ort-cpu", "raw", "precomputed", "torchscript", "small")


# ---------------------------------------------------------------- synthetic stages


def _stages(seed: int = 0) -> dict[str, torch.Tensor]:
    """Stage tensors in data-flow order, shaped like a tiny MVSNet (C=4, D=8, 32x40)."""
    g = torch.Generator().manual_seed(seed)
    cost = torch.randn(1, 8, 32, 40, generator=g)
    return {
        "ref_feature": torch.randn(1, 4, 32, 40, generator=g),
        "warped_1": torch.randn(1, 4, 8, 32, 40, generator=g),
        "warped_2": torch.randn(1, 4, 8, 32, 40, generator=g),
        "variance": torch.rand(1, 4, 8, 32, 40, generator=g),
        "cost": cost,
        "prob": torch.softmax(cost, 1),
        "depth": 425.0 + 500.0 * torch.rand(1, 32, 40, generator=g),
        "photometric_confidence": torch.rand(1, 32, 40, generator=g),
    }


def _scaled_from(stages: dict[str, torch.Tensor], first: str, relative: float) -> dict[str, torch.Tensor]:
    """``first`` and every later stage moved by ``relative`` of their largest magnitude (the
    error propagates downstream, as in a real divergence)."""
    out, hit = {}, False
    for name, tensor in stages.items():
        hit = hit or name == first
        out[name] = tensor + relative * tensor.abs().max() if hit else tensor.clone()
    return out


def test_identical_stages_all_pass_with_zero_error():
    ref = _stages()
    rows = stage_errors(ref, {k: v.clone() for k, v in ref.items()}, LIMIT)
    assert [r.stage for r in rows] == list(ORDER)
    assert all(r.passed and r.max_abs == 0.0 and r.relative == 0.0 and r.limit == LIMIT for r in rows)
    assert first_failing(rows) is None


@pytest.mark.parametrize("stage", ORDER[:-1])
def test_perturbing_one_stage_makes_it_the_first_failing_stage(stage):
    ref = _stages()
    rows = stage_errors(ref, _scaled_from(ref, stage, 1e-3), LIMIT)
    failing = first_failing(rows)
    assert failing is not None and failing.stage == stage
    assert failing.relative == pytest.approx(1e-3, rel=1e-3)  # max |diff| / max |ref|
    before = rows[: ORDER.index(stage)]
    assert all(r.passed and r.relative == 0.0 for r in before)


def test_an_error_below_the_limit_passes_and_one_above_it_fails():
    ref = _stages()
    rows = {r.stage: r for r in stage_errors(ref, _scaled_from(ref, "cost", 0.5 * LIMIT), LIMIT)}
    assert rows["cost"].passed
    rows = {r.stage: r for r in stage_errors(ref, _scaled_from(ref, "cost", 2 * LIMIT), LIMIT)}
    assert not rows["cost"].passed


def test_error_is_relative_to_the_largest_reference_magnitude():
    ref = {"variance": torch.tensor([[0.0, 2.0, -8.0]])}
    (row,) = stage_errors(ref, {"variance": torch.tensor([[0.0, 2.0, -7.0]])}, LIMIT)
    assert (row.max_abs, row.reference_scale, row.relative) == (1.0, 8.0, 0.125)


def test_an_all_zero_reference_stage_uses_a_unit_scale():
    (row,) = stage_errors({"cost": torch.zeros(2, 3)}, {"cost": torch.full((2, 3), 1e-3)}, LIMIT)
    assert row.reference_scale == 1.0 and row.relative == pytest.approx(1e-3)


def test_confidence_flips_at_a_few_pixels_are_ignored_by_the_p99_rule():
    ref = _stages()
    cand = {k: v.clone() for k, v in ref.items()}
    flat = cand["photometric_confidence"].view(-1)
    flat[:6] = 1.0 - flat[:6]  # 6 of 1280 pixels (< 1 %) flip: a truncated index moved by one
    rows = {r.stage: r for r in stage_errors(ref, cand, LIMIT)}
    assert rows["photometric_confidence"].passed
    assert rows["photometric_confidence"].max_abs == 0.0  # the 99th percentile of |diff|


def test_confidence_changes_at_more_than_one_percent_of_pixels_fail():
    ref = _stages()
    cand = {k: v.clone() for k, v in ref.items()}
    cand["photometric_confidence"].view(-1)[:64] += 0.3  # 5 % of the pixels
    rows = {r.stage: r for r in stage_errors(ref, cand, LIMIT)}
    assert not rows["photometric_confidence"].passed
    assert first_failing(list(rows.values())).stage == "photometric_confidence"


def test_a_single_pixel_of_depth_is_not_ignored():
    ref = _stages()
    cand = {k: v.clone() for k, v in ref.items()}
    cand["depth"][0, 3, 4] += 1.0  # the maximum rule: one pixel is enough
    rows = {r.stage: r for r in stage_errors(ref, cand, LIMIT)}
    assert not rows["depth"].passed and rows["depth"].max_abs == pytest.approx(1.0, abs=1e-4)


def test_non_finite_candidate_values_fail_the_stage():
    ref = _stages()
    cand = {k: v.clone() for k, v in ref.items()}
    cand["prob"][0, 0, 0, 0] = float("nan")
    rows = {r.stage: r for r in stage_errors(ref, cand, LIMIT)}
    assert not rows["prob"].passed and rows["prob"].max_abs == float("inf")
    assert first_failing(list(rows.values())).stage == "prob"


def test_stages_the_candidate_lacks_are_skipped_and_the_reference_order_is_kept():
    ref = _stages()
    cand = {k: v.clone() for k, v in reversed(ref.items()) if k != "warped_2"}
    assert [r.stage for r in stage_errors(ref, cand, LIMIT)] == [s for s in ORDER if s != "warped_2"]


def test_stage_shapes_that_differ_raise_naming_the_stage_and_both_shapes():
    ref = _stages()
    cand = {**ref, "variance": ref["variance"][:, :, :4]}
    with pytest.raises(HarnessError) as info:
        stage_errors(ref, cand, LIMIT)
    message = str(info.value)
    assert message.startswith("variance | probe shape differs: (1, 4, 4, 32, 40).")
    assert "Expected: (1, 4, 8, 32, 40)." in message


def test_source_views_in_another_order_are_matched_before_comparing():
    ref = _stages()
    swapped = {**ref, "warped_1": ref["warped_2"].clone(), "warped_2": ref["warped_1"].clone()}
    assert first_failing(stage_errors(ref, swapped, LIMIT)) is None
    moved = {**swapped, "warped_1": swapped["warped_1"] + 1.0}  # a real error survives the matching
    assert first_failing(stage_errors(ref, moved, LIMIT)).stage.startswith("warped")


def test_per_stage_limits_and_depth_in_steps():
    ref = _stages()
    cand = {**{k: v.clone() for k, v in ref.items()}, "depth": ref["depth"] + 0.5}  # 0.05 steps of 10 mm
    limits = {"default": LIMIT, "depth": 0.1, "ref_feature": 1e-6}
    rows = {r.stage: r for r in stage_errors(ref, cand, limits, depth_step=10.0)}
    assert rows["depth"].unit == "steps" and rows["depth"].relative == pytest.approx(0.05, rel=1e-4)
    assert rows["depth"].passed and rows["ref_feature"].limit == 1e-6 and rows["warped_2"].limit == LIMIT
    assert not {r.stage: r for r in stage_errors(ref, cand, {**limits, "depth": 0.01}, depth_step=10.0)}["depth"].passed
    diffs = localize.stage_diffs(list(rows.values()))
    assert diffs["stage depth"] and diffs["stage depth"].tolerance == {"steps": 0.1}


def test_localisation_table_names_the_first_failing_stage():
    ref = _stages()
    rows = stage_errors(ref, _scaled_from(ref, "cost", 1e-2), LIMIT)
    table = localisation_table(rows, "stage errors of some-leg (relative max |error|):")
    lines = table.splitlines()
    assert lines[0] == "stage errors of some-leg (relative max |error|):"
    assert len(lines) == 1 + len(ORDER) + 1
    for line, stage in zip(lines[1:-1], ORDER):
        assert line.startswith(f"  {stage:<24} max |err|")
        assert "(limit 1e-04)" in line
    verdicts = [line.rsplit(None, 1)[-1] for line in lines[1:-1]]
    assert verdicts == ["ok"] * 4 + ["EXCEEDS"] * 4
    assert lines[-1] == "  -> first stage over its tolerance: cost"


def test_localisation_table_when_every_stage_passes():
    ref = _stages()
    table = localisation_table(stage_errors(ref, ref, LIMIT), "title")
    assert table.splitlines()[-1] == "  -> every stage within tolerance"
    assert "EXCEEDS" not in table


def test_stage_error_row_prints_the_relative_error_and_verdict():
    row = StageError("prob", 3.5e-5, 1.0, 3.5e-5, 1e-4)
    assert row.passed
    assert re.fullmatch(r"prob\s+max \|err\|\s+3\.5e-05  relative\s+3\.5e-05  \(limit 1e-04\)  ok", row.row())
    assert not StageError("prob", 2e-4, 1.0, 2e-4, 1e-4).passed


# ---------------------------------------------------------------- end to end on the small case (CPU)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    # a temporary cache shared with the other modules that export the small graph
    built = Chain(ChainConfig(cache_dir=tmp_path_factory.getbasetemp() / "shared-onnx-cache", device="cpu"))
    yield built
    built.close()


@pytest.fixture(scope="module")
def tolerances() -> Tolerances:
    return Tolerances.load()


@pytest.fixture(scope="module")
def reference_stages(chain) -> dict[str, torch.Tensor]:
    return torch_stages(chain, "small")


@pytest.fixture(scope="module")
def perturbed_chain(tmp_path_factory):
    """The bundled weights with ``cost_regularization.prob``'s weights scaled by 1.01: every stage
    before ``cost`` is computed by identical weights."""
    model = load_checkpoint(BUNDLED_WEIGHTS)
    with torch.no_grad():
        model.cost_regularization.prob.weight.mul_(1.01)
    path = save_checkpoint(model, tmp_path_factory.mktemp("perturbed") / "perturbed.ckpt")
    built = Chain(ChainConfig(weights=path, cache_dir=tmp_path_factory.getbasetemp() / "shared-onnx-cache",
                              device="cpu"))
    yield built
    built.close()


def test_torch_stages_hold_every_probe_and_both_outputs(reference_stages):
    assert tuple(reference_stages) == ORDER
    assert reference_stages["prob"].shape == (1, 48, 32, 40)
    assert reference_stages["depth"].shape == (1, 32, 40)


@pytest.mark.parametrize("workaround", ["precomputed", "closed_form"])
def test_candidate_stages_of_an_ort_probe_build_match_the_reference_names_and_shapes(chain, reference_stages,
                                                                                     workaround):
    cand = candidate_stages(chain, Leg("ort-cpu", "raw", workaround, "torchscript", "small"))
    assert set(cand) == set(ORDER)
    assert all(cand[name].shape == reference_stages[name].shape for name in ORDER)


@pytest.mark.parametrize("workaround", ["precomputed", "closed_form"])
def test_localise_on_the_small_case_finds_every_stage_within_the_fp32_limit(chain, tolerances, reference_stages,
                                                                            workaround):
    leg = Leg("ort-cpu", "raw", workaround, "torchscript", "small")
    limit = tolerances.stage_limits("ort-cpu", "fp32")
    rows = stage_errors(reference_stages, candidate_stages(chain, leg), limit)
    assert [r.stage for r in rows] == list(ORDER)
    assert all(r.passed for r in rows), "\n".join(r.row() for r in rows)
    table = localise(chain, leg, tolerances)
    assert table.splitlines()[0] == f"stage errors of {leg.id} (relative max |error|):"
    assert table.splitlines()[-1] == "  -> every stage within tolerance"


def test_localise_names_cost_when_only_the_cost_regulariser_output_layer_differs(chain, perturbed_chain, tolerances,
                                                                                 reference_stages, monkeypatch):
    assert perturbed_chain.weights_digest != chain.weights_digest
    perturbed = candidate_stages(perturbed_chain, LEG)
    rows = stage_errors(reference_stages, perturbed, tolerances.stage_limits("ort-cpu", "fp32"))
    failing = first_failing(rows)
    assert failing is not None and failing.stage == "cost", "\n".join(r.row() for r in rows)
    assert all(r.passed for r in rows[: ORDER.index("cost")])  # everything before it is identical
    assert failing.relative > 10 * failing.limit

    # the same through localise(): the reference from the unperturbed chain, the candidate's probes
    # from the perturbed one
    monkeypatch.setattr(localize, "candidate_stages", lambda _chain, leg: candidate_stages(perturbed_chain, leg))
    table = localise(chain, LEG, tolerances)
    assert table.splitlines()[-1] == "  -> first stage over its tolerance: cost"
    cost_line = next(line for line in table.splitlines() if line.strip().startswith("cost "))
    assert cost_line.rstrip().endswith("EXCEEDS")


def test_stage_probes_on_a_tensorrt_leg_are_unavailable_with_a_reason(chain):
    with pytest.raises(BackendUnavailable) as info:
        candidate_stages(chain, Leg("trt-fp16", "simplified", "precomputed", "torchscript", "small"))
    assert "stage probes run on ONNX Runtime" in info.value.missing
    assert "ort-*" in str(info.value.fix)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only skips")
def test_attribution_on_the_small_case_starts_at_torch_fp32_and_skips_tf32_and_tensorrt_with_reasons(chain):
    rows = attribution(chain, "small")
    assert [r["hop"] for r in rows] == [hop for hop, _ in HOPS]
    by_hop = {r["hop"]: r for r in rows}
    assert "skipped" not in by_hop["torch-fp32"] and "hop_max_abs_mm" not in by_hop["torch-fp32"]
    assert by_hop["torch-tf32"]["skipped"] == "torch-tf32: tf32 needs a CUDA device (no CUDA device)"
    assert by_hop["trt-fp16"]["skipped"].startswith("trt")  # "trt: tensorrt not importable" or "no CUDA device"
    assert by_hop["ort-fp32"]["from"] == "torch-fp32"  # the skipped hop is passed over
    assert by_hop["ort-fp32"]["total_max_abs_mm"] < 0.1 and by_hop["ort-fp32"]["total_frac_over_1mm"] == 0.0
    assert by_hop["ort-fp16"]["from"] == "ort-fp32"
    assert by_hop["ort-fp16"]["total_max_abs_mm"] >= by_hop["ort-fp32"]["total_max_abs_mm"]
    table = attribution_table(rows).splitlines()
    assert table[1].split() == ["torch-fp32", "reference"]
    assert table[2].startswith("torch-tf32   skipped: torch-tf32: tf32 needs a CUDA device")
    assert table[5].startswith("trt-fp16     skipped: trt")


# ---------------------------------------------------------------- the plugin attaches the table to a failing leg

GATE = """
from harness.compare import assert_parity


def test_parity(parity, parity_leg):
    result = parity(parity_leg)
    assert_parity(result.diffs, parity_leg.id, result.localisation)
"""


def _impossible_tolerances(folder: Path) -> Path:
    """A tolerances file whose ONNX Runtime FP32 depth gate is 0 and whose FP32 stage limits are
    1e-12: the leg fails and localisation names the first stage (the committed, calibrated limits
    pass every stage, as the end-to-end test above shows)."""
    stages = "\n".join(f"{stage} = 1e-12" for stage in ("ref_feature", "warped", "variance", "cost", "prob", "depth",
                                                         "photometric_confidence"))
    path = folder / "impossible.toml"
    path.write_text('[cpu."torch-vs-ort".fp32.depth]\nmax_sq_err = 0\n'
                    '[cpu."torch-vs-ort".fp32.photometric_confidence]\nagreement = 0.5\n'
                    f'[cpu.stages."ort-cpu".fp32]\n{stages}\n')
    return path


def _run_gate(pytester: pytest.Pytester, cache: Path, *extra: str) -> pytest.RunResult:
    pytester.makepyfile(test_gate=GATE)
    return pytester.runpytest(
        "-p", "harness.plugin", "-p", "no:cacheprovider", "--harness-no-report", "--harness-device", "cpu",
        "--harness-backends", "ort-cpu", "--harness-exporters", "torchscript", "--harness-workarounds", "precomputed",
        "--harness-variants", "raw", "--harness-cache-dir", str(cache), *extra,
    )


def test_plugin_attaches_a_localisation_table_to_a_failing_parity_leg(pytester, tmp_path_factory):
    tolerances = _impossible_tolerances(tmp_path_factory.mktemp("tolerances"))
    result = _run_gate(pytester, tmp_path_factory.getbasetemp() / "shared-onnx-cache",
                       "--harness-tolerances", str(tolerances))
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "outputs differ beyond tolerance" in out
    assert f"stage errors of {LEG.id} (relative max |error|):" in out
    assert "-> first stage over its tolerance: ref_feature" in out
    # in the failure message itself (ParityError), not only in the terminal section
    failure = out[out.index("FAILURES"):out.index("harness localisation")]
    assert "stage errors of" in failure and "first stage over its tolerance" in failure


def test_plugin_localises_a_passing_leg_only_when_asked(pytester, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "shared-onnx-cache"
    result = _run_gate(pytester, cache)
    result.assert_outcomes(passed=1)
    assert "stage errors of" not in result.stdout.str()
    result = _run_gate(pytester, cache, "--harness-localize")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*harness localisation*", f"stage errors of {LEG.id}*",
                                 "*-> every stage within tolerance"])


def test_attribution_names_the_hop_that_exceeds_its_gate(chain, monkeypatch):
    from harness.errors import ParityError
    from harness.localize import assert_attribution_within_gates, exceeded_hops

    tolerances = Tolerances.load()
    rows = attribution(chain, "small", tolerances)
    assert exceeded_hops(rows) == []
    assert_attribution_within_gates(rows)  # the unperturbed chain is within every gate
    real = localize._hop_outputs

    def perturbed(chain_, hop, case):  # a hop that moves depth by half a hypothesis step
        outputs = real(chain_, hop, case)
        if hop == "ort-fp32":
            outputs = {**outputs, "depth": outputs["depth"] + 0.5 * 2.5 * chain_.case(case).interval_scale}
        return outputs

    monkeypatch.setattr(localize, "_hop_outputs", perturbed)
    rows = attribution(chain, "small", tolerances)
    assert exceeded_hops(rows)[0] == "ort-fp32"
    with pytest.raises(ParityError, match=r"hop ort-fp32 \(ONNX Runtime FP32 graph\) exceeds its gate") as info:
        assert_attribution_within_gates(rows)
    assert "max_intervals" in str(info.value)


def test_unjudged_attribution_rows_are_refused(chain):
    from harness.errors import ParityError
    from harness.localize import assert_attribution_within_gates

    with pytest.raises(ParityError, match="hops were not judged"):
        assert_attribution_within_gates(attribution(chain, "small"))
