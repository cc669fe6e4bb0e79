"""Tests of harness/gates/golden.py: stored outputs round-trip without pickles, a change beyond the
tolerance fails, and a baseline taken on other inputs, another runtime or not at all is skipped
with the reason (a re-baseline, not a bug)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.errors import DataFormatError, MissingFile
from harness.gates.golden import check_golden, feed_digest, load_golden, write_golden

FEED = {"x": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
OUTPUTS = {"depth": torch.linspace(400, 900, 12).reshape(1, 3, 4), "photometric_confidence": torch.rand(1, 3, 4)}
TOLERANCE = {"depth": {"max_abs": 1e-3}, "photometric_confidence": {"max_abs": 1e-6}}
META = {"runtime": "onnxruntime 1.0 cpu", "feed": feed_digest(FEED)}


def test_outputs_round_trip(tmp_path):
    write_golden(tmp_path, "k", OUTPUTS, META)
    outputs, meta = load_golden(tmp_path, "k")
    assert all(torch.equal(outputs[n], OUTPUTS[n]) for n in OUTPUTS)
    assert meta["runtime"] == META["runtime"] and meta["outputs"] == sorted(OUTPUTS)


def test_the_same_outputs_pass_and_a_small_change_fails(tmp_path):
    write_golden(tmp_path, "k", OUTPUTS, META)
    assert check_golden(tmp_path, "k", OUTPUTS, TOLERANCE, FEED, META["runtime"]).passed
    moved = {**OUTPUTS, "depth": OUTPUTS["depth"] + 0.01}
    result = check_golden(tmp_path, "k", moved, TOLERANCE, FEED, META["runtime"])
    assert not result.passed and not result.diffs["depth"] and result.diffs["photometric_confidence"]


@pytest.mark.parametrize(("feed", "runtime", "reason"), [
    ({"x": FEED["x"] + 1}, META["runtime"], "other inputs"),
    (FEED, "onnxruntime 2.0 cpu", "taken with onnxruntime 1.0 cpu"),
])
def test_a_baseline_of_other_inputs_or_runtime_is_skipped(tmp_path, feed, runtime, reason):
    write_golden(tmp_path, "k", OUTPUTS, META)
    result = check_golden(tmp_path, "k", OUTPUTS, TOLERANCE, feed, runtime)
    assert result.passed and reason in result.skipped and not result.diffs


def test_no_baseline_is_skipped_and_no_directory_is_an_error(tmp_path):
    assert "no golden baseline k" in check_golden(tmp_path, "k", OUTPUTS, TOLERANCE, FEED, "x").skipped
    with pytest.raises(MissingFile, match="python -m harness mutate --write-golden"):
        load_golden(tmp_path / "absent", "k")


def test_pickled_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "k.npz", depth=np.array([object()], dtype=object))
    (tmp_path / "k.json").write_text("{}")
    with pytest.raises(DataFormatError, match="unreadable"):
        load_golden(tmp_path, "k")


def test_a_parity_leg_gets_golden_rows_that_fail_when_its_outputs_move(tmp_path):
    from dataclasses import replace

    from harness.chain import Chain, Leg, run_leg, with_golden
    from harness.gates.limits import Tolerances

    chain, tolerances = Chain(), Tolerances.load()
    leg = Leg("ort-cpu", "raw", "precomputed", "torchscript", "small")
    result = run_leg(chain, leg, tolerances)
    assert "no golden baseline" in with_golden(chain, leg, tolerances, result, tmp_path).artifact["golden"]
    feed = chain.workaround_feed("small", "precomputed")
    write_golden(tmp_path, "small-precomputed-torchscript-raw-fp32", result.outputs,
                 {"runtime": chain.ort_runtime("cpu"), "feed": feed_digest(feed)})
    checked = with_golden(chain, leg, tolerances, result, tmp_path)
    assert checked.passed and {"golden depth", "golden photometric_confidence"} <= set(checked.diffs)
    moved = replace(result, outputs={**result.outputs, "depth": result.outputs["depth"] + 0.01})  # 1e-3 steps
    assert not with_golden(chain, leg, tolerances, moved, tmp_path).passed
    other = Leg("ort-cuda", "raw", "precomputed", "torchscript", "small")
    assert "only ONNX Runtime CPU" in with_golden(chain, other, tolerances, result, tmp_path).artifact["golden"]
    chain.close()


def test_a_failing_leg_with_golden_rows_still_saves_its_replay(tmp_path):
    from dataclasses import replace

    from harness.chain import Chain, Leg, replay_leg, run_leg, with_golden
    from harness.gates.limits import Tolerances

    chain, tolerances = Chain(), Tolerances.load()
    leg = Leg("ort-cpu", "raw", "precomputed", "torchscript", "small")
    result = run_leg(chain, leg, tolerances)
    feed = chain.workaround_feed("small", "precomputed")
    write_golden(tmp_path / "golden", "small-precomputed-torchscript-raw-fp32", result.outputs,
                 {"runtime": chain.ort_runtime("cpu"), "feed": feed_digest(feed)})
    moved = replace(result, outputs={**result.outputs, "depth": result.outputs["depth"] + 0.01})
    checked = with_golden(chain, leg, tolerances, moved, tmp_path / "golden")
    assert not checked.passed
    replay = replay_leg(chain, leg, checked, tmp_path / "replay")
    assert replay is not None
    chain.close()
