"""Unit tests of harness/convert/progress.py: the self-overwriting progress line and the
``IProgressMonitor`` adapter (against the fake ``tensorrt`` module in tests/fake_tensorrt.py)."""

from __future__ import annotations

import io
import re
import sys
import threading
import time
import types

import pytest

from harness.convert.progress import ElapsedTicker, ProgressLine, interactive, progress_monitor

fake_trt = sys.modules["fake_tensorrt"]  # registered by tests/conftest.py


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)


def last_frame(stream: io.StringIO) -> str:
    """What a terminal shows now: the text after the last carriage return, without the erase code."""
    return stream.getvalue().rsplit("\r", 1)[-1].replace("\x1b[K", "")


# -- interactive ---------------------------------------------------------------------------------

def test_interactive_on_a_terminal_outside_ci(no_ci):
    assert interactive(Terminal())


def test_not_interactive_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert not interactive(Terminal())


def test_not_interactive_on_a_plain_stream(no_ci):
    assert not interactive(io.StringIO())


def test_empty_ci_variable_does_not_count(monkeypatch):
    monkeypatch.setenv("CI", "")
    assert interactive(Terminal())


# -- ProgressLine ----------------------------------------------------------------------------

def test_progress_line_overwrites_itself_on_a_terminal(no_ci):
    stream = Terminal()
    line = ProgressLine("building fp32 engine", stream)
    assert line.enabled
    line.update("Building engine", 2, 5)
    assert re.fullmatch(r"building fp32 engine: Building engine 2/5 \(\d+\.\d s\)", last_frame(stream))
    line.update("Tactic selection")
    assert re.fullmatch(r"building fp32 engine: Tactic selection \(\d+\.\d s\)", last_frame(stream))
    line.close("built")
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\x1b[K\n")
    assert all(frame.endswith("\x1b[K") or frame.endswith("\x1b[K\n") for frame in text.split("\r")[1:])
    assert re.fullmatch(r"building fp32 engine: built in \d+\.\d s\n", last_frame(stream))


def test_progress_line_keeps_the_phase_between_updates(no_ci):
    stream = Terminal()
    line = ProgressLine("x", stream)
    line.update("Parsing")
    line.update(step=3, total=4)
    assert last_frame(stream).startswith("x: Parsing 3/4 (")
    line.update(step=1)  # no total: no count
    assert re.fullmatch(r"x: Parsing \(\d+\.\d s\)", last_frame(stream))


def test_progress_line_writes_nothing_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "1")
    stream = Terminal()
    line = ProgressLine("building", stream)
    assert not line.enabled
    line.update("Building engine", 1, 2)
    line.close("built")
    assert stream.getvalue() == ""
    assert line.phase == "Building engine"  # still tracked


def test_progress_line_writes_nothing_to_a_non_terminal(no_ci):
    stream = io.StringIO()
    line = ProgressLine("building", stream)
    assert not line.enabled
    line.update("Building engine", 1, 2)
    line.close("failed")
    assert stream.getvalue() == ""


def test_progress_line_explicit_enabled_wins(no_ci):
    plain, terminal = io.StringIO(), Terminal()
    ProgressLine("a", plain, enabled=True).update("p")
    ProgressLine("b", terminal, enabled=False).update("p")
    assert plain.getvalue().startswith("\ra: p (")
    assert terminal.getvalue() == ""


def test_progress_line_defaults_to_stderr(no_ci, capsys):
    line = ProgressLine("building")
    line.update("p")
    line.close("built")
    assert not line.enabled  # pytest's captured stderr is no terminal
    assert capsys.readouterr().err == ""


# -- progress_monitor ------------------------------------------------------------------------

def test_progress_monitor_is_none_without_iprogressmonitor():
    assert progress_monitor(types.SimpleNamespace(), ProgressLine("x", io.StringIO())) is None
    fake = fake_trt.FakeTensorRT(progress_monitor=False)
    assert progress_monitor(fake, ProgressLine("x", io.StringIO())) is None


def test_progress_monitor_reports_phases_into_the_line(no_ci):
    fake = fake_trt.FakeTensorRT()
    stream = Terminal()
    line = ProgressLine("building fp16 engine", stream)
    monitor = progress_monitor(fake, line)
    assert isinstance(monitor, fake_trt.IProgressMonitor)
    assert monitor._initialised  # the base (a pybind11 trampoline in TensorRT) was initialised

    monitor.phase_start("Building engine", None, 4)
    assert last_frame(stream).startswith("building fp16 engine: Building engine 0/4 (")
    assert monitor.step_complete("Building engine", 0) is True
    assert last_frame(stream).startswith("building fp16 engine: Building engine 1/4 (")
    monitor.phase_start("Tactic selection", "Building engine", 10)
    assert monitor.step_complete("Tactic selection", 6) is True
    assert last_frame(stream).startswith("building fp16 engine: Tactic selection 7/10 (")
    monitor.phase_finish("Tactic selection")
    assert re.fullmatch(r"building fp16 engine: Tactic selection \(\d+\.\d s\)", last_frame(stream))
    assert monitor.step_complete("Building engine", 3) is True
    assert last_frame(stream).startswith("building fp16 engine: Building engine 4/4 (")
    assert line.phase == "Building engine"


def test_progress_monitor_never_cancels_even_when_silent(monkeypatch):
    monkeypatch.setenv("CI", "true")
    stream = Terminal()
    monitor = progress_monitor(fake_trt.FakeTensorRT(), ProgressLine("x", stream))
    monitor.phase_start("Building engine", None, 2)
    assert all(monitor.step_complete("Building engine", step) is True for step in range(2))
    monitor.phase_finish("Building engine")
    assert stream.getvalue() == ""


def test_step_of_an_unknown_phase_has_no_count(no_ci):
    stream = Terminal()
    monitor = progress_monitor(fake_trt.FakeTensorRT(), ProgressLine("x", stream))
    assert monitor.step_complete("Never started", 0) is True
    assert re.fullmatch(r"x: Never started \(\d+\.\d s\)", last_frame(stream))


# -- ElapsedTicker ---------------------------------------------------------------------------

def test_elapsed_ticker_does_not_start_a_thread_when_the_line_is_disabled():
    line = ProgressLine("x", io.StringIO(), enabled=False)
    with ElapsedTicker(line) as ticker:
        assert not ticker.thread.is_alive()
    assert ticker.stop.is_set()


def test_elapsed_ticker_refreshes_the_line_every_second_and_stops(no_ci):
    stream = Terminal()
    line = ProgressLine("building", stream)
    with ElapsedTicker(line) as ticker:
        assert ticker.thread.is_alive()
        time.sleep(1.3)
    ticker.thread.join(timeout=2)
    assert not ticker.thread.is_alive()
    assert re.fullmatch(r"building: starting \(1\.\d s\)", last_frame(stream))


def test_elapsed_ticker_has_stopped_writing_when_the_block_ends(no_ci):
    """The build's final line (``close``) must be the last thing on the terminal: leaving the
    ticker's block waits for a refresh that is under way instead of letting it land after."""
    stream = Terminal()
    line = ProgressLine("building", stream)
    in_update, release = threading.Event(), threading.Event()
    original = line.update

    def slow_update(*args, **kwargs):
        in_update.set()
        release.wait(0.3)  # a refresh that is still writing when the build finishes
        original(*args, **kwargs)

    line.update = slow_update
    with ElapsedTicker(line) as ticker:
        assert in_update.wait(3.0)
    line.close("built")
    ticker.thread.join(timeout=2)
    assert stream.getvalue().endswith(" s\x1b[K\n"), "a progress refresh landed after the final line"
    assert last_frame(stream).startswith("building: built in ")


def test_a_step_off_a_terminal_writes_a_line_when_it_starts_and_when_it_ends(monkeypatch):
    from harness.convert.progress import step

    monkeypatch.setenv("CI", "true")
    log = io.StringIO()
    with step("exporting ONNX x", "exported", stream=log):
        assert log.getvalue() == "exporting ONNX x ...\n"  # before the work, not only after it
    assert re.fullmatch(r"exporting ONNX x \.\.\.\nexporting ONNX x: exported in \d+\.\d s\n", log.getvalue())


def test_a_step_that_raises_leaves_the_error_the_last_word(monkeypatch):
    from harness.convert.progress import step

    monkeypatch.setenv("CI", "true")
    log = io.StringIO()
    with pytest.raises(KeyboardInterrupt), step("simplifying", stream=log):
        raise KeyboardInterrupt
    assert log.getvalue() == "simplifying ...\n"
