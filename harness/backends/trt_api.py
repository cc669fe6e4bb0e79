"""Which TensorRT Python module drives the TensorRT leg, and what it can do here.

One code path serves ``tensorrt`` (TensorRT 10/11) and ``tensorrt_rtx`` (TensorRT-RTX): the
module chosen by ``bind()`` is published as ``trt`` and every TensorRT call in the harness goes
through ``trt_api.trt``. For type checking ``trt`` *is* the ``tensorrt`` module (mypy reads
``tensorrt-stubs``), so a call to API removed in TensorRT 10 (``get_binding_index``,
``execute_async_v2``, ``build_engine`` ...) fails CI.

Only this module imports TensorRT, and only inside ``bind()``: the package imports anywhere.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from harness.errors import BackendUnavailable, InvalidArgument

if TYPE_CHECKING:
    import tensorrt as trt
else:
    trt = None  # bound by bind()

Flavour = Literal["tensorrt", "tensorrt_rtx"]
FLAVOURS: tuple[Flavour, ...] = ("tensorrt", "tensorrt_rtx")
#: TensorRT-RTX runs engines only on these compute capabilities (support matrix 1.5-1.7).
RTX_RUNTIME_CCS = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
ENV_FLAVOUR = "HARNESS_TRT_FLAVOUR"


@dataclass(frozen=True)
class TrtInfo:
    flavour: Flavour
    version: str

    @property
    def label(self) -> str:
        return f"{self.flavour} {self.version}"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0]) if self.version[:1].isdigit() else 0

    @property
    def is_rtx(self) -> bool:
        return self.flavour == "tensorrt_rtx"


_bound: TrtInfo | None = None


def _import(flavour: Flavour) -> Any:
    module = importlib.import_module(flavour)
    # tensorrt-stubs alone installs a 'tensorrt' namespace package with .pyi files only: that
    # imports, but is no TensorRT.
    if not hasattr(module, "Builder") or not hasattr(module, "Runtime"):
        raise ImportError(f"{flavour} is importable but has no Builder/Runtime (stubs only?)")
    return module


def bind(flavour: str = "auto") -> TrtInfo:
    """Import and publish the TensorRT module; ``auto`` prefers ``tensorrt``, then
    ``tensorrt_rtx`` (override with ``$HARNESS_TRT_FLAVOUR``).

    Raises:
        BackendUnavailable: ``tensorrt not importable`` (with what was tried).
    """
    global _bound
    flavour = os.environ.get(ENV_FLAVOUR, flavour) if flavour == "auto" else flavour
    if flavour not in ("auto", *FLAVOURS):
        raise InvalidArgument("TensorRT flavour", "unknown module", observed=flavour, expected="auto, tensorrt or tensorrt_rtx",
                              fix="pass --harness-trt auto")
    candidates: tuple[Flavour, ...] = FLAVOURS if flavour == "auto" else (flavour,)  # type: ignore[assignment]
    if _bound is not None and _bound.flavour in candidates:
        return _bound
    errors = []
    for name in candidates:
        try:
            module = _import(name)
        except Exception as exc:  # noqa: BLE001 - a broken install reads as "not importable", with its reason
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        globals()["trt"] = module
        _bound = TrtInfo(name, str(getattr(module, "__version__", "unknown")))
        return _bound
    raise BackendUnavailable(
        "trt", "tensorrt not importable", fix="pip install tensorrt (pypi.nvidia.com libraries) or tensorrt-rtx; tried "
        + "; ".join(errors),
    )


def bound() -> TrtInfo:
    if _bound is None:
        return bind()
    return _bound


def require_cuda(backend: str = "trt") -> torch.device:
    if not torch.cuda.is_available():
        raise BackendUnavailable(backend, "no CUDA device", fix="run on a machine with an NVIDIA GPU")
    return torch.device("cuda", torch.cuda.current_device())


def compute_capability(device: torch.device | None = None) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"{major}.{minor}"


def runtime_blocker(info: TrtInfo, device: torch.device) -> str | None:
    """Why an engine of ``info`` cannot run on ``device`` (None: it can, as far as is known)."""
    cc = compute_capability(device)
    if info.is_rtx and cc not in RTX_RUNTIME_CCS:
        return f"TensorRT-RTX cannot run engines on compute capability {cc}"
    return None


# -- types ------------------------------------------------------------------------------------

def dims_tuple(dims: Any) -> tuple[int, ...]:
    """A ``trt.Dims`` (or any sequence) as a tuple of ints; -1 marks a runtime dimension."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def to_dims(shape: tuple[int, ...]) -> Any:
    return trt.Dims(list(shape))


def torch_dtype(trt_dtype: Any) -> torch.dtype:
    """torch dtype of a ``trt.DataType`` (NVIDIA's own table; FP4/INT4 packed types refused)."""
    table = {
        "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
        "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool, "UINT8": torch.uint8,
        "FP8": torch.float8_e4m3fn,
    }
    name = getattr(trt_dtype, "name", str(trt_dtype).split(".")[-1])
    if name not in table:
        raise InvalidArgument("TensorRT dtype", "no torch equivalent", observed=name, expected=", ".join(table))
    return table[name]


class CapturingLogger:
    """A ``trt.ILogger`` that keeps the last messages (to quote them in errors) and prints
    warnings and errors unless quiet."""

    def __new__(cls, quiet: bool = True) -> Any:
        base = trt.ILogger

        class _Logger(base):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                super().__init__()  # pybind11 trampolines need the base initialised
                self.messages: list[tuple[str, str]] = []
                self.quiet = quiet

            def log(self, severity: Any, msg: str) -> None:
                name = getattr(severity, "name", str(severity))
                self.messages.append((name, msg))
                del self.messages[:-200]
                if not self.quiet and name in ("ERROR", "INTERNAL_ERROR", "WARNING"):
                    print(f"[TensorRT {name}] {msg}")

            def errors(self) -> list[str]:
                return [m for s, m in self.messages if s in ("ERROR", "INTERNAL_ERROR")]

        return _Logger()
