"""Golden outputs: a runtime's outputs for one graph variant stored once, compared on later runs.

Cross-runtime gates (torch vs ONNX Runtime) must allow the two runtimes' rounding differences;
a bug smaller than that (a bias off by 1 %, one layer's weights stored through FP16) passes them.
ONNX Runtime on the CPU against its own stored outputs for the same graph variant and inputs
differs only by thread scheduling (measured 2.3e-5 depth steps between 1 and 2 intra-op threads,
small case), so it sees those bugs. Model-neutral: outputs are a dict of tensors by name.

Layout of a golden directory: ``<key>.npz`` (one array per output, no pickles) and ``<key>.json``
(what was baselined: graph sha256, runtime and version, inputs digest, UTC time). The key names
the graph variant, e.g. ``small-precomputed-torchscript-simplified-fp32``. Re-baseline with
``python -m harness mutate --write-golden DIR`` after an intended numerical change.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.compare import OutputDiff, compare
from harness.errors import DataFormatError, MissingFile
from harness.fileio import atomic_write_bytes, atomic_write_json


def golden_key(case: str, workaround: str, exporter: str, variant: str, precision: str) -> str:
    """The name of one graph variant's baseline, e.g. ``small-precomputed-torchscript-simplified-fp32``."""
    return f"{case}-{workaround}-{exporter}-{variant}-{precision}"


def feed_digest(feed: Mapping[str, torch.Tensor]) -> str:
    """sha256 (16 hex digits) over the input names, shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(feed):
        tensor = feed[name].detach().cpu().contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def write_golden(directory: str | Path, key: str, outputs: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Store ``outputs`` under ``key`` (atomically; an earlier baseline of the key is replaced)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {name: t.detach().cpu().numpy() for name, t in outputs.items()}
    np.savez(buffer, **arrays)
    path = atomic_write_bytes(directory / f"{key}.npz", buffer.getvalue())
    atomic_write_json(directory / f"{key}.json", {"key": key, "outputs": sorted(outputs), **meta})
    return path


def load_golden(directory: str | Path, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """``(outputs, meta)`` stored under ``key``, or None when the directory has no such baseline."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingFile(str(directory), "golden directory not found", observed="no such directory",
                          expected="a directory of golden baselines", fix=f"run: python -m harness mutate --write-golden {directory}")
    data, meta = directory / f"{key}.npz", directory / f"{key}.json"
    if not data.is_file() or not meta.is_file():
        return None
    try:
        with np.load(data, allow_pickle=False) as arrays:
            outputs = {name: torch.from_numpy(np.array(arrays[name])) for name in arrays.files}
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise DataFormatError(str(data), "golden baseline unreadable", observed=f"{type(exc).__name__}: {exc}",
                              expected="an .npz of arrays and its .json", fix=f"re-baseline: python -m harness mutate --write-golden {directory}") from None
    return outputs, info


@dataclass(frozen=True)
class GoldenCheck:
    """Result of one golden comparison; ``skipped`` says why nothing was compared."""

    key: str
    diffs: Mapping[str, OutputDiff]
    skipped: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.skipped) or all(self.diffs.values())


def check_golden(directory: str | Path, key: str, outputs: Mapping[str, torch.Tensor],
                 tolerance: Mapping[str, Mapping[str, float]], feed: Mapping[str, torch.Tensor],
                 runtime: str, depth_values: torch.Tensor | None = None) -> GoldenCheck:
    """Compare ``outputs`` with the baseline stored under ``key``. Skipped (with the reason) when
    there is no baseline, or it was taken on other inputs or another runtime version: those
    differences are not bugs, and the fix is a re-baseline."""
    found = load_golden(directory, key)
    if found is None:
        return GoldenCheck(key, {}, f"no golden baseline {key} in {directory} (python -m harness mutate --write-golden {directory})")
    golden, meta = found
    if meta.get("feed") != feed_digest(feed):
        return GoldenCheck(key, {}, f"golden {key} was taken on other inputs (re-baseline)")
    if meta.get("runtime") != runtime:
        return GoldenCheck(key, {}, f"golden {key} was taken with {meta.get('runtime')}, this is {runtime} (re-baseline)")
    return GoldenCheck(key, compare(golden, outputs, tolerance, depth_values=depth_values))
