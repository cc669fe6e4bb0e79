"""Unit tests of harness/compare.py: per-output diffs as data, and the parity assertion."""

from __future__ import annotations

import math

import pytest
import torch

from harness.compare import CONFIDENCE_THRESHOLD, OutputDiff, assert_parity, compare, depth_index
from harness.errors import HarnessError, ParityError

# depth hypotheses 425, 435, ..., 895 (step 10): index = floor((d - 425) / 10)
DEPTH_VALUES = (425.0 + 10.0 * torch.arange(48, dtype=torch.float64)).unsqueeze(0)


def _pair():
    """Reference and candidate with hand-computed differences.

    depth diffs 0, 0.5, 3, -5 (one index flip: 614.8 -> 615.3 crosses 615);
    confidence diffs 0.05, 0.11 (crosses the 0.8 threshold, at the flipped pixel), 0, 0.
    """
    reference = {
        "depth": torch.tensor([[[500.0, 614.8], [700.0, 800.0]]], dtype=torch.float64),
        "photometric_confidence": torch.tensor([[[0.9, 0.7], [0.85, 0.1]]], dtype=torch.float64),
    }
    candidate = {
        "depth": torch.tensor([[[500.0, 615.3], [703.0, 795.0]]], dtype=torch.float64),
        "photometric_confidence": torch.tensor([[[0.95, 0.81], [0.85, 0.1]]], dtype=torch.float64),
    }
    return reference, candidate


# -- OutputDiff -------------------------------------------------------------------------------

def test_output_diff_is_truthy_when_every_gate_passes():
    diff = OutputDiff("depth", {"max_sq_err": 1e-4, "nan": 0.0}, {"max_sq_err": 1e-3})
    assert diff
    assert diff.failures == {}


def test_output_diff_is_falsy_when_a_gate_fails():
    diff = OutputDiff("depth", {"max_sq_err": 2e-3, "max_abs": 0.01}, {"max_sq_err": 1e-3, "max_abs": 1.0})
    assert not diff
    assert diff.failures == {"max_sq_err": (2e-3, 1e-3)}


def test_limit_is_inclusive():
    assert OutputDiff("depth", {"max_sq_err": 1e-3}, {"max_sq_err": 1e-3})


def test_nan_in_the_candidate_always_fails_even_without_a_tolerance():
    diff = OutputDiff("depth", {"nan": 3.0, "max_sq_err": 0.0})
    assert not diff
    assert diff.failures == {"nan": (3.0, 0.0)}


def test_nan_metric_value_fails_its_gate():
    diff = OutputDiff("depth", {"max_sq_err": math.nan}, {"max_sq_err": 1e-3})
    assert not diff
    assert "max_sq_err" in diff.failures


def test_agreement_is_a_lower_bound():
    assert not OutputDiff("photometric_confidence", {"agreement": 0.99}, {"agreement": 0.999})
    assert OutputDiff("photometric_confidence", {"agreement": 1.0}, {"agreement": 0.999})
    assert OutputDiff("photometric_confidence", {"agreement": 0.999}, {"agreement": 0.999})


def test_nan_agreement_fails():
    assert not OutputDiff("photometric_confidence", {"agreement": math.nan}, {"agreement": 0.999})


def test_gates_on_metrics_that_were_not_measured_are_ignored():
    diff = OutputDiff("photometric_confidence", {"max_sq_err": 0.0}, {"index_flips": 0.0})
    assert diff
    assert diff.needed == {}


def test_needed_is_the_observed_value_of_each_gated_metric():
    diff = OutputDiff("depth", {"max_sq_err": 2e-3, "max_abs": 0.04, "mean_abs": 0.01},
                      {"max_sq_err": 1e-3, "max_abs": 1.0})
    assert diff.needed == {"max_sq_err": 2e-3, "max_abs": 0.04}


def test_row_of_a_pass_and_of_a_failure():
    ok = OutputDiff("depth", {"max_sq_err": 1e-4}, {"max_sq_err": 1e-3}).row()
    assert ok.startswith("depth")
    assert " ok " in ok
    assert "max_sq_err 0.0001 <= 0.001" in ok
    failed = OutputDiff("photometric_confidence", {"agreement": 0.5}, {"agreement": 0.999}).row()
    assert failed.split() == ["photometric_confidence", "FAIL", "agreement", "50.000%", ">=", "99.900%", "FAIL"]
    assert failed.count("50.000%") == 1  # a failing row names its value once (it had repeated itself)


def test_output_diff_is_frozen():
    diff = OutputDiff("depth", {"max_sq_err": 0.0})
    with pytest.raises(AttributeError):
        diff.name = "other"  # type: ignore[misc]


# -- compare ----------------------------------------------------------------------------------

def test_compare_computes_depth_metrics():
    reference, candidate = _pair()
    depth = compare(reference, candidate, depth_values=DEPTH_VALUES)["depth"].metrics
    assert depth["nan"] == 0
    assert depth["max_abs"] == pytest.approx(5.0)
    assert depth["max_sq_err"] == pytest.approx(25.0)
    assert depth["mean_abs"] == pytest.approx((0 + 0.5 + 3 + 5) / 4)
    assert depth["p99_abs"] == pytest.approx(float(torch.quantile(torch.tensor([0.0, 0.5, 3.0, 5.0]), 0.99)))
    assert depth["frac_over_1mm"] == pytest.approx(0.5)
    assert depth["frac_over_2mm"] == pytest.approx(0.5)
    assert depth["frac_over_4mm"] == pytest.approx(0.25)
    assert depth["index_flips"] == 1


def test_compare_computes_confidence_metrics():
    reference, candidate = _pair()
    confidence = compare(reference, candidate, depth_values=DEPTH_VALUES)["photometric_confidence"].metrics
    assert confidence["max_sq_err"] == pytest.approx(0.11**2)
    assert confidence["agreement"] == pytest.approx(0.75)  # one pixel crosses 0.8
    assert confidence["max_sq_err_stable"] == pytest.approx(0.05**2)  # the flipped pixel is left out
    assert "index_flips" not in confidence
    assert "frac_over_1mm" not in confidence


def test_compare_without_depth_values_has_no_flips_and_stable_equals_all():
    reference, candidate = _pair()
    diffs = compare(reference, candidate)
    assert "index_flips" not in diffs["depth"].metrics
    confidence = diffs["photometric_confidence"].metrics
    assert confidence["max_sq_err_stable"] == pytest.approx(confidence["max_sq_err"])


def test_compare_gates_each_output_with_its_own_tolerance():
    reference, candidate = _pair()
    tolerance = {"depth": {"max_sq_err": 30.0, "index_flips": 0.0}, "photometric_confidence": {"agreement": 0.5}}
    diffs = compare(reference, candidate, tolerance, depth_values=DEPTH_VALUES)
    assert not diffs["depth"]
    assert set(diffs["depth"].failures) == {"index_flips"}
    assert diffs["photometric_confidence"]
    assert dict(diffs["depth"].tolerance) == tolerance["depth"]


def test_identical_outputs_have_zero_error():
    reference, _ = _pair()
    diffs = compare(reference, {k: v.clone() for k, v in reference.items()}, depth_values=DEPTH_VALUES)
    assert diffs["depth"].metrics["max_sq_err"] == 0.0
    assert diffs["depth"].metrics["index_flips"] == 0
    assert diffs["photometric_confidence"].metrics["agreement"] == 1.0
    assert all(diffs.values())


def test_non_finite_candidate_values_are_counted_and_fail():
    reference, candidate = _pair()
    candidate["depth"][0, 0, 0] = float("nan")
    candidate["depth"][0, 1, 1] = float("inf")
    depth = compare(reference, candidate)["depth"]
    assert depth.metrics["nan"] == 2
    assert math.isfinite(depth.metrics["max_abs"])  # stats over the finite pixels
    assert depth.metrics["max_abs"] == pytest.approx(3.0)
    assert not depth
    assert "nan" in depth.failures


def test_compare_accepts_float32_and_ignores_extra_candidate_outputs():
    reference, candidate = _pair()
    reference = {k: v.float() for k, v in reference.items()}
    candidate = {**{k: v.float() for k, v in candidate.items()}, "debug": torch.zeros(3)}
    diffs = compare(reference, candidate)
    assert set(diffs) == {"depth", "photometric_confidence"}


def test_missing_output_is_a_parity_error_naming_it():
    reference, candidate = _pair()
    del candidate["photometric_confidence"]
    with pytest.raises(ParityError, match="missing outputs") as info:
        compare(reference, candidate)
    assert "photometric_confidence" in str(info.value)


def test_shape_mismatch_is_a_parity_error_naming_the_output():
    reference, candidate = _pair()
    candidate["depth"] = candidate["depth"][:, :1]
    with pytest.raises(ParityError, match="shape differs") as info:
        compare(reference, candidate)
    assert str(info.value).startswith("depth |")
    assert "(1, 1, 2)" in str(info.value) and "(1, 2, 2)" in str(info.value)


def test_depth_index_truncates_like_mvsnet():
    depth = torch.tensor([[[425.0, 434.99], [435.0, 894.0]]])
    assert depth_index(depth, DEPTH_VALUES).tolist() == [[[0, 0], [1, 46]]]


def test_confidence_threshold_is_the_fusion_threshold():
    assert CONFIDENCE_THRESHOLD == 0.8


# -- assert_parity ----------------------------------------------------------------------------

def test_assert_parity_passes_silently_when_all_pass():
    reference, _ = _pair()
    assert_parity(compare(reference, reference, {"depth": {"max_sq_err": 0.0}}), "leg")


def test_assert_parity_raises_an_assertion_error_with_one_row_per_output():
    reference, candidate = _pair()
    tolerance = {"depth": {"max_sq_err": 1e-3, "frac_over_1mm": 0.0},
                 "photometric_confidence": {"max_sq_err_stable": 1e-5, "agreement": 0.999}}
    diffs = compare(reference, candidate, tolerance, depth_values=DEPTH_VALUES)
    with pytest.raises(ParityError) as info:
        assert_parity(diffs, "ort-cpu-raw-vs-torch-fp32")
    error = info.value
    assert isinstance(error, AssertionError) and isinstance(error, HarnessError)
    message = str(error)
    assert message.startswith("ort-cpu-raw-vs-torch-fp32 | outputs differ beyond tolerance")
    rows = [line.strip() for line in message.splitlines() if line.startswith("  ")]
    assert len(rows) == 2
    assert rows[0].startswith("depth") and "FAIL" in rows[0]
    assert rows[1].startswith("photometric_confidence") and "FAIL" in rows[1]
    assert "the tolerance that would pass is depth: max_sq_err=25, frac_over_1mm=0.5" in message
    assert "photometric_confidence: max_sq_err_stable=0.0025, agreement=0.75" in message


def test_assert_parity_lists_passing_outputs_but_not_their_needs():
    reference, candidate = _pair()
    tolerance = {"depth": {"max_sq_err": 1e-3}, "photometric_confidence": {"agreement": 0.5}}
    with pytest.raises(ParityError) as info:
        assert_parity(compare(reference, candidate, tolerance), "leg")
    message = str(info.value)
    assert "photometric_confidence" in message  # its row is there ...
    assert "photometric_confidence: agreement" not in message  # ... but it needs no change


def test_gate_text_shows_each_gated_metric_with_its_limit_and_fractions_as_percentages():
    from harness.compare import format_metric

    diff = OutputDiff("photometric_confidence", {"max_sq_err_stable": 9.4e-9, "agreement": 0.99995, "max_sq_err": 0.669},
                      {"max_sq_err_stable": 1e-5, "agreement": 0.999})
    assert diff.gate_text() == "max_sq_err_stable 9.4e-09 <= 1e-05, agreement 99.995% >= 99.900%"
    failing = OutputDiff("depth", {"max_intervals": 0.2}, {"max_intervals": 0.1})
    assert failing.gate_text() == "max_intervals 0.2 <= 0.1 FAIL"
    assert OutputDiff("depth", {"max_abs": 1.0}).gate_text() == "(no gate)"
    assert format_metric("frac_over_1mm", 0.0123) == "1.230%"


# -- metric kinds come from the model spec, not from output names ---------------------------------

def test_metric_kinds_follow_the_spec_whatever_the_outputs_are_called():
    from harness.modelspec import ModelSpec, OutputSpec

    reference, candidate = _pair()
    renamed = ModelSpec("renamed", "Renamed", ("x",), (OutputSpec("range", "depth"), OutputSpec("belief", "confidence")))
    ours = compare({"range": reference["depth"], "belief": reference["photometric_confidence"]},
                   {"range": candidate["depth"], "belief": candidate["photometric_confidence"]},
                   depth_values=DEPTH_VALUES, model_spec=renamed)
    mvsnet = compare(reference, candidate, depth_values=DEPTH_VALUES)
    assert ours["range"].metrics == mvsnet["depth"].metrics
    assert ours["belief"].metrics == mvsnet["photometric_confidence"].metrics


def test_outputs_of_plain_kind_or_not_in_the_spec_get_the_absolute_statistics_only():
    from harness.modelspec import ModelSpec, OutputSpec

    reference, candidate = _pair()
    plain = ModelSpec("plain", "Plain", ("x",), (OutputSpec("depth"),))
    diffs = compare(reference, candidate, depth_values=DEPTH_VALUES, model_spec=plain)
    assert set(diffs["depth"].metrics) == {"nan", "max_abs", "mean_abs", "p99_abs", "max_sq_err"}
    assert set(diffs["photometric_confidence"].metrics) == {"nan", "max_abs", "mean_abs", "p99_abs", "max_sq_err"}
    assert diffs["depth"].metrics["max_abs"] == 5.0
