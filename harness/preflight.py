"""Checks made once, at the start of a session (pytest) or a command (``python -m harness``):
the weights load, the scene reads at every requested case, the device exists, the report and
cache folders are writable, and the case fits in this machine's memory. A problem stops the
session with one message naming the front's own flag, instead of one failure per test.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from harness.chain import Chain, ChainConfig
from harness.data.cases import get_case
from harness.errors import BackendUnavailable, HarnessError, InvalidArgument, PreflightError
from harness.fileio import check_writable
from harness.options import PYTEST, flag

#: Peak resident memory measured for a case on the CPU (2-core CI machine, torch 2.13 CPU,
#: onnxruntime 1.32, `python -m harness run`), in GiB: the DTU shape (5 views 1184x1600, D=192)
#: peaked at 17.8 GB for 3 legs (issue 12). Cases not listed fit any machine the harness targets.
CPU_PEAK_GIB = {"dtu": 17.8 / 1.073741824}
MEMORY_HEADROOM = 1.1  # the peak plus 10 %


@dataclass(frozen=True)
class Flags:
    """How one front spells the options the checks point to."""

    weights: str
    scene: str
    device: str
    cache_dir: str
    report_dir: str
    cases: str

    def translate(self, text: str) -> str:
        """``text`` with the CLI's flag names (which the data and model layers use in their
        fixes) spelled as this front spells them."""
        for name in (f.name for f in fields(self)):
            cli, own = getattr(CLI_FLAGS, name), getattr(self, name).split(" ")[0]
            text = re.sub(rf"(?<![\w-]){re.escape(cli)}(?![\w-])", own, text)
        return text


def front_flags(front: str) -> Flags:
    """``Flags`` as ``front`` spells them (harness.options): each field is the option of that name."""
    return Flags(**{f.name: flag(f.name.replace("_", "-"), front) for f in fields(Flags)})


PYTEST_FLAGS = replace(front_flags(PYTEST),
                       report_dir=f"{flag('report-dir', PYTEST)} (or {flag('no-report', PYTEST)})")
CLI_FLAGS = front_flags("run")


def available_memory_gib() -> float | None:
    """``MemAvailable`` from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _stop(problem: str, exc: HarnessError | str, fix: str, flags: Flags, own_fix: bool = False) -> PreflightError:
    """One message: the underlying error as it is (subject, problem, observation, expectation)
    with its own fix when it has one (unless ``own_fix``), else the check's; flags spelled as
    this front spells them."""
    if isinstance(exc, HarnessError):
        use_inner = exc.fix and not own_fix
        inner = flags.translate(exc.fix or "")
        flag = fix.split(" ")[1] if fix.startswith("pass ") else ""
        if use_inner and flag and flag not in inner:  # the inner fix is specific; the flag still has to be named
            inner = f"{inner}; {fix}"
        return PreflightError(exc.subject, exc.problem if use_inner else f"{problem}: {exc.problem}", observed=exc.observed,
                              expected=exc.expected, fix=inner if use_inner else fix)
    return PreflightError("session start", problem, observed=exc, expected=None, fix=fix)


def preflight(config: ChainConfig, cases: Iterable[str], report_dir: Path | None, flags: Flags,
              memory_gib: float | None = None) -> Chain:
    """Run every start-of-session check and return the ready ``Chain`` (model loaded, views read),
    so the session reuses it. Raises ``PreflightError`` with the first problem and its fix."""
    try:
        chain = Chain(config)
    except (BackendUnavailable, InvalidArgument) as exc:
        raise _stop("the device is not usable", exc, f"pass {flags.device} auto, cpu or cuda[:N] for a GPU that "
                    "exists here", flags) from None
    try:
        chain.model  # noqa: B018 - loads and checks the checkpoint
    except HarnessError as exc:
        raise _stop("the weights do not load", exc, f"pass {flags.weights} with an MVSNet_pytorch checkpoint, "
                    "or leave it out for the bundled weights", flags) from None
    names = tuple(cases)
    for name in names:
        try:
            case = get_case(name)
        except InvalidArgument as exc:
            raise _stop("unknown case", exc, f"pass {flags.cases} with names from small, seed, dtu", flags) from None
        memory = memory_gib if memory_gib is not None else available_memory_gib()
        if config.scene is None:  # the bundled scene is rendered at large cases: check memory first
            _check_memory(case.name, chain, flags, memory)
        try:
            chain.views(case.name)
        except HarnessError as exc:
            raise _stop(f"the scene does not read at case {case.name}", exc,
                        f"pass {flags.scene} with a DTU-format folder (images/, cams/, pair.txt), or leave it out "
                        "for the bundled scene", flags) from None
        if config.scene is not None:  # a user's scene: its own problems first, then whether the case fits
            _check_memory(case.name, chain, flags, memory)
    try:
        check_writable(chain.cache.root)
    except HarnessError as exc:
        raise _stop("the artifact cache is not writable", exc,
                    f"pass {flags.cache_dir} (or set HARNESS_CACHE_DIR) to a writable folder", flags,
                    own_fix=True) from None
    if report_dir is not None:
        try:
            check_writable(report_dir)
        except HarnessError as exc:
            raise _stop("the reports folder is not writable", exc, f"pass {flags.report_dir} with a writable "
                        "folder", flags, own_fix=True) from None
    return chain


def _check_memory(case: str, chain: Chain, flags: Flags, available: float | None) -> None:
    peak = CPU_PEAK_GIB.get(case)
    if peak is None or chain.device.type != "cpu" or available is None:
        return
    needed = peak * MEMORY_HEADROOM
    if available < needed:
        raise _stop(f"case {case} does not fit in this machine's memory on the CPU",
                    f"{available:.1f} GiB available, {needed:.1f} GiB needed (measured peak {peak:.1f} GiB)",
                    f"run {case} on a GPU machine ({flags.device} cuda), or pick a smaller case with {flags.cases}",
                    flags)
