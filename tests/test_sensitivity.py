"""Tests of harness/sensitivity.py: margins, the catch table, and ``python -m harness mutate``
end to end on a few catalogue entries (small case, ONNX Runtime CPU)."""

from __future__ import annotations

import json
import math

import pytest

from harness.cli import main
from harness.compare import OutputDiff
from harness.mutate import CATALOGUE
from harness.sensitivity import CheckResult, Outcome, catch_table, ratio, worst_ratio


def test_ratio_of_upper_and_lower_bounds():
    assert ratio("max_intervals", 0.3, 0.1) == pytest.approx(3.0)
    assert ratio("agreement", 0.99, 0.999) == pytest.approx(10.0)  # 1 % disagreeing against 0.1 % allowed
    assert ratio("frac_over_1mm", 0.01, 0.0) == math.inf and ratio("frac_over_1mm", 0.0, 0.0) == 0.0
    assert ratio("max_abs", float("nan"), 1.0) == math.inf


def test_worst_ratio_names_the_metric():
    diffs = {"depth": OutputDiff("depth", {"max_intervals": 0.2, "nan": 0}, {"max_intervals": 0.1}),
             "photometric_confidence": OutputDiff("photometric_confidence", {"p99_abs": 1e-3, "nan": 0},
                                                  {"p99_abs": 1e-2})}
    assert worst_ratio(diffs) == (2.0, "depth.max_intervals")


def test_catch_table_counts_catches_and_false_alarms():
    bug, benign = CATALOGUE["softmax-axis"], CATALOGUE["identity-inserted"]
    outcomes = [Outcome(bug, "fp32", {"outputs": CheckResult(True, 50.0), "precision": CheckResult(False, 0.0, yes_no=True)}),
                Outcome(benign, "fp32", {"outputs": CheckResult(False, 0.1), "golden": CheckResult(True, 2.0)})]
    text = catch_table(outcomes)
    assert "caught 1 of 1 bugs, 0 undetectable (inside benign noise), 1 false alarm(s) on 1 benign" in text and "FALSE ALARM" in text
    assert "50x!" in text and " ok" in text
    assert "0 false alarm(s)" in catch_table(outcomes, counting=("outputs",))


def test_mutate_command_judges_a_bug_and_a_benign_rewrite(tmp_path, capsys):
    out = tmp_path / "mutate.json"
    code = main(["mutate", "--precisions", "fp32", "--only", "softmax-axis,identity-inserted", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "FP32 graph: caught 1 of 1 bugs, 0 undetectable (inside benign noise), 0 false alarm(s) on 1 benign rewrites" in text
    rows = {r["mutation"]: r for r in json.loads(out.read_text())}
    assert rows["softmax-axis"]["checks"]["outputs"]["caught"] and rows["softmax-axis"]["checks"]["golden"]["caught"]
    assert not any(c["caught"] for c in rows["identity-inserted"]["checks"].values())


def test_mutate_write_golden_then_use_it(tmp_path, capsys):
    golden = tmp_path / "golden"
    assert main(["mutate", "--precisions", "fp16", "--write-golden", str(golden)]) == 0
    assert sorted(p.name for p in golden.glob("*.npz")) == [
        "small-precomputed-torchscript-raw-fp16.npz", "small-precomputed-torchscript-simplified-fp16.npz"]
    capsys.readouterr()
    assert main(["mutate", "--precisions", "fp16", "--only", "bias-x1.01-last-feature-conv", "--checks", "golden",
                 "--golden", str(golden)]) == 0
    assert "caught 1 of 1 bugs" in capsys.readouterr().out


def test_mutate_list_and_a_wrong_check_name(capsys):
    assert main(["mutate", "--list"]) == 0
    assert "gridsample-nearest" in capsys.readouterr().out
    assert main(["mutate", "--checks", "outputs,vibes"]) == 2
