"""Several GPUs of one host: one pytest-xdist worker per GPU, and the merged cross-GPU table.

How the plugin uses it (the plugin owns the option; this module holds no pytest code):

- ``--harness-gpus all|0,1,...`` (default: off). The controller reads it with ``parse_gpus(text,
  torch.cuda.device_count())`` (NVML: no CUDA init) and ``check_worker_count``: ``-n`` must equal
  the number of GPUs. ``--dist each`` runs every test on every GPU; ``--dist load`` spreads them.
- The controller hands the list to its workers (xdist's ``pytest_configure_node``:
  ``node.workerinput["harness_gpus"]``); ``pytest_configure`` of a worker (``config.workerinput
  ["workerid"]``; ``"master"`` without xdist) calls ``pin_worker(worker_id, gpus)`` before anything
  initialises CUDA: the worker's GPU becomes ``cuda:0``, so ``chain.resolve_device`` is unchanged.
  A worker must not count GPUs first: without NVML, ``device_count()`` initialises the driver,
  which then ignores the variable (and ``torch.cuda.is_initialized()`` cannot see that).
- Rows carry ``physical_gpu()`` next to the GPU name: ``merge_by_gpu`` has a row per GPU even on a
  host of identical GPUs, and ``spread`` says how far they disagree.
- The artifact cache stays shared: per-key file locks make workers build each artifact once.
- The host's CPU cores are shared too: ``cpu_share()`` gives each of N xdist workers 1/N of them
  (torch's intra-op pool and ONNX Runtime's CPU sessions), instead of N pools of every core each
  spinning against the others. ``HARNESS_CPU_THREADS`` sets the share by hand.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from harness.errors import CudaAlreadyInitialised, InvalidArgument

PHYSICAL_GPU_ENV = "HARNESS_PHYSICAL_GPU"  # the worker's GPU as the host numbers it
CPU_THREADS_ENV = "HARNESS_CPU_THREADS"  # threads one process may use (torch, ONNX Runtime CPU)
_XDIST_COUNT_ENV = "PYTEST_XDIST_WORKER_COUNT"  # set by pytest-xdist in each worker
ROW_FIELD = "physical_gpu"  # the same index in every timing/parity row
_FLAG = "--harness-gpus"
_WORKER = re.compile(r"^gw(\d+)$")


def parse_gpus(text: str, available: int) -> tuple[int, ...]:
    """``all`` -> ``(0, ..., available-1)``; ``0,1,3`` -> ``(0, 1, 3)``. Indices count the GPUs this
    process sees (after any ``CUDA_VISIBLE_DEVICES`` it inherited)."""
    if text.strip().lower() == "all":
        if available <= 0:
            raise InvalidArgument(_FLAG, "no CUDA device", observed="'all' with 0 GPUs visible", expected="a machine with a CUDA GPU",
                                  fix=f"run without {_FLAG}, or on a GPU machine")
        return tuple(range(available))
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    if not tokens:
        raise InvalidArgument(_FLAG, "empty list", observed=repr(text), expected="all, or a comma list of GPU indices such as 0,1",
                              fix=f"pass {_FLAG} all")
    gpus: list[int] = []
    for token in tokens:
        if not re.fullmatch(r"-?\d+", token):
            raise InvalidArgument(_FLAG, "not a GPU index", observed=repr(token), expected="all, or integers such as 0,1,3", fix=f"pass {_FLAG} all")
        index = int(token)
        if not 0 <= index < available:
            visible = f"0..{available - 1}: {available} GPU(s) visible" if available else "a GPU: no CUDA device"
            raise InvalidArgument(_FLAG, "GPU index out of range", observed=index, expected=visible,
                                  fix=f"pass {_FLAG} all, or check CUDA_VISIBLE_DEVICES")
        if index in gpus:
            raise InvalidArgument(_FLAG, "duplicate GPU index", observed=f"{index} in {text.strip()}",
                                  expected="each GPU once (one worker per GPU)", fix="list each GPU once")
        gpus.append(index)
    return tuple(gpus)


def worker_index(worker_id: str) -> int:
    """``gw0`` -> 0, ``gw7`` -> 7; ``master`` (no xdist) -> 0."""
    if worker_id == "master":
        return 0
    match = _WORKER.match(worker_id)
    if not match:
        raise InvalidArgument("worker id", "not a pytest-xdist worker id", observed=repr(worker_id), expected="gw0, gw1, ... or master")
    return int(match.group(1))


def check_worker_count(workers: int, gpus: tuple[int, ...]) -> None:
    """The controller's check: exactly one worker per GPU."""
    if workers != len(gpus):
        raise InvalidArgument(_FLAG, "worker count differs from GPU count",
                              observed=f"{workers} worker(s) for {len(gpus)} GPU(s) {list(gpus)}",
                              expected="one worker per GPU", fix=f"run with -n {len(gpus)}")


def gpu_for_worker(worker_id: str, gpus: tuple[int, ...]) -> int:
    """Worker N owns ``gpus[N]``."""
    index = worker_index(worker_id)
    if index >= len(gpus):
        raise InvalidArgument(_FLAG, "more workers than GPUs", observed=f"worker {worker_id} with {len(gpus)} GPU(s) {list(gpus)}",
                              expected="each worker owns one GPU", fix=f"run with -n {len(gpus)}")
    return gpus[index]


def pin_worker(worker_id: str, gpus: tuple[int, ...], environ: MutableMapping[str, str] = os.environ) -> int:
    """Make the worker's GPU the only one it sees (``cuda:0``) and return its physical index.

    Changes only ``environ``: ``CUDA_VISIBLE_DEVICES`` and ``HARNESS_PHYSICAL_GPU``. An inherited
    ``CUDA_VISIBLE_DEVICES=2,3`` is honoured: index 1 is physical GPU 3. Call it once per process.
    """
    torch = sys.modules.get("torch")  # not imported: nothing has initialised CUDA through torch
    if torch is not None and torch.cuda.is_initialized():
        raise CudaAlreadyInitialised(worker_id, "CUDA already initialised before pinning the worker to its GPU",
                                     observed="torch.cuda.is_initialized() is True", expected="pin_worker before any CUDA call",
                                     fix="call harness.gpus.pin_worker first in pytest_configure")
    relative = gpu_for_worker(worker_id, gpus)
    inherited = environ.get("CUDA_VISIBLE_DEVICES")
    entries = None if inherited is None else [e.strip() for e in inherited.split(",") if e.strip()]
    if entries is not None and (relative >= len(entries) or not entries[relative].isdigit()):
        raise InvalidArgument("CUDA_VISIBLE_DEVICES", "cannot map GPU index to a physical GPU",
                              observed=f"index {relative} in {inherited!r}", expected="integer indices covering every listed GPU",
                              fix="unset CUDA_VISIBLE_DEVICES or list integer GPU indices")
    physical = relative if entries is None else int(entries[relative])
    environ["CUDA_VISIBLE_DEVICES"] = environ[PHYSICAL_GPU_ENV] = str(physical)
    return physical


def physical_gpu(environ: Mapping[str, str] = os.environ) -> int | None:
    """The pinned worker's physical GPU index (for ``row[ROW_FIELD]``); None when not pinned."""
    value = environ.get(PHYSICAL_GPU_ENV)
    return int(value) if value else None


def _medians(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int | None], dict[tuple[str, str], float]]:
    """{(gpu name, physical index): {(case, backend): median over that GPU's rows of median_ms}}."""
    samples: dict[tuple[str, int | None], dict[tuple[str, str], list[float]]] = {}
    for row in rows:
        if row.get("median_ms") is None:  # skipped, errored or a parity row without timing
            continue
        gpu = (str(row.get("gpu") or "cpu"), row.get(ROW_FIELD))
        backend = str(row.get("backend") or row.get("candidate"))
        samples.setdefault(gpu, {}).setdefault((str(row["case"]), backend), []).append(float(row["median_ms"]))
    return {gpu: {key: statistics.median(v) for key, v in cells.items()} for gpu, cells in samples.items()}


def merge_by_gpu(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per GPU (sorted by physical index): ``gpu``, ``physical_gpu``, then one column
    ``"<case> <backend> median ms"`` per (case, backend), the median of that GPU's rows."""
    order = sorted(_medians(rows).items(), key=lambda kv: (kv[0][1] is None, kv[0][1] or 0, kv[0][0]))
    return [{"gpu": name, ROW_FIELD: index, **{f"{c} {b} median ms": ms for (c, b), ms in sorted(cells.items())}}
            for (name, index), cells in order]


def spread(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], float]:
    """Per (case, backend): (max - min) / median of the per-GPU medians; 0.0 on one GPU."""
    across: dict[tuple[str, str], list[float]] = {}
    for cells in _medians(rows).values():
        for key, value in cells.items():
            across.setdefault(key, []).append(value)
    mids = {key: statistics.median(values) for key, values in across.items()}
    return {key: (max(v) - min(v)) / mids[key] if mids[key] > 0 else (0.0 if max(v) == min(v) else math.inf)
            for key, v in sorted(across.items())}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cpu_share(environ: Mapping[str, str] = os.environ, cores: int | None = None) -> int | None:
    """The CPU threads one process of the run may use: ``HARNESS_CPU_THREADS`` when set, else in
    a pytest-xdist worker the usable cores divided among the workers (at least 1); None outside
    xdist (each library's own default: every core). ``cores`` overrides the usable-core count."""
    text = environ.get(CPU_THREADS_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise InvalidArgument(CPU_THREADS_ENV, "not a positive whole number", observed=repr(text),
                                  expected="threads per process, e.g. 4", fix=f"unset {CPU_THREADS_ENV} or set it to 1 or more")
        return int(text)
    workers = environ.get(_XDIST_COUNT_ENV, "").strip()
    if not workers.isdigit() or int(workers) < 1:
        return None
    return max(1, (cores if cores is not None else usable_cores()) // int(workers))
