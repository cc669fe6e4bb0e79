"""Writes that never leave a half-written file and never replace an earlier report.

Every artifact and report goes through here: data is written to a temporary file in the target
folder, flushed and fsync'ed, then renamed over the target (atomic on POSIX).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from harness.errors import HarnessError, WriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would have given; mkstemp alone gives 0600


def cannot_write(where: Path, exc: OSError, problem: str = "cannot write here") -> WriteError:
    return WriteError(str(where), problem, observed=f"{type(exc).__name__}: {exc.strerror or exc}",
                      expected="a writable folder with free space",
                      fix="point the harness elsewhere (pytest: --harness-report-dir / --harness-cache-dir; python -m "
                      "harness: --report-dir / --cache-dir; or HARNESS_CACHE_DIR) or make the folder writable")


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be written there (then removed);
    raises ``WriteError`` saying how to fix it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise cannot_write(folder, exc) from None


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``. An unwritable place raises
    ``WriteError`` (nothing is left behind)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise cannot_write(path.parent, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise cannot_write(path.parent, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: object) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def utc_stamp(now: datetime | None = None) -> str:
    """``20261123T235959Z``: sortable, filesystem-safe UTC time."""
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


def new_run_dir(root: Path, stamp: str | None = None) -> Path:
    """Create and return a fresh ``root/<stamp>`` folder; never reuses an existing one.

    Two runs in the same second get ``<stamp>``, ``<stamp>-2``, ... (``mkdir`` without
    ``exist_ok`` is the atomic claim, so concurrent runs cannot share a folder).
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(root, exc, "cannot create the reports folder") from None
    stamp = stamp or utc_stamp()
    for attempt in range(1, 1000):
        candidate = root / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise cannot_write(root, exc, "cannot create a run folder in the reports folder") from None
        return candidate
    raise HarnessError(str(root), "no free report folder name", observed=stamp, expected="fewer than 1000 runs a second")
