"""The harness's exceptions.

Every message has one shape, so a user can read any of them the same way::

    <subject> | <what is wrong>: <observed>. Expected: <allowed>. Fix: <flag or step>.

User errors also inherit the matching builtin (``ValueError``, ``FileNotFoundError`` ...) so
callers that already catch those keep working; parity failures inherit ``AssertionError`` so
pytest reports them as test failures rather than errors.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Root of every error the harness raises on purpose."""

    def __init__(
        self,
        subject: str,
        problem: str,
        *,
        observed: object = None,
        expected: object = None,
        fix: str | None = None,
    ) -> None:
        self.subject = subject
        self.problem = problem
        self.observed = observed
        self.expected = expected
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"{self.subject} | {self.problem}"
        if self.observed is not None:
            text += f": {self.observed}"
        text += "."
        if self.expected is not None:
            text += f" Expected: {self.expected}."
        if self.fix:
            text += f" Fix: {self.fix.rstrip('.')}."
        return text

    def __reduce__(self):  # keep the structured fields across pickling (pytest-xdist)
        return (
            _rebuild,
            (type(self), (self.subject, self.problem),
             {"observed": self.observed, "expected": self.expected, "fix": self.fix}),
        )


def _rebuild(cls: type[HarnessError], args: tuple[object, ...], keywords: dict[str, object]) -> HarnessError:
    """Unpickle an error with its keyword-only fields (``__reduce__`` cannot pass keywords)."""
    return cls(*args, **keywords)  # type: ignore[arg-type]


class InvalidArgument(HarnessError, ValueError):
    """A value passed by the user (option, argument, tensor) is not acceptable."""


class InvalidInput(InvalidArgument):
    """A network input (image, matrix, depth hypotheses) is malformed."""


class ShapeError(InvalidInput):
    """A tensor's shape cannot go through MVSNet or through a built artifact."""


class DataFormatError(HarnessError, ValueError):
    """A file on disk (camera file, pair.txt, PFM, scene folder) is malformed."""


class MissingFile(HarnessError, FileNotFoundError):
    """A file or folder the user pointed at does not exist."""


class OutputExists(HarnessError, FileExistsError):
    """A file or folder the harness would write is already there; it is never overwritten."""


class CheckpointError(HarnessError, ValueError):
    """A checkpoint cannot be loaded into MVSNet."""


class UnsafeCheckpoint(CheckpointError):
    """A checkpoint needs arbitrary unpickling (it could run code) and was refused unread."""


class ConfigError(InvalidArgument):
    """A configuration file (tolerances.toml, options) is malformed or contradictory."""


class ExportError(HarnessError, RuntimeError):
    """Exporting the model to ONNX failed."""


class UnsupportedOperator(ExportError):
    """The graph holds an operator a target cannot take; raised before any engine build."""


class BackendUnavailable(HarnessError, RuntimeError):
    """A backend cannot run here. ``missing`` names the missing piece (used as skip reason)."""

    def __init__(self, backend: str, missing: str, *, fix: str | None = None) -> None:
        self.backend = backend
        self.missing = missing
        super().__init__(backend, "backend unavailable", observed=missing, fix=fix)

    def __reduce__(self):
        return (_rebuild, (type(self), (self.backend, self.missing), {"fix": self.fix}))


class EngineBuildError(HarnessError, RuntimeError):
    """TensorRT could not parse or build the ONNX model (or load the plan it built)."""


class RunError(HarnessError, RuntimeError):
    """A prepared backend failed while running (e.g. TensorRT's enqueue returned false): the
    artifact was built and loaded, so this is not a build error."""


class ArtifactError(HarnessError, RuntimeError):
    """A built artifact (ONNX graph, engine) cannot be loaded: truncated, corrupt or foreign."""


class GraphRuntimeError(ArtifactError):
    """A user's graph loaded but failed inside its runtime at the case's shapes (e.g. dynamic axes
    declared over constants baked for the traced shape)."""


class CacheError(HarnessError, RuntimeError):
    """An artifact cache entry is unusable and could not be rebuilt."""


class WriteError(HarnessError, OSError):
    """A report, record or artifact cannot be written (read-only or full file system, permissions)."""


class PreflightError(HarnessError, ValueError):
    """A check made once at session start failed (weights, scene, device, writable folders):
    the session stops with this one message instead of one failure per test."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT, SIGTERM); what finished was kept.

    The one exception here that is not a ``HarnessError``: an interrupt is not an error, and
    deriving it from ``Exception`` let every ``except Exception`` that wraps a library's failure
    (the exporters, onnxsim, ONNX Runtime) report it as one ("export failed: Interrupted ...").
    As a ``KeyboardInterrupt`` only, it passes through them (and pytest ends the session on it).
    Its message has the harness's shape: ``run | interrupted by SIGINT.``"""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.subject = "run"
        self.problem = f"interrupted by {signal.Signals(signum).name}"
        super().__init__(f"{self.subject} | {self.problem}.")

    def __reduce__(self):
        return (type(self), (self.signum,))


class ParityError(HarnessError, AssertionError):
    """Two backends disagree beyond tolerance. The message holds one table row per output."""


class CudaAlreadyInitialised(HarnessError, RuntimeError):
    """CUDA was initialised before a worker was pinned to its GPU; the pin would be ignored."""


class RegressionError(HarnessError, AssertionError):
    """A benchmark or accuracy figure regressed beyond the allowed margin."""
