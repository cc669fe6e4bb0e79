"""Unit tests of harness/backends/compiling.py: where Inductor caches, with fakes (no compile)."""

from __future__ import annotations

import os

import pytest

from harness.backends.compiling import INDUCTOR_CACHE_ENV, inductor_cache, inductor_cache_dir


def test_inductor_caches_under_the_harness_cache_when_the_chain_gives_one(tmp_path, monkeypatch):
    monkeypatch.delenv(INDUCTOR_CACHE_ENV, raising=False)
    assert inductor_cache_dir(tmp_path) == tmp_path / "inductor"
    assert inductor_cache_dir(None) is None


def test_a_folder_the_user_set_wins_but_inductors_own_default_does_not(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv(INDUCTOR_CACHE_ENV, str(tmp_path / "mine"))
    assert inductor_cache_dir(tmp_path) is None
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, default_cache_dir())  # what Inductor writes at its first compile
    assert inductor_cache_dir(tmp_path) == tmp_path / "inductor"


@pytest.mark.parametrize("before", [None, "/somewhere/else"])
def test_the_cache_folder_holds_for_the_block_and_is_put_back(tmp_path, monkeypatch, before):
    if before is None:
        monkeypatch.delenv(INDUCTOR_CACHE_ENV, raising=False)
    else:
        monkeypatch.setenv(INDUCTOR_CACHE_ENV, before)
    folder = tmp_path / "cache" / "inductor"
    with pytest.raises(RuntimeError, match="compile failed"), inductor_cache(folder):
        assert os.environ[INDUCTOR_CACHE_ENV] == str(folder.resolve()) and folder.is_dir()
        raise RuntimeError("compile failed")
    assert os.environ.get(INDUCTOR_CACHE_ENV) == before
    with inductor_cache(None):  # no folder: nothing changes
        assert os.environ.get(INDUCTOR_CACHE_ENV) == before


def fake_compile() -> str:
    """What Inductor, Triton and autotuning do to the console while they compile."""
    import logging
    import sys
    import warnings

    warnings.warn("TensorFloat32 tensor cores are available but not enabled", UserWarning, stacklevel=1)
    logging.getLogger("torch._inductor.select_algorithm").warning("autotuning convolution: 12 choices")
    logging.getLogger("torch._dynamo.convert_frame").error("recompiling forward")
    print("AUTOTUNE convolution(1x32x128x160, 32x32x3x3)")
    sys.stderr.write("  triton_conv_1 0.0410 ms 100.0%\n")
    os.write(1, b"ptxas info: 0 bytes stack frame\n")
    os.write(2, b"ptxas warning: Registers are spilled\n")
    return "compiled"


def test_a_quiet_compile_says_nothing_on_the_console_and_everything_in_its_log(capfd, caplog):
    from harness.backends.compiling import quiet_compile

    lines: list[str] = []
    assert quiet_compile(fake_compile, lines) == "compiled"
    assert capfd.readouterr() == ("", "")
    assert "autotuning" not in caplog.text
    assert sorted(lines) == sorted([
        "UserWarning: TensorFloat32 tensor cores are available but not enabled", "autotuning convolution: 12 choices",
        "recompiling forward", "AUTOTUNE convolution(1x32x128x160, 32x32x3x3)", "  triton_conv_1 0.0410 ms 100.0%",
        "ptxas info: 0 bytes stack frame", "ptxas warning: Registers are spilled"])
    print("after")  # the console is back, at both levels
    os.write(2, b"after on fd 2\n")
    assert capfd.readouterr() == ("after\n", "after on fd 2\n")


def test_the_console_is_back_after_a_compile_that_fails(capfd):
    import sys

    from harness.backends.compiling import quiet_compile

    lines: list[str] = []

    def failing() -> None:
        print("lowering convolution")
        raise RuntimeError("InductorError: LoweringException")

    streams = (sys.stdout, sys.stderr)
    with pytest.raises(RuntimeError, match="LoweringException"):
        quiet_compile(failing, lines)
    assert lines == ["lowering convolution"] and (sys.stdout, sys.stderr) == streams
    os.write(1, b"back\n")
    assert capfd.readouterr().out == "back\n"


def test_a_long_compile_log_is_cut_for_the_record_and_counted():
    from harness.backends.compiling import log_excerpt

    lines = [f"AUTOTUNE block {i}" for i in range(25)]
    assert log_excerpt(lines, limit=20) == [*lines[:20], "... 5 more lines"]
    assert log_excerpt(lines[:3], limit=20) == lines[:3]


class InductorLikeError(Exception):
    """Like torch._inductor.exc.InductorError: the inner exception kept, raised ``from None``."""

    def __init__(self, inner: BaseException) -> None:
        self.inner_exception = inner
        super().__init__(f"{type(inner).__name__}: {inner}")


def interrupted_compile(how: str):
    import signal

    from harness.errors import Interrupted

    def compile_() -> None:
        print("AUTOTUNE convolution(...)")
        try:
            raise Interrupted(signal.SIGTERM)  # the harness's handler, mid-compile
        except Interrupted as interrupt:
            if how == "cause":
                raise RuntimeError("InductorError") from interrupt
            if how == "context":
                raise RuntimeError("InductorError")  # noqa: B904 - a wrapper that forgets "from"
            try:
                raise InductorLikeError(interrupt) from None
            except InductorLikeError as inner:
                raise RuntimeError("backend='inductor' raised") from inner
    return compile_


@pytest.mark.parametrize("how", ["cause", "context", "inner_exception"])
def test_an_interrupt_during_a_compile_is_the_harness_interrupt_not_the_wrapper(capfd, how):
    import sys

    from harness.backends.compiling import quiet_compile
    from harness.errors import Interrupted

    lines: list[str] = []
    streams = (sys.stdout, sys.stderr)
    with pytest.raises(Interrupted) as caught:
        quiet_compile(interrupted_compile(how), lines)
    assert caught.value.signum == 15 and str(caught.value) == "run | interrupted by SIGTERM."
    assert caught.value.__suppress_context__  # no "During handling ..." traceback of the wrapper
    assert (sys.stdout, sys.stderr) == streams and lines == ["AUTOTUNE convolution(...)"]
    assert capfd.readouterr() == ("", "")


def test_a_compile_failure_without_an_interrupt_stays_what_it_is():
    from harness.backends.compiling import interrupt_in, quiet_compile

    def failing() -> None:
        try:
            raise ValueError("no lowering for aten.foo")
        except ValueError as inner:
            raise InductorLikeError(inner) from None

    with pytest.raises(InductorLikeError, match="no lowering"):
        quiet_compile(failing, [])
    assert interrupt_in(RuntimeError("plain")) is None
    loop = RuntimeError("a")
    loop.__context__ = RuntimeError("b")
    loop.__context__.__context__ = loop  # a cycle ends the walk
    assert interrupt_in(loop) is None
