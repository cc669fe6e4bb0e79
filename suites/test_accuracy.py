"""Accuracy against ground truth, per backend: users judge a conversion by depth in millimetres.

The torch reference with the session's weights must see depth on scenes it was not trained on
(peaked, varying, far better than chance); every other backend's thres2mm / thres4mm must stay
within fixtures/tolerances.toml of the reference's ([...<precision>.accuracy] tables).
"""

from __future__ import annotations

import json

import pytest

from harness.accuracy import accuracy_gates_hold, backend_accuracy, held_out_accuracy, summarize
from harness.chain import CANDIDATES, plan_legs
from harness.errors import BackendUnavailable
from harness.train import HELD_OUT_SEEDS


def test_reference_sees_depth_on_held_out_scenes(chain, case, record_property):
    seeds = list(HELD_OUT_SEEDS[20:22])
    rows = held_out_accuracy(chain.model, case, seeds, chain.device)
    total = summarize(rows)
    record_property("held_out_accuracy", json.dumps(total))
    interval = 2.5 * case.interval_scale
    for row in rows:
        # the depth map follows the scene: it varies where the scene varies (on a nearly flat
        # scene the correlation is dominated by noise, and being within one interval suffices)
        follows = row["correlation"] > 0.9 or row["mae_mm"] < interval
        assert follows, f"seed {row['seed']}: depth does not follow the ground truth: {row}"
        assert row["depth_std_mm"] > 0.5 * row["gt_std_mm"], f"seed {row['seed']}: depth map too flat: {row}"
    assert total["mean_confidence"] > 10 * 4.0 / case.num_depth, "the probability volume is (nearly) flat"
    # chance (a constant mid-range depth) is ~100 mm on these scenes
    assert total["mae_mm"] < 4 * interval, total
    assert total["thres8mm"] < 0.5, total


@pytest.mark.parametrize("candidate", CANDIDATES)
def test_backend_accuracy_matches_reference(chain, case, candidate, tolerances, record_property):
    # the simplified precomputed-inverse graph; a backend that consumes the torch model gets its own leg
    (leg,) = plan_legs((case.name,), ("precomputed",), ("torchscript",), ("simplified",), (candidate,))
    reference = backend_accuracy(chain, None, case.name)
    try:
        result = backend_accuracy(chain, leg, case.name)
    except BackendUnavailable as exc:
        pytest.skip(f"{exc.backend}: {exc.missing}")
    gates = tolerances.lookup("torch-fp32", candidate, leg.precision, ("accuracy",),
                              machine=chain.machine_class(candidate))["accuracy"]
    record_property("harness_accuracy", json.dumps({"reference": reference, "candidate": result}))
    failed = accuracy_gates_hold(reference, result, gates)
    assert not failed, (f"{candidate} on {case.name}: thresholds moved (pp): {failed}; "
                        f"reference {reference}, candidate {result}")
