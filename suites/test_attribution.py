"""Error attribution along the chain: torch strict FP32 -> torch TF32 -> ONNX Runtime FP32 ->
FP16 graph -> TensorRT FP16, per case, in the run record and the session summary. Hops that
cannot run here are listed with the reason; every hop that ran must keep its output within its
own precision's depth gate against the reference, and a failure names the hop where the error
enters.
"""

from __future__ import annotations

import json
import math

from harness.localize import assert_attribution_within_gates, attribution


def test_error_attribution_along_the_chain(chain, case, tolerances, record_property):
    rows = attribution(chain, case.name, tolerances)
    record_property("harness_attribution", json.dumps(rows, default=float))
    ran = [r for r in rows if "skipped" not in r]
    assert ran[0]["hop"] == "torch-fp32", "the reference always runs"
    assert len(ran) >= 2, f"no hop ran after the reference: {rows}"
    for row in ran[1:]:
        for key in ("hop_max_abs_mm", "total_max_abs_mm", "hop_p99_abs_mm"):
            assert math.isfinite(row[key]), (row["hop"], key, row[key])
    assert_attribution_within_gates(rows)
