"""Content-addressed artifact cache shared by every builder (ONNX, simplified ONNX, engines).

An entry lives in ``<root>/<kind>/<key>/`` where ``key`` is the sha256 of a canonical JSON of
everything that changes the artifact. The entry holds the artifact file and ``meta.json``,
written last, which records the key fields and the artifact's sha256. An entry is used only if
``meta.json`` exists, names the same key and the file's hash matches; anything else (a build
killed mid-way, a truncated or edited file) is rebuilt with a warning. A per-key file lock makes
concurrent pytest-xdist workers build each artifact once: the first builds, the rest wait and hit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout

from harness.errors import CacheError
from harness.fileio import atomic_write_json, cannot_write

Status = Literal["hit", "miss", "rebuilt"]
DEFAULT_LOCK_TIMEOUT_S = 3600.0


def default_cache_dir() -> Path:
    """``$HARNESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/mvsnet-trt-harness``, else ``~/.cache/...``."""
    env = os.environ.get("HARNESS_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mvsnet-trt-harness"


def canonical_key(fields: Mapping[str, Any]) -> str:
    """sha256 of the fields as sorted, compact JSON (values must be JSON-serialisable)."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def source_digest(*files: str) -> str:
    """Hash of the harness source files ``files`` (paths under ``harness/``), so that a code
    change that alters an artifact also changes its cache key."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for rel in files:
        digest.update((root / rel).read_bytes())
    return digest.hexdigest()[:16]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """What a lookup returns: where the artifact is, how it was obtained, and its metadata."""

    path: Path
    key: str
    status: Status
    seconds: float  # build time for miss/rebuilt, lookup time for hit
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return str(self.meta.get("sha256", ""))


class ArtifactCache:
    """``get_or_build(kind, fields, filename, build)`` is the whole interface.

    ``build(path)`` must write the artifact to ``path`` and may return extra metadata (a dict),
    which is stored in ``meta.json`` and handed back on every later hit.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.lock_timeout_s = lock_timeout_s

    def entry_dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:32]

    def _valid(self, folder: Path, filename: str, key: str) -> tuple[dict[str, Any] | None, str]:
        meta_path, artifact = folder / "meta.json", folder / filename
        if not folder.exists():
            return None, "absent"
        if not meta_path.is_file():
            return None, "no meta.json (a build did not finish)"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return None, f"unreadable meta.json ({type(exc).__name__})"
        if meta.get("key") != key:
            return None, "meta.json names another key"
        if not artifact.is_file():
            return None, f"{filename} missing"
        actual = sha256_file(artifact)
        if actual != meta.get("sha256"):
            return None, f"{filename} hash {actual[:12]} differs from the recorded {str(meta.get('sha256'))[:12]} (truncated or modified)"
        return meta, "ok"

    def get_or_build(
        self,
        kind: str,
        fields: Mapping[str, Any],
        filename: str,
        build: Callable[[Path], Mapping[str, Any] | None],
    ) -> CacheEntry:
        key = canonical_key(fields)
        folder = self.entry_dir(kind, key)
        started = time.perf_counter()
        meta, _ = self._valid(folder, filename, key)
        if meta is not None:
            return CacheEntry(folder / filename, key, "hit", time.perf_counter() - started, meta)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise cannot_write(self.root, exc) from None
        lock = FileLock(str(folder) + ".lock")
        try:
            with lock.acquire(timeout=self.lock_timeout_s):
                # another worker may have finished the build while we waited
                meta, reason = self._valid(folder, filename, key)
                if meta is not None:
                    return CacheEntry(folder / filename, key, "hit", time.perf_counter() - started, meta)
                status: Status = "miss"
                if reason != "absent":
                    status = "rebuilt"
                    warnings.warn(f"artifact cache: {kind} entry {key[:12]} is unusable ({reason}); rebuilding", stacklevel=2)
                    shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True, exist_ok=True)
                build_started = time.perf_counter()
                extra = build(folder / filename) or {}
                artifact = folder / filename
                if not artifact.is_file():
                    raise CacheError(kind, "builder wrote no artifact", observed=str(artifact), expected=f"a file named {filename}",
                                     fix="this is a harness bug: report it with the traceback")
                meta = {
                    "key": key,
                    "kind": kind,
                    "fields": dict(fields),
                    "sha256": sha256_file(artifact),
                    "bytes": artifact.stat().st_size,
                    "build_seconds": round(time.perf_counter() - build_started, 4),
                    "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    **dict(extra),
                }
                atomic_write_json(folder / "meta.json", meta)
                return CacheEntry(artifact, key, status, time.perf_counter() - build_started, meta)
        except PermissionError as exc:  # the lock file or the entry folder (read-only cache)
            raise cannot_write(self.root, exc) from None
        except Timeout:
            raise CacheError(kind, "timed out waiting for another process to build the entry", observed=f"{self.lock_timeout_s:.0f} s",
                             expected="the other build to finish", fix=f"delete {folder}.lock if no harness process is running") from None
