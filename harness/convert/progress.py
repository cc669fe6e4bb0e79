"""Progress of long steps. TensorRT engine builds: the builder's phases when
``IProgressMonitor`` exists, elapsed time otherwise, on one self-overwriting line on a terminal.
``step`` wraps any long step (export, simplify, FP16 conversion, engine build): the same line on
a terminal, one line at its start and one at its end under CI or when stderr is not a terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO


def interactive(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("CI")


class ProgressLine:
    """Writes ``label: phase step/total (elapsed s)`` over itself on one line."""

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = interactive(self.stream) if enabled is None else enabled
        self.started = time.perf_counter()
        self.phase = "starting"
        self.lock = threading.Lock()

    def update(self, phase: str | None = None, step: int | None = None, total: int | None = None) -> None:
        with self.lock:
            if phase is not None:
                self.phase = phase
            if not self.enabled:
                return
            count = f" {step}/{total}" if step is not None and total else ""
            elapsed = time.perf_counter() - self.started
            self.stream.write(f"\r{self.label}: {self.phase}{count} ({elapsed:.1f} s)\x1b[K")
            self.stream.flush()

    def close(self, outcome: str) -> None:
        with self.lock:
            if self.enabled:
                elapsed = time.perf_counter() - self.started
                self.stream.write(f"\r{self.label}: {outcome} in {elapsed:.1f} s\x1b[K\n")
                self.stream.flush()


def progress_monitor(trt: Any, line: ProgressLine) -> Any | None:
    """A ``trt.IProgressMonitor`` reporting into ``line``, or None where the API lacks it."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()  # pybind11 trampolines need the base initialised
            self.totals: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.totals[phase_name] = num_steps
            line.update(phase_name, 0, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            line.update(phase_name, step + 1, self.totals.get(phase_name))
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            line.update(phase_name)

    return _Monitor()


class ElapsedTicker:
    """Fallback for builders without IProgressMonitor: refreshes the line every second."""

    def __init__(self, line: ProgressLine) -> None:
        self.line = line
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            self.line.update()

    def __enter__(self) -> ElapsedTicker:
        if self.line.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()  # no refresh may land after the closing line


@contextlib.contextmanager
def step(label: str, done: str = "done", stream: TextIO | None = None) -> Iterator[ProgressLine]:
    """A long step (export, simplify, FP16 conversion, engine build) that is never silent: on a
    terminal a self-overwriting ``label: running (elapsed s)`` line, elsewhere (CI, a pipe, a
    log) one line when it starts and one when it ends. A step that raises (an error, an
    interrupt) writes no closing line off a terminal, so the error's own line comes last."""
    stream = stream or sys.stderr
    line = ProgressLine(label, stream)
    if not line.enabled:
        stream.write(f"{label} ...\n")
        stream.flush()
    try:
        with ElapsedTicker(line):
            line.update("running")
            yield line
    except BaseException:
        line.close("stopped")
        raise
    if line.enabled:
        line.close(done)
    else:
        stream.write(f"{label}: {done} in {time.perf_counter() - line.started:.1f} s\n")
        stream.flush()
