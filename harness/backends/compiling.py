"""Around a torch compile (torch.compile, torch.export + AOTInductor): where Inductor caches it,
and keeping what it says off the console.

Shared by the runners that compile the model (``torch_runner``, ``aoti_runner``); imports nothing
of the harness, so either can use it without an import cycle.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: The loggers torch compiles through (torch gives several handlers of their own, not propagating).
QUIET_LOGGERS = ("torch._inductor", "torch._export", "torch.export", "torch._dynamo", "torch.fx",
                 "torch._functorch", "torch._subclasses", "triton")
#: How many lines of what a compile said a runner's record keeps (the rest is counted).
MAX_LOG_LINES = 20

#: Inductor's own setting for its on-disk caches (FX graphs, kernels, autotuning; Triton's cache
#: lies under it unless $TRITON_CACHE_DIR says otherwise).
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def inductor_cache_dir(cache_dir: str | Path | None) -> Path | None:
    """The folder Inductor caches into under the harness's artifact cache ``cache_dir`` (None:
    none given, Inductor keeps its default). A ``$TORCHINDUCTOR_CACHE_DIR`` the user set wins;
    Inductor sets the variable to its default itself at its first compile, which does not count."""
    if cache_dir is None or _user_set_inductor_cache():
        return None
    return Path(cache_dir) / "inductor"


def _user_set_inductor_cache() -> bool:
    current = os.environ.get(INDUCTOR_CACHE_ENV)
    if not current:
        return False
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # a torch without Inductor: whatever is set is the user's
        return True
    return os.path.abspath(current) != os.path.abspath(default_cache_dir())


@contextlib.contextmanager
def inductor_cache(folder: Path | None) -> Iterator[None]:
    """Inductor caches into ``folder`` for the block (nothing changes when None). Inductor reads
    the variable when it compiles; what it set it to is put back after, so no other code of the
    process sees the harness's folder."""
    if folder is None:
        yield
        return
    saved = os.environ.get(INDUCTOR_CACHE_ENV)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[INDUCTOR_CACHE_ENV] = str(folder.resolve())
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(INDUCTOR_CACHE_ENV, None)
        else:
            os.environ[INDUCTOR_CACHE_ENV] = saved


def _keep(lines: list[str], text: str) -> None:
    text = text.rstrip()
    if text.strip() and text not in lines:
        lines.append(text)


@contextlib.contextmanager
def compile_log(lines: list[str]) -> Iterator[None]:
    """Keep torch's compile loggers (``QUIET_LOGGERS``, WARNING and up) and Python warnings off
    the console and in ``lines`` (each once): the record keeps them (``compile_log``), the main
    job's screen stays the parity table."""
    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            _keep(lines, record.getMessage())

    handler = Keep(logging.WARNING)
    # torch gives these loggers handlers of its own (and no propagation): they are swapped out
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    saved = [(logger.handlers[:], logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers[:] = [handler]
        logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for warning in caught:
                    _keep(lines, f"{warning.category.__name__}: {warning.message}")
    finally:
        for logger, (handlers, propagate) in zip(loggers, saved, strict=True):
            logger.handlers[:] = handlers
            logger.propagate = propagate


@contextlib.contextmanager
def captured_output(lines: list[str]) -> Iterator[None]:
    """Everything written to stdout and stderr in the block, by Python (``print``,
    ``sys.stderr.write``: autotuning's tables) or below it (``os.write``, C code, compiler
    subprocesses: Triton's and the C++ compiler's messages), goes into ``lines`` instead of the
    console: file descriptors 1 and 2 and ``sys.stdout``/``sys.stderr`` point at one temporary
    file for the block and are put back in ``finally``."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # what was written before the block goes where it was going
    with tempfile.TemporaryFile(mode="a+b", prefix="harness-compile-") as sink:  # append: the two fds share it
        saved_fds = [os.dup(1), os.dup(2)]
        text = io.TextIOWrapper(os.fdopen(os.dup(sink.fileno()), "ab"), encoding="utf-8", errors="replace",
                                write_through=True)
        saved_streams = (sys.stdout, sys.stderr)
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            sys.stdout = sys.stderr = text
            yield
        finally:
            with contextlib.suppress(Exception):
                text.flush()
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            text.close()
            sink.seek(0)
            for line in sink.read().decode("utf-8", errors="replace").splitlines():
                _keep(lines, line)


@contextlib.contextmanager
def quiet(lines: list[str]) -> Iterator[None]:
    """``compile_log`` and ``captured_output`` together: nothing a compile says reaches the
    console; all of it is in ``lines``."""
    with captured_output(lines), compile_log(lines):
        yield


def interrupt_in(exc: BaseException) -> KeyboardInterrupt | None:
    """The interrupt (SIGINT, SIGTERM: the harness's ``Interrupted`` is a ``KeyboardInterrupt``)
    that ``exc`` is, or wraps: through ``__cause__``, ``__context__`` and the ``inner_exception``
    of Dynamo's and Inductor's wrappers (``InductorError``, ``BackendCompilerFailed``, raised
    ``from None``). None when there is none."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):
            return current
        todo += [linked for linked in (current.__cause__, current.__context__, getattr(current, "inner_exception", None))
                 if isinstance(linked, BaseException)]
    return None


def quiet_compile(work: Callable[[], T], lines: list[str], cache: Path | None = None) -> T:
    """``work()`` (a compile, or the first calls of a compiled function, which compile) with
    Inductor caching into ``cache`` (``inductor_cache``) and everything it says in ``lines``.

    A signal during the compile ends it as the harness's interrupt: torch.compile reports an
    exception inside its backend wrapped (``InductorError: Interrupted``); the interrupt it wraps
    is raised instead, so the run ends with its one line and exit 130/143, not a traceback."""
    try:
        with inductor_cache(cache), quiet(lines):
            return work()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        interrupt = interrupt_in(exc)
        if interrupt is None:
            raise
        raise interrupt from None


def log_excerpt(lines: list[str], limit: int = MAX_LOG_LINES) -> list[str]:
    """The first ``limit`` lines of a compile's log for a record, and how many more there were."""
    if len(lines) <= limit:
        return list(lines)
    return [*lines[:limit], f"... {len(lines) - limit} more lines"]
