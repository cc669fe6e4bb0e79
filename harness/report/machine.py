"""Provenance: what machine and which library versions produced a record.

Everything optional is probed without importing heavy packages twice and without failing:
a missing library reads ``null``; a probe that errors reads ``"error: ..."``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_command(cmd: list[str], cwd: Path | None = None) -> str | None:
    """stdout of a command, stripped; None when it is missing, fails or hangs (20 s)."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """Commit and dirty flag. ``$HARNESS_COMMIT``, when set, names the commit the tree was made
    from and wins over what git says (a copied checkout on a GPU runner has no .git, or a stale
    one); git's own HEAD is then kept beside it when it differs."""
    commit = run_command(["git", "rev-parse", "HEAD"], PROJECT_ROOT)
    stated = os.environ.get("HARNESS_COMMIT", "").strip()
    if stated and stated != commit:
        return {"commit": stated, "dirty": None, "commit_source": "HARNESS_COMMIT",
                **({"git_head": commit} if commit else {})}
    status = run_command(["git", "status", "--porcelain", "--untracked-files=no"], PROJECT_ROOT)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def tensorrt_versions() -> dict[str, str | None]:
    """Versions of the TensorRT Python modules that import here (without building anything)."""
    found: dict[str, str | None] = {}
    for module in ("tensorrt", "tensorrt_rtx"):
        try:
            mod = importlib.import_module(module)
            found[module] = getattr(mod, "__version__", None)
        except ImportError:
            found[module] = None
        except Exception as exc:  # noqa: BLE001 - a broken install must not break provenance
            found[module] = f"error: {type(exc).__name__}: {exc}"
    return found


def gpu_info() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({
            "index": index,
            "name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
        })
    smi = run_command(["nvidia-smi", "--query-gpu=index,driver_version,clocks.sm,clocks.max.sm,clocks.mem,"
                "temperature.gpu,power.draw,clocks_throttle_reasons.active", "--format=csv,noheader,nounits"])
    if smi:
        for line in smi.splitlines():
            fields = [f.strip() for f in line.split(",")]
            if len(fields) >= 8 and fields[0].isdigit() and int(fields[0]) < len(gpus):
                gpus[int(fields[0])].update({
                    "driver": fields[1], "sm_clock_mhz": fields[2], "sm_clock_max_mhz": fields[3],
                    "mem_clock_mhz": fields[4], "temperature_c": fields[5], "power_w": fields[6],
                    "throttle_reasons": fields[7],
                })
    return gpus


def machine_info() -> dict[str, Any]:
    """One dict for the run record's ``machine`` field."""
    ort_providers: list[str] | str | None = None
    ort_version: str | None = None
    try:
        ort = importlib.import_module("onnxruntime")
        ort_version = getattr(ort, "__version__", None)  # what runs: both packages install the one import name
        ort_providers = list(ort.get_available_providers())
    except ImportError:
        pass
    except Exception as exc:  # noqa: BLE001 - a broken install must not break provenance
        ort_providers = f"error: {type(exc).__name__}: {exc}"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": gpu_info(),
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "versions": {
            "torch": torch.__version__,
            "onnx": _version("onnx"),
            "onnxsim": _version("onnxsim"),
            "onnxruntime": ort_version or _version("onnxruntime") or _version("onnxruntime-gpu"),
            # the installed distributions: onnxruntime and onnxruntime-gpu side by side is a set-up
            # where the metadata and the imported module can disagree
            "onnxruntime_distributions": {name: v for name in ("onnxruntime", "onnxruntime-gpu")
                                          if (v := _version(name)) is not None},
            "onnxruntime_providers": ort_providers,
            **tensorrt_versions(),
            "pycuda": _version("pycuda"),
            "numpy": _version("numpy"),
        },
        "tf32": {
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        },
        **git_state(),
    }


def one_line(info: dict[str, Any], profile: str) -> str:
    """The pytest header line: profile, GPU and library versions."""
    gpus = info.get("gpus") or []
    gpu = ", ".join(f"{g['name']} (sm {g['compute_capability']})" for g in gpus) or "no GPU"
    v = info["versions"]
    trt = v.get("tensorrt") or (f"rtx {v['tensorrt_rtx']}" if v.get("tensorrt_rtx") else "none")
    return (f"harness: profile={profile} | {gpu} | torch {v['torch']} | onnx {v['onnx']} | "
            f"onnxsim {v['onnxsim']} | onnxruntime {v['onnxruntime']} | tensorrt {trt}")


def gpu_clocks(index: int = 0) -> dict[str, Any]:
    """SM/memory clocks and active throttle reasons now (pynvml, else nvidia-smi; {} if neither)."""
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            reasons = nvml.nvmlDeviceGetCurrentClocksEventReasons(handle) if hasattr(
                nvml, "nvmlDeviceGetCurrentClocksEventReasons") else nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)
            return {
                "sm_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
                "sm_max_mhz": nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM),
                "mem_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM),
                "throttle_mask": int(reasons),
                "temperature_c": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
                "source": "nvml",
            }
        finally:
            nvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML here: fall back to nvidia-smi, then to nothing
        pass
    out = run_command(["nvidia-smi", f"--id={index}", "--query-gpu=clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,"
                "clocks_throttle_reasons.active", "--format=csv,noheader,nounits"])
    if not out:
        return {}
    fields = [f.strip() for f in out.splitlines()[0].split(",")]
    if len(fields) < 5:
        return {}
    return {"sm_mhz": fields[0], "sm_max_mhz": fields[1], "mem_mhz": fields[2], "temperature_c": fields[3],
            "throttle_mask": fields[4], "source": "nvidia-smi"}


# NVML clock-event reasons that mean the clock was held down by something other than idling:
# SW power cap (0x4), HW slowdown (0x8), sync boost (0x10), SW thermal (0x20), HW thermal (0x40),
# HW power brake (0x80).
THROTTLE_BITS = {0x4: "power cap", 0x8: "hardware slowdown", 0x20: "thermal (software)",
                 0x40: "thermal (hardware)", 0x80: "power brake"}


def clock_warnings(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Warnings like trtexec's: clocks that moved during a measurement or were throttled."""
    warnings: list[str] = []
    try:
        sm0, sm1, top = float(before["sm_mhz"]), float(after["sm_mhz"]), float(after["sm_max_mhz"])
    except (KeyError, TypeError, ValueError):
        return warnings
    if sm0 and abs(sm1 - sm0) / sm0 > 0.05:
        warnings.append(f"SM clock moved {sm0:.0f} -> {sm1:.0f} MHz during the measurement (clocks not locked)")
    if top and sm1 < 0.9 * top:
        warnings.append(f"SM clock {sm1:.0f} MHz is below 90% of its maximum {top:.0f} MHz")
    try:
        mask = int(str(after.get("throttle_mask", "0")), 0)
    except ValueError:
        mask = 0
    named = [text for bit, text in THROTTLE_BITS.items() if mask & bit]
    if named:
        warnings.append("clock throttled: " + ", ".join(named))
    return warnings
