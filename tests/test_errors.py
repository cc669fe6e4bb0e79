"""Unit tests of harness/errors.py: one message shape, builtin bases, pickling for xdist."""

from __future__ import annotations

import pickle

import pytest

from harness import errors
from harness.errors import (
    BackendUnavailable,
    CacheError,
    CheckpointError,
    ConfigError,
    DataFormatError,
    EngineBuildError,
    ExportError,
    HarnessError,
    InvalidArgument,
    InvalidInput,
    MissingFile,
    ParityError,
    RegressionError,
    ShapeError,
    UnsafeCheckpoint,
    UnsupportedOperator,
)

FIVE_FIELD_ERRORS = [
    HarnessError, InvalidArgument, InvalidInput, ShapeError, DataFormatError, MissingFile, CheckpointError,
    UnsafeCheckpoint, ConfigError, ExportError, UnsupportedOperator, EngineBuildError, CacheError, ParityError,
    RegressionError,
]


def test_message_has_the_documented_shape():
    error = HarnessError("imgs", "wrong shape", observed=(1, 3, 128), expected="[B, N, 3, H, W]", fix="stack the views on dim 1")
    assert str(error) == "imgs | wrong shape: (1, 3, 128). Expected: [B, N, 3, H, W]. Fix: stack the views on dim 1."


def test_optional_parts_are_left_out():
    assert str(HarnessError("s", "problem")) == "s | problem."
    assert str(HarnessError("s", "problem", observed="obs")) == "s | problem: obs."
    assert str(HarnessError("s", "problem", expected="e")) == "s | problem. Expected: e."
    assert str(HarnessError("s", "problem", fix="do it")) == "s | problem. Fix: do it."


def test_fix_ends_with_exactly_one_period():
    assert str(HarnessError("s", "p", fix="pass --x.")).endswith("Fix: pass --x.")
    assert not str(HarnessError("s", "p", fix="pass --x.")).endswith("..")


def test_falsy_observed_values_are_still_shown():
    assert str(HarnessError("s", "p", observed=0, expected=0)) == "s | p: 0. Expected: 0."


def test_fields_are_kept_as_attributes():
    error = InvalidArgument("opset", "unsupported", observed=15, expected="16..23", fix="pass --harness-opset 17")
    assert (error.subject, error.problem, error.observed, error.expected, error.fix) == (
        "opset", "unsupported", 15, "16..23", "pass --harness-opset 17")


@pytest.mark.parametrize("cls, builtin", [
    (InvalidArgument, ValueError), (InvalidInput, ValueError), (ShapeError, ValueError),
    (ConfigError, ValueError), (DataFormatError, ValueError), (CheckpointError, ValueError),
    (MissingFile, FileNotFoundError), (ParityError, AssertionError), (RegressionError, AssertionError),
    (ExportError, RuntimeError), (EngineBuildError, RuntimeError), (CacheError, RuntimeError),
    (BackendUnavailable, RuntimeError),
])
def test_user_errors_inherit_the_matching_builtin(cls, builtin):
    assert issubclass(cls, builtin)
    assert issubclass(cls, HarnessError)


@pytest.mark.parametrize("cls, parent", [
    (InvalidInput, InvalidArgument), (ShapeError, InvalidInput), (ConfigError, InvalidArgument),
    (UnsafeCheckpoint, CheckpointError), (UnsupportedOperator, ExportError),
])
def test_specific_errors_refine_their_parent(cls, parent):
    assert issubclass(cls, parent)


def test_every_error_class_is_a_harness_error():
    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, BaseException)]
    assert all(issubclass(c, HarnessError) for c in classes if c is not errors.Interrupted)


def test_an_interrupt_passes_through_every_except_exception():
    # an interrupt is not an error: a handler that wraps a library's failure must never catch it
    assert issubclass(errors.Interrupted, KeyboardInterrupt)
    assert not issubclass(errors.Interrupted, Exception)
    with pytest.raises(errors.Interrupted, match=r"^run \| interrupted by SIGTERM\.$"):
        try:
            raise errors.Interrupted(15)
        except Exception:  # noqa: BLE001 - what the export and onnxsim wrappers do
            pytest.fail("an interrupt was caught as an error")
    assert pickle.loads(pickle.dumps(errors.Interrupted(2))).signum == 2


def test_missing_file_can_be_caught_as_file_not_found():
    with pytest.raises(FileNotFoundError, match="no such file"):
        raise MissingFile("a.ckpt", "checkpoint not found", observed="no such file")


def test_parity_error_is_reported_as_a_failure_by_pytest():
    with pytest.raises(AssertionError):
        raise ParityError("leg", "outputs differ")


@pytest.mark.parametrize("cls", FIVE_FIELD_ERRORS)
def test_pickling_keeps_the_fields_and_message(cls):
    error = cls("subject", "problem", observed={"observed": [1, 2]}, expected="expected", fix="fix it")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error)
    assert (copy.subject, copy.problem, copy.observed, copy.expected, copy.fix) == (
        "subject", "problem", {"observed": [1, 2]}, "expected", "fix it")


def test_backend_unavailable_keeps_backend_and_missing():
    error = BackendUnavailable("ort-cuda", "no CUDA device", fix="run on a GPU machine")
    assert str(error) == "ort-cuda | backend unavailable: no CUDA device. Fix: run on a GPU machine."
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is BackendUnavailable
    assert (copy.backend, copy.missing, copy.fix) == ("ort-cuda", "no CUDA device", "run on a GPU machine")
    assert str(copy) == str(error)


def test_backend_unavailable_without_fix_pickles():
    copy = pickle.loads(pickle.dumps(BackendUnavailable("trt-fp16", "tensorrt not importable")))
    assert (copy.backend, copy.missing, copy.fix) == ("trt-fp16", "tensorrt not importable", None)


def test_run_time_failures_have_their_own_type_distinct_from_build_errors():
    from harness.errors import RunError

    assert issubclass(RunError, RuntimeError) and issubclass(RunError, HarnessError)
    assert not issubclass(RunError, EngineBuildError) and not issubclass(EngineBuildError, RunError)
    error = RunError("trt-fp32", "execute_async_v3 failed", observed="illegal address", expected="a successful enqueue")
    assert str(error).startswith("trt-fp32 | execute_async_v3 failed: illegal address.")


@pytest.mark.parametrize("cls", FIVE_FIELD_ERRORS)
def test_observed_expected_and_fix_are_keyword_only(cls):
    """Three free-text slots in a row are easy to swap: after subject and problem, each is named."""
    with pytest.raises(TypeError, match="positional"):
        cls("subject", "problem", "observed", "expected", "fix it")
    with pytest.raises(TypeError, match="positional"):
        BackendUnavailable("ort-cuda", "no CUDA device", "run on a GPU machine")
