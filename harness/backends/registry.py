"""The backend registry and the one runner factory.

Every backend module declares its backends (``BACKENDS``: name, what it consumes, precision,
device, availability, how to make its runner); this module collects them. Every front (the
chain, and through it the pytest gate, the main job, bench, the property suite, localisation,
the bring-your-own check) gets its runners from ``make_runner``; no other module outside
``harness/backends/`` constructs a runner. Adding a backend is one module with a ``BACKENDS``
table (found by ``backend_modules`` below) plus its tolerance table in fixtures/tolerances.toml.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any

from harness.backends.base import BackendSpec, Consumes, Runner
from harness.errors import BackendUnavailable

#: The package whose modules declare backends: every module in it with a ``BACKENDS`` table is a
#: backend module, found without a list to edit. Modules are taken by their ``ORDER`` (default
#: 100: after the built-in ones), then by name; that order is the order backends are listed in.
PACKAGE = "harness.backends"

_SPECS: dict[str, BackendSpec] | None = None


def backend_modules() -> list[ModuleType]:
    """The modules of ``PACKAGE`` that declare ``BACKENDS``, in listing order."""
    package = importlib.import_module(PACKAGE)
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name == "registry":
            continue
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        if hasattr(module, "BACKENDS"):
            found.append(module)
    return sorted(found, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def specs() -> dict[str, BackendSpec]:
    """``{name: BackendSpec}`` of every declared backend (modules imported once, in order)."""
    global _SPECS
    if _SPECS is None:
        found: dict[str, BackendSpec] = {}
        for module in backend_modules():
            for spec in module.BACKENDS:
                if spec.name in found:
                    raise AssertionError(f"backend {spec.name} declared twice ({module.__name__})")
                found[spec.name] = spec
        _SPECS = found
    return _SPECS


def names(consumes: Consumes | None = None, candidates_only: bool = False) -> tuple[str, ...]:
    return tuple(name for name, spec in specs().items()
                 if (consumes is None or spec.consumes == consumes) and (spec.candidate or not candidates_only))


def main_job_defaults(on_gpu: bool) -> tuple[str, ...]:
    """The candidates the main job runs when no backends are named: every one, and where its
    reference runs on a GPU, every one whose spec keeps ``gpu_default``."""
    return tuple(name for name in names(candidates_only=True) if not on_gpu or specs()[name].gpu_default)


def get(name: str) -> BackendSpec:
    """The spec of ``name``; an unknown name is ``BackendUnavailable`` naming the known ones."""
    try:
        return specs()[name]
    except KeyError:
        raise BackendUnavailable(name, f"no such backend in this harness version (no backend named {name})",
                                 fix=f"pick from {', '.join(specs())}") from None


def available(name: str) -> str | None:
    """None when backend ``name`` can run here, else the missing piece."""
    return get(name).available()


def require(name: str) -> None:
    """Raise ``BackendUnavailable`` (the missing piece as reason, the spec's fix) unless backend
    ``name`` can run here; cheap, so callers check before any export or build work."""
    spec = get(name)
    reason = spec.available()
    if reason is not None:
        raise BackendUnavailable(name, reason, fix=spec.fix)


def make_runner(name: str, artifact: Any, **settings: Any) -> Runner:
    """The runner of backend ``name`` on ``artifact`` (the torch model, or the ONNX / engine file
    path), not yet prepared. ``settings`` go to the runner (label, device, validate_values,
    TensorRT buffers ...) over the spec's fixed settings. A backend that cannot run here raises
    ``BackendUnavailable`` naming what is missing."""
    spec = get(name)
    return spec.make(artifact, **{**spec.settings, **settings})


def warm(name: str, artifact: Any, **settings: Any) -> None:
    """Start backend ``name``'s background preparation (its spec's ``warm``), if it has one and
    can run here; the runner ``make_runner`` makes later waits for it."""
    spec = get(name)
    if spec.warm is not None and spec.available() is None:
        spec.warm(artifact, **{**spec.settings, **settings})
