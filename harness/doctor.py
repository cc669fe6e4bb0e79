"""``python -m harness doctor``: one screen saying what this machine can run, and why not.

Probes only: no export, no engine build, nothing written. A broken optional install (an import
that raises anything) is reported as that library's ``error``, never raised.

Facts (the ``--json`` keys): ``python``, ``platform``, ``nvidia_smi`` {found, driver, cuda, gpus,
error}, ``gpus`` (torch's: [{index, name, compute_capability, memory_gib}]), ``torch`` {version,
build ("cuda"/"cpu"), cuda, cudnn, cuda_available, cuda_error}, ``onnx``/``onnxsim``/``pycuda``
{version, error}, ``onnxruntime`` {version, error, providers}, ``tensorrt`` {flavour, version,
error, compute_capability, engine_runs_here, blocker}, ``cache`` {path, exists, size_mib},
``allocator`` (what ``harness.hostmem`` set for glibc's malloc in this process),
``backends`` {name: {available, reason}} for each of ``BACKENDS`` (runtime families, kept for
scripts: ``--require`` still takes them, the screen no longer shows them), ``registry`` {name:
{consumes, precision, candidate, available, reason}} for every backend the registry declares (the
one vocabulary of run, bench, check, doctor and pytest), ``required`` (the --require names) and
``unavailable_required`` {name: reason}.

Exit status: 0; 1 when a ``--require``d backend is unavailable; 2 for an unknown name in it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from harness.hostmem import status as allocator_status
from harness.report.machine import gpu_info, run_command

#: Runtime families probed directly (the JSON's ``backends``); --require takes them as deprecated
#: aliases of the registry's names, which are what every other option takes.
BACKENDS = ("torch-cpu", "torch-cuda", "ort-cpu", "ort-cuda", "trt")
NO_CUDA = "no CUDA device"


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _library(module: str) -> tuple[Any, dict[str, Any]]:
    """(module or None, {version, error}); a missing or broken install is an ``error``, not raised."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        return None, {"version": None, "error": f"{module} not importable ({_error(exc)})"}
    except Exception as exc:  # noqa: BLE001 - a broken optional install is reported, never raised
        return None, {"version": None, "error": f"{module} import failed ({_error(exc)})"}
    version = getattr(mod, "__version__", None)
    if not isinstance(version, str):
        try:
            version = importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            version = None
    return mod, {"version": version, "error": None}


def nvidia_smi() -> dict[str, Any]:
    """The driver's view: {found, driver, cuda (the newest CUDA the driver supports), gpus, error}."""
    if shutil.which("nvidia-smi") is None:
        return {"found": False, "driver": None, "cuda": None, "gpus": [], "error": "nvidia-smi not found"}
    rows = run_command(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if rows is None:
        return {"found": True, "driver": None, "cuda": None, "gpus": [], "error": "nvidia-smi failed (driver not loaded?)"}
    fields = [[f.strip() for f in line.split(",")] for line in rows.splitlines() if line.strip()]
    header = re.search(r"CUDA Version:\s*([\d.]+)", run_command(["nvidia-smi"]) or "")
    return {"found": True, "driver": fields[0][-1] if fields else None, "cuda": header.group(1) if header else None,
            "gpus": [f[0] for f in fields], "error": None}


def torch_gpus() -> list[dict[str, Any]]:
    """The GPUs torch sees (index, name, compute capability, memory), as in every run record."""
    keys = ("index", "name", "compute_capability", "memory_gib")
    return [{k: gpu[k] for k in keys} for gpu in gpu_info()]


def cache_facts(root: Path) -> dict[str, Any]:
    size = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                size += (Path(folder) / name).stat().st_size
            except OSError:
                continue  # a file removed while walking (another run's build finishing)
    return {"path": str(root), "exists": root.is_dir(), "size_mib": round(size / 2**20, 1)}


def _cuda_reason(facts: dict[str, Any]) -> str:
    """``no CUDA device`` with why: a CPU build of torch, no driver, or a GPU torch cannot use."""
    smi, build = facts["nvidia_smi"], facts["torch"]
    if build["cuda"] is None:
        seen = f"nvidia-smi sees {', '.join(smi['gpus'])}: install a CUDA build of torch" if smi["gpus"] else smi["error"] or "no GPU"
        return f"{NO_CUDA} (torch {build['version']} is a CPU build; {seen})"
    if build["cuda_error"]:
        return f"{NO_CUDA} ({build['cuda_error']})"
    return (f"{NO_CUDA} (torch built for CUDA {build['cuda']} sees none; "
            f"driver {smi['driver'] or 'absent'}, supports CUDA {smi['cuda'] or '?'})")


def _trt_facts(no_cuda: str | None) -> dict[str, Any]:
    from harness.backends import trt_api
    from harness.errors import BackendUnavailable

    found: dict[str, Any] = {"flavour": None, "version": None, "error": None, "compute_capability": None,
                             "engine_runs_here": None, "blocker": None}
    try:
        info = trt_api.bind()
    except BackendUnavailable as exc:
        found["error"], found["blocker"] = f"{exc.missing} ({exc.fix})", exc.missing
        return found
    except Exception as exc:  # noqa: BLE001 - a bad $HARNESS_TRT_FLAVOUR or a broken install: report it
        found["error"] = found["blocker"] = f"tensorrt not usable ({_error(exc)})"
        return found
    found.update(flavour=info.flavour, version=info.version)
    try:
        if no_cuda:
            found["blocker"] = no_cuda
        else:
            device = trt_api.require_cuda("trt")
            found["compute_capability"] = trt_api.compute_capability(device)
            found["blocker"] = trt_api.runtime_blocker(info, device)
    except BackendUnavailable as exc:
        found["blocker"] = exc.missing
    except Exception as exc:  # noqa: BLE001 - a GPU query that fails is a reason, not a crash
        found["blocker"] = f"GPU query failed ({_error(exc)})"
    found["engine_runs_here"] = found["blocker"] is None
    return found


def probe(cache_dir: Path | None = None) -> dict[str, Any]:
    """Every fact of the module docstring (without ``required``/``unavailable_required``)."""
    from harness.convert.cache import default_cache_dir

    facts: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                             "nvidia_smi": nvidia_smi(), "gpus": []}
    cuda_error = None
    try:
        facts["gpus"] = torch_gpus()
    except Exception as exc:  # noqa: BLE001 - a CUDA runtime that fails to initialise is a reason
        cuda_error = f"CUDA initialisation failed ({_error(exc)})"
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception as exc:  # noqa: BLE001 - a cuDNN that fails to load is reported
        cudnn = f"error: {_error(exc)}"
    cuda = bool(facts["gpus"])
    facts["torch"] = {"version": torch.__version__, "build": "cuda" if torch.version.cuda else "cpu",
                      "cuda": torch.version.cuda, "cudnn": cudnn, "cuda_available": cuda, "cuda_error": cuda_error}
    for name in ("onnx", "onnxsim", "pycuda"):
        facts[name] = _library(name)[1]
    ort, facts["onnxruntime"] = _library("onnxruntime")
    providers: list[str] = []
    if ort is not None:
        try:
            providers = [str(p) for p in ort.get_available_providers()]
        except Exception as exc:  # noqa: BLE001 - reported with the version
            facts["onnxruntime"]["error"] = f"get_available_providers failed ({_error(exc)})"
    facts["onnxruntime"]["providers"] = providers
    no_cuda = None if cuda else _cuda_reason(facts)
    facts["tensorrt"] = _trt_facts(no_cuda)
    facts["cache"] = cache_facts(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    facts["allocator"] = allocator_status()  # what the front set for this process (harness.hostmem)
    ort_error = facts["onnxruntime"]["error"]

    def ort_reason(provider: str) -> str | None:
        if ort_error:
            return str(ort_error)
        if provider not in providers:
            fix = " (pip install onnxruntime-gpu instead of onnxruntime)" if provider.startswith("CUDA") else ""
            return f"{provider} missing from onnxruntime {facts['onnxruntime']['version']}{fix}"
        return None

    reasons: dict[str, str | None] = {
        "torch-cpu": None,
        "torch-cuda": no_cuda,
        "ort-cpu": ort_reason("CPUExecutionProvider"),
        "ort-cuda": no_cuda or ort_reason("CUDAExecutionProvider"),
        "trt": facts["tensorrt"]["blocker"],
    }
    facts["backends"] = {name: {"available": reasons[name] is None, "reason": reasons[name]} for name in BACKENDS}
    facts["registry"] = registry_facts()
    for backend in facts["registry"].values():  # the registry's bare "no CUDA device": say why, as probed
        if no_cuda and backend["reason"] == NO_CUDA:
            backend["reason"] = no_cuda
    return facts


def registry_facts() -> dict[str, dict[str, Any]]:
    """Every backend the registry declares, with its own availability check: ``{name: {consumes,
    precision, candidate, available, reason}}``. Candidates are what --backends of run, bench and
    pytest take; the others are torch references (bench and --require take them too)."""
    from harness.backends import registry

    found: dict[str, dict[str, Any]] = {}
    for name, spec in registry.specs().items():
        try:
            reason = spec.available()
        except Exception as exc:  # noqa: BLE001 - a check that breaks is a reason, not a crash
            reason = f"availability check failed ({_error(exc)})"
        found[name] = {"consumes": spec.consumes, "precision": spec.precision, "candidate": spec.candidate,
                       "available": reason is None, "reason": reason}
    return found


def render(facts: dict[str, Any]) -> str:
    smi, tv, ort, trt, cache = facts["nvidia_smi"], facts["torch"], facts["onnxruntime"], facts["tensorrt"], facts["cache"]
    gpus = "; ".join(f"{g['name']} (sm {g['compute_capability']}, {g['memory_gib']} GiB)" for g in facts["gpus"])
    if not gpus:
        gpus = "none visible to torch" + (f" (nvidia-smi sees {', '.join(smi['gpus'])})" if smi["gpus"] else "")
    if trt["flavour"]:
        runs = "engines run here" if trt["engine_runs_here"] else f"engines cannot run here: {trt['blocker']}"
        trt_line = f"{trt['flavour']} {trt['version']}; {runs}"
    else:
        trt_line = str(trt["error"])
    lines = [
        f"python       {facts['python']} on {facts['platform']}",
        f"GPU          {gpus}",
        f"driver       {smi['driver'] or smi['error']}" + (f" (supports CUDA {smi['cuda']})" if smi["cuda"] else ""),
        f"CUDA, cuDNN  torch built for CUDA {tv['cuda'] or 'none'}, cuDNN {tv['cudnn'] or 'none'}",
        f"torch        {tv['version']} ({tv['build'].upper()} build)",
        *(f"{name:<12} {facts[name]['error'] or facts[name]['version']}" for name in ("onnx", "onnxsim", "pycuda")),
        f"onnxruntime  {ort['error'] or ort['version']}; providers: {', '.join(ort['providers']) or 'none'}",
        f"TensorRT     {trt_line}",
        f"cache        {cache['path']} ({cache['size_mib']} MiB{'' if cache['exists'] else ', not created yet'})",
        f"allocator    {facts.get('allocator', 'not probed')}",
    ]
    registry = facts.get("registry", {})
    for candidate, title in ((True, CANDIDATES_TITLE), (False, REFERENCES_TITLE)):
        lines += ["", title, *(f"  {name:<17} {b['consumes']:<6} {b['precision']:<5} "
                               f"{'available' if b['available'] else b['reason']}"
                               for name, b in registry.items() if b["candidate"] == candidate)]
    return "\n".join(lines)


CANDIDATES_TITLE = ("backends: the names run --backends, bench --backends, check --backends (its ONNX ones), "
                    "pytest --harness-backends and --require take")
REFERENCES_TITLE = "references: torch eager, never candidates (torch-fp32 is the gate's reference; bench times them)"


def run(args: argparse.Namespace) -> int:
    from harness.backends import registry
    from harness.errors import InvalidArgument

    required = tuple(dict.fromkeys(v.strip() for v in (args.require or "").split(",") if v.strip()))
    unknown = [name for name in required if name not in BACKENDS and name not in registry.specs()]
    if unknown:
        error = InvalidArgument("--require", "unknown backend", observed=", ".join(unknown),
                                expected=f"a comma list of {', '.join(registry.specs())}",
                                fix="pick names from that list (python -m harness doctor shows them)")
        print(f"error: {error}", file=sys.stderr)
        return 2
    facts = probe(args.cache_dir)
    known = {**facts["registry"], **facts["backends"]}
    missing = {name: known[name]["reason"] for name in required if not known[name]["available"]}
    facts["required"], facts["unavailable_required"] = list(required), missing
    print(json.dumps(facts, indent=2, default=str) if args.json else render(facts))
    for name, reason in missing.items():
        print(f"required backend {name} is unavailable: {reason}", file=sys.stderr)
    if required and not missing and not args.json:
        print(f"\nrequired backends available: {', '.join(required)}")
    return 1 if missing else 0
