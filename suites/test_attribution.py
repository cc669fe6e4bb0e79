"""Error attribution along the chain: torch strict FP32 -> torch TF32 -> ONNX Runtime FP32 ->
FP16 graph -> TensorRT FP16, per case, in the run record and the session summary. Hops that
cannot run here are listed with the reason.
"""

from __future__ import annotations

import json
import math

from harness.localize import attribution


def test_error_attribution_along_the_chain(chain, case, record_property):
    rows = attribution(chain, case.name)
    record_property("harness_attribution", json.dumps(rows, default=float))
    ran = [r for r in rows if "skipped" not in r]
    assert ran[0]["hop"] == "torch-fp32", "the reference always runs"
    assert len(ran) >= 2, f"no hop ran after the reference: {rows}"
    previous_total = 0.0
    for row in ran[1:]:
        for key in ("hop_max_abs_mm", "total_max_abs_mm", "hop_p99_abs_mm"):
            assert math.isfinite(row[key]), (row["hop"], key, row[key])
        # the error against the reference cannot exceed what the hops added up to (triangle
        # inequality on the per-pixel maximum), up to float32 rounding of depths near 1 m
        assert row["total_max_abs_mm"] <= previous_total + row["hop_max_abs_mm"] + 1e-3, row
        previous_total = row["total_max_abs_mm"]
