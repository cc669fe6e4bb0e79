"""The regression gate: every candidate backend against torch strict FP32 (the original
three-input call), per graph variant x inverse workaround x exporter x case.

Gates come from fixtures/tolerances.toml; each run prints the max squared errors per case and
writes them to the run record.
"""

from __future__ import annotations

from harness.compare import assert_parity


def test_parity(parity, parity_leg):
    result = parity(parity_leg)
    assert_parity(result.diffs, parity_leg.id, result.localisation)
