"""glibc's allocator, set for tensors of tens to hundreds of MB.

By default glibc serves every block over 32 MiB with a fresh ``mmap`` and gives it back with
``munmap`` on free, and trims the top of its heap beyond 128 KiB. A model run on the CPU allocates
and frees such blocks all the time (MVSNet at the seed shape: a 503 MB cost volume per view, its
3D CNN's 126 MB feature volumes), so every run faults each page of them in again and the kernel
zeroes it: on the 2-core CI machine 34 million minor page faults, 99 s of system time in a 274 s
test run. With the thresholds below the freed blocks stay in the heap and are reused: 11 million
faults, 54 s of system time, 237 s (same machine, same tests, warm caches).

What it costs: a process keeps up to ``TRIM_THRESHOLD`` of freed memory at the top of its heap,
and blocks freed below the top stay resident until reused (peak system memory of that test run
10.9 GB, against 11.9 GB with no trimming at all). Blocks over ``MMAP_THRESHOLD`` (2 GiB: the
largest value ``mallopt`` takes) are still mapped and unmapped as before.

Set once per process by every front (``python -m harness``, the pytest plugin in each xdist worker
and in a plain pytest process). A user who sets glibc's own variables (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES``) keeps them; ``HARNESS_MALLOC=default`` leaves
glibc's defaults. Elsewhere than glibc (musl, macOS, Windows) nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

#: ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap (``mallopt`` takes an int: 2 GiB - 1 is its largest).
MMAP_THRESHOLD = 2**31 - 1
#: Free memory at the top of the heap kept for reuse before it is given back to the system.
TRIM_THRESHOLD = 2**30
#: Set by the user: glibc reads them at start-up, the harness then leaves the allocator alone.
GLIBC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
OPT_OUT_ENV = "HARNESS_MALLOC"

_applied: str | None = None


def keep_freed_blocks(environ: Mapping[str, str] = os.environ) -> str:
    """Raise glibc's mmap and trim thresholds for this process (once); returns what was done, in
    words, for ``doctor`` and the tests."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = _apply(environ)
    return _applied


def _apply(environ: Mapping[str, str]) -> str:
    if environ.get(OPT_OUT_ENV, "").strip().lower() == "default":
        return f"glibc defaults ({OPT_OUT_ENV}=default)"
    mine = [name for name in GLIBC_ENV if environ.get(name)]
    if mine:
        return f"left as set by {', '.join(mine)}"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "unchanged (not glibc)"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "unchanged (no mallopt)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mapped, trimmed = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1, mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not (mapped and trimmed):
        return f"mallopt refused the {'mmap' if not mapped else 'trim'} threshold"
    return f"blocks up to {MMAP_THRESHOLD >> 20} MiB reused from the heap, {TRIM_THRESHOLD >> 20} MiB kept at its top"
