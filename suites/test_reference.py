"""The reference itself: the torch model with the session's weights must be non-degenerate
(otherwise every parity test is trivially true), and the precomputed-inverse call must compute
the same function as the original three-input call.
"""

from __future__ import annotations

from harness.compare import compare
from harness.data.cases import get_case
from harness.model.sanity import degenerate_reasons


def test_reference_depth_is_not_degenerate(chain, case):
    reasons = degenerate_reasons(chain.reference_outputs(case.name), chain.feed(case.name)["depth_values"])
    assert not reasons, "; ".join(reasons)


def test_precomputed_inverse_call_matches_original_call(chain, case, tolerances):
    feed = chain.feed(case.name)
    original = chain.reference_outputs(case.name)
    four_input = chain.torch_runner("fp32", with_inverse=True).infer(feed)
    gates = tolerances.lookup("torch-fp32", "torch-fp32", "fp32", ("depth", "photometric_confidence"),
                              machine=chain.machine_class("torch-fp32"))
    diffs = compare(original, four_input, gates, depth_values=feed["depth_values"])
    assert all(diffs.values()), "\n".join(d.row() for d in diffs.values())


def test_cases_cover_the_dtu_depth_range():
    dtu_last = 425.0 + 2.5 * 1.06 * 191  # DTU: 192 hypotheses, interval 2.5 mm x 1.06
    for name in ("small", "seed", "dtu"):
        case = get_case(name)
        interval = 2.5 * case.interval_scale
        last = 425.0 + interval * (case.num_depth - 1)
        assert abs(last - dtu_last) <= interval, (name, last)
