"""glibc's allocator, set for tensors of tens to hundreds of MB on a CPU build of torch.

By default glibc serves every block over 32 MiB with a fresh ``mmap``, gives it back with
``munmap`` on free, and trims the top of its heap beyond 128 KiB. A model run on the CPU allocates
and frees such blocks all the time (MVSNet at the seed shape: 503 MB cost volumes, 126 MB feature
volumes in its 3D CNN), so each forward faults every page of them in again and the kernel zeroes
it. With the thresholds below, freed blocks stay in the heap and are reused, and between legs
(``Chain.release``) ``give_back`` returns what the leg freed, so holes do not pile up over a run.

Measured on the 2-core CPU machine (2026-12-03):
- the main job (``python -m harness run``, 13 seed-shape legs, warm artifact cache): 120 and 144 s
  at glibc's defaults (15 million minor page faults, 3.34-3.50 GB peak); 99 and 102 s with this
  setting (10 million, 3.61-3.73 GB). Keeping 1 GiB at the top instead of 256 MiB, or no
  ``give_back``, was no faster and peaked at up to 7.7 GB;
- the test suite under xdist: 274 s of pytest at glibc's defaults, 237 s with the thresholds set
  (warm clone; 34 against 11 million faults, 99 against 54 s of system time).
With a CUDA build of torch it is left off: on the H200 the main job took 100 and 104 s at glibc's
defaults and 105 and 115 s with it (its legs run on the GPU).

Set once per process by every front (``python -m harness``, the pytest plugin in each xdist worker
and in a plain pytest process). A user who sets glibc's own variables (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES``) keeps them; ``HARNESS_MALLOC=default`` leaves
glibc's defaults. Elsewhere than glibc (musl, macOS, Windows) nothing is changed.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
from collections.abc import Mapping

#: ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap (``mallopt`` takes an int: 2 GiB - 1 is its largest).
MMAP_THRESHOLD = 2**31 - 1
#: Free memory at the top of the heap kept for reuse before it is given back to the system: the
#: CLI's, which also gives the heap back between legs (main job 99-102 s and 3.6-3.7 GB, against
#: 108-120 s and 4.0-4.3 GB keeping 1 GiB) ...
TRIM_THRESHOLD = 2**28
#: ... and a pytest worker's, which runs test after test with no leg boundary to give back at
#: (the suite in a warm clone: 212 s of pytest keeping 1 GiB, 229 s keeping 256 MiB).
PYTEST_TRIM_THRESHOLD = 2**30
#: Set by the user: glibc reads them at start-up, the harness then leaves the allocator alone.
GLIBC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
OPT_OUT_ENV = "HARNESS_MALLOC"

_applied: str | None = None  # what keep_freed_blocks did, in words (None: not called yet)
_keeping = False  # the thresholds are set: give_back has free pages to return


def keep_freed_blocks(environ: Mapping[str, str] = os.environ, trim: int = TRIM_THRESHOLD) -> str:
    """Raise glibc's mmap and trim thresholds for this process (once); returns what was done, in
    words, for ``doctor`` and the tests."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = _apply(environ, trim)
    return _applied


def status() -> str:
    """What this process's front set, for ``doctor`` (which reports it and changes nothing)."""
    return _applied if _applied is not None else "glibc defaults (not set: no harness front started this process)"


def torch_build() -> str:
    """The installed torch's version, read from its metadata (importing torch costs seconds, and
    some commands never need it): CPU wheels carry the local tag ``+cpu``."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _apply(environ: Mapping[str, str], trim: int = TRIM_THRESHOLD) -> str:
    if environ.get(OPT_OUT_ENV, "").strip().lower() == "default":
        return f"glibc defaults ({OPT_OUT_ENV}=default)"
    mine = [name for name in GLIBC_ENV if environ.get(name)]
    if mine:
        return f"left as set by {', '.join(mine)}"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "unchanged (not glibc)"
    torch = torch_build()
    if not torch.endswith("+cpu"):
        return f"glibc defaults (torch {torch} is not a +cpu build: measured no gain beside a GPU)"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "unchanged (no mallopt)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mapped, trimmed = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1, mallopt(M_TRIM_THRESHOLD, trim) == 1
    if not (mapped and trimmed):
        return f"mallopt refused the {'mmap' if not mapped else 'trim'} threshold"
    global _keeping
    _keeping = True
    return f"blocks up to {MMAP_THRESHOLD >> 20} MiB reused from the heap, {trim >> 20} MiB kept at its top"


def give_back() -> None:
    """Return the heap's free pages to the system (glibc's ``malloc_trim``), when this process
    keeps freed blocks: the fronts call it between legs (``Chain.release``), so what one leg
    freed is reused within that leg and its holes do not pile up over a run of many legs."""
    if not _keeping:
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
