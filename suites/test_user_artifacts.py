"""The user's own conversion through the gate: every ``--harness-onnx`` graph on ONNX Runtime
CPU/CUDA (and TensorRT FP32 where it can run), every ``--harness-engine`` on TensorRT, against the
torch reference (the harness's MVSNet, or ``--harness-model``), with the gates of
fixtures/tolerances.toml. Without ``--harness-onnx``/``--harness-engine`` the one test skips,
saying so.

    pytest suites/test_user_artifacts.py --harness-onnx mvsnet.onnx --harness-engine mvsnet.trt
"""

from __future__ import annotations

from harness.compare import assert_parity


def test_user_artifact_parity(user_parity, user_leg):
    result = user_parity(user_leg)
    assert_parity(result.diffs, user_leg.id, "\n".join("  -> " + note for note in result.diagnosis))
