"""torch.export + AOTInductor: the model compiled ahead of time into a ``.pt2`` package,
PyTorch's own deployment artifact (what a user ships instead of a TensorRT engine).

The runner consumes the torch model. At its first call for a feed shape it exports the original
three-input call (``torch.inverse`` stays inside: torch.export handles it, unlike ONNX), compiles
the exported program with AOTInductor into a package cached on disk by content (the model's
digest, the shapes, the device, torch's version) and loads it. ``aten.grid_sampler`` is lowered
to ``grid_sampler_2d`` first: left to Inductor's decomposition on CUDA it becomes
``cudnn_grid_sampler``, which has no AOTInductor C shim (a proxy-executor fallback).

Loading a package runs native code that can take the process down (on the H200 machine used
here, torch 2.11+cu130, loading any package segfaults: CUDA or CPU, MVSNet's or a one-convolution
model's, in the process that compiled it or a fresh one). So every
freshly built package is first loaded and run once in a child process; a crash there is recorded
with the cache entry and raised as ``BackendUnavailable`` (a skip with that reason), and a later
session hits the recorded verdict without compiling again.

Before the model is compiled for a CUDA device, the loader is probed on a one-convolution CPU
package (compiled in a child process, loaded in another): where the loader crashes whatever the
package, the backend skips without minutes of compiling MVSNet. The probe is a CPU package
because that is what it tests (the loader, not a kernel) and because it is cheap: compiling the
CUDA probe took 114 s of a fresh H200's main job; the CPU one, built with the cheapest settings
(``_PROBE``), 12 s on a 2-core machine against 28 s with Inductor's defaults. A
front that knows its legs (``run``) starts it in the background with ``warm`` while the other
legs run; a loader that crashes on CUDA packages only is still caught by the model's own check.
"""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from harness.backends.base import BackendSpec, Runner
from harness.backends.compiling import INDUCTOR_CACHE_ENV, MAX_LOG_LINES, inductor_cache_dir, quiet_compile
from harness.convert.cache import ArtifactCache
from harness.convert.workarounds import INPUTS_WITHOUT_INVERSE
from harness.errors import BackendUnavailable
from harness.modelspec import ModelSpec

NAME = "torch-aoti"
#: What the child process does with a package: load it, run it once on the saved feed, say each
#: stage on stdout so that a crash names the stage it died in.
_CHECK = """
import sys, torch
print("stage load", flush=True)
fn = torch._inductor.aoti_load_package(sys.argv[1])
print("stage run", flush=True)
feed = torch.load(sys.argv[2])
fn(*feed)
if torch.cuda.is_available():
    torch.cuda.synchronize()
print("stage done", flush=True)
"""
CHECK_TIMEOUT_S = 600.0
#: What the probe's child process does: compile a one-convolution CPU package to argv[1] and save
#: the feed it runs on to argv[2] (AOTInductor's output goes to the child's captured streams).
_PROBE = """
import sys, time, torch
import torch._inductor.config as config
# the cheapest build that still goes through the loader: no precompiled headers, the wrapper at
# -O0, no pool of compile workers, and no SIMD kernels, so none of the one-g++-call-per-ISA checks
# (ten on the H200 machine's AVX-512 CPU; its whole probe compile took 53-62 s alone, 180 s beside
# the main job's legs)
config.compile_threads = 1
for name, value in (("compile_wrapper_opt_level", "O0"), ("precompile_headers", False)):
    if hasattr(config.aot_inductor, name):
        setattr(config.aot_inductor, name, value)
try:
    import torch._inductor.cpu_vec_isa as isa
    isa.valid_vec_isa_list = lambda: []
except (ImportError, AttributeError):
    pass
started = time.perf_counter()
probe = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
feed = (torch.ones(1, 3, 8, 8),)
with torch.no_grad():
    exported = torch.export.export(probe, feed)
    exported_at = time.perf_counter()
    torch._inductor.aoti_compile_and_package(exported, package_path=sys.argv[1])
torch.save(feed, sys.argv[2])
print(f"probe export {exported_at - started:.1f} s, compile {time.perf_counter() - exported_at:.1f} s", flush=True)
"""
#: Version of the loader probe's package (``_probe_build``): part of its cache key.
PROBE_FORMAT = 4


#: How Inductor says an operator runs through the proxy executor (no C shim) in the package.
FALLBACK = "is missing a c-shim implementation"
#: What ``_build`` records beside the package (in its cache entry's meta.json, read back on a hit).
BUILD_FACTS = ("export_seconds", "compile_seconds", "package_mib", "proxy_fallbacks", "compile_log", "load_check")
def _compiler() -> str | None:
    """The C++ compiler AOTInductor would call ($CXX, else the first of g++, c++, clang++)."""
    wanted = os.environ.get("CXX")
    if wanted:
        return shutil.which(wanted)
    return next((found for name in ("g++", "c++", "clang++") if (found := shutil.which(name))), None)


def aoti_missing() -> str | None:
    """None when a package can be built here, else what is missing."""
    try:
        import torch._inductor  # noqa: F401
        from torch._inductor import aoti_compile_and_package  # noqa: F401
    except ImportError as exc:
        return f"torch {torch.__version__} has no AOTInductor ({exc})"
    if _compiler() is None:
        return "no C++ compiler for AOTInductor ($CXX, g++, c++ or clang++ on PATH)"
    return None


def _grid_sampler_2d(input: torch.Tensor, grid: torch.Tensor, interpolation_mode: int, padding_mode: int,
                     align_corners: bool) -> torch.Tensor:
    return torch.ops.aten.grid_sampler_2d.default(input, grid, interpolation_mode, padding_mode, align_corners)


def describe_crash(returncode: int, stages: list[str]) -> str:
    """``loading the package crashed the process (SIGSEGV)``-style text from a child's end."""
    stage = stages[-1] if stages else "start"
    doing = {"start": "starting the check", "load": "loading the package", "run": "running the package"}.get(stage, stage)
    if returncode < 0:
        try:
            how = signal.Signals(-returncode).name
        except ValueError:
            how = f"signal {-returncode}"
    else:
        how = f"exit status {returncode}"
    return f"{doing} crashed the process ({how})"


class AotiRunner(Runner):
    """The model as an AOTInductor package on ``device``.

    Args:
        model: the network (copied when it lives on another device).
        device: ``cpu`` or ``cuda[:i]``.
        cache_dir: the artifact cache; None: the harness's default cache.
        model_digest: what identifies the model's function (weights and settings); None: the
            package is compiled into a temporary folder, not cached.
        model_spec: the model's names and feed checks (``harness.modelspec``; default MVSNet's).
        input_names: the model's positional inputs, in order.
        load_check: load and run each freshly built package in a child process first.
        probe_loader: before compiling the model, build a tiny package and load it in a child
            process (cached per torch build, device and GPU): where AOTInductor's loader crashes
            whatever the package (torch 2.11+cu130 on an H200 does), the backend is skipped at
            once instead of after minutes of compiling the model. None: on CUDA devices only.
    """

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", cache_dir: str | Path | None = None,
                 model_digest: str | None = None, load_check: bool = True, validate_values: bool = True,
                 model_spec: ModelSpec | None = None, input_names: tuple[str, ...] = INPUTS_WITHOUT_INVERSE,
                 probe_loader: bool | None = None) -> None:
        super().__init__(validate_values, model_spec)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(NAME, "no CUDA device", fix="run on a machine with an NVIDIA GPU, or with --harness-device cpu")
        missing = aoti_missing()
        if missing:
            raise BackendUnavailable(NAME, missing, fix="install a C++ compiler (e.g. apt install g++) or set $CXX")
        self.source = model
        self.cache = ArtifactCache(cache_dir) if model_digest is not None else None
        self.model_digest = model_digest
        self.load_check = load_check
        self.probe_loader = (self.device.type == "cuda") if probe_loader is None else probe_loader
        self.input_names = input_names  # the model's call, in order (MVSNet: the original three inputs)
        self.name = NAME
        self._packages: dict[tuple[tuple[int, ...], ...], Any] = {}
        self._facts: dict[str, Any] = {}
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    def _prepare(self) -> None:
        on_device = next(self.source.parameters()).device
        self.model = self.source if on_device == self.device else copy.deepcopy(self.source).to(self.device)
        self.model.eval()

    def _close(self) -> None:
        self._packages.clear()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    # -- building ----------------------------------------------------------------------------
    def _environment(self) -> dict[str, Any]:
        """What a package is built for besides the model: device type, torch and CUDA builds, GPU."""
        return {"device": self.device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
                "gpu": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None}

    def _fields(self, args: tuple[torch.Tensor, ...]) -> dict[str, Any]:
        return {"model": self.model_digest, "shapes": [list(a.shape) for a in args], "dtype": "float32",
                **self._environment(), "grid_sampler": "grid_sampler_2d", "format": 1}

    def _build(self, args: tuple[torch.Tensor, ...], path: Path) -> dict[str, Any]:
        log: list[str] = []  # torch.export's and Inductor's warnings and output: the record's, not the console's
        started = time.perf_counter()

        def export() -> torch.export.ExportedProgram:
            with torch.no_grad():
                exported = torch.export.export(self.model, args)
            table = torch.export.default_decompositions()
            table[torch.ops.aten.grid_sampler.default] = _grid_sampler_2d
            return exported.run_decompositions(table)

        cache = inductor_cache_dir(self.cache.root) if self.cache is not None else None
        exported = quiet_compile(export, log)
        export_s = time.perf_counter() - started
        started = time.perf_counter()
        quiet_compile(lambda: torch._inductor.aoti_compile_and_package(exported, package_path=str(path)), log, cache)
        facts: dict[str, Any] = {"export_seconds": round(export_s, 3), "compile_seconds": round(time.perf_counter() - started, 3),
                                 "package_mib": round(path.stat().st_size / 2**20, 3),
                                 "proxy_fallbacks": sorted({m.split(" ", 1)[0] for m in log if FALLBACK in m}),
                                 "compile_log": log[:MAX_LOG_LINES]}
        if self.load_check:
            facts["load_check"] = self._check_in_child(path, args)
        return facts

    def _check_in_child(self, path: Path, args: tuple[torch.Tensor, ...]) -> str:
        """``ok``, or what crashed, from loading and running the package in a child process."""
        with tempfile.TemporaryDirectory(prefix="harness-aoti-") as scratch:
            feed = Path(scratch) / "feed.pt"
            torch.save(tuple(a.detach() for a in args), feed)
            return _load_in_child(path, feed, child_env(self.cache.root if self.cache is not None else None))

    def _probe_build(self, path: Path) -> dict[str, Any]:
        """A one-convolution CPU package, compiled in one child process, loaded and run in another."""
        return _probe_package(path, self.cache.root if self.cache is not None else None)

    def _loader_verdict(self) -> str:
        """``ok`` or what crashed, when AOTInductor's loader runs a tiny package on this machine;
        waits for the probe ``warm`` started in the background, if any."""
        if self.cache is None:
            with tempfile.TemporaryDirectory(prefix="harness-aoti-probe-") as scratch:
                return str(self._probe_build(Path(scratch) / "probe.pt2")["load_check"])
        pending = _PROBES.pop(Path(self.cache.root), None)
        if pending is not None:
            pending.join()
        entry = self.cache.get_or_build("aoti-loader", probe_fields(), "probe.pt2", self._probe_build)
        return str(entry.meta.get("load_check"))

    def _unavailable(self, verdict: str, where: str) -> BackendUnavailable:
        return BackendUnavailable(
            NAME, f"{verdict} with torch {torch.__version__} on {self._device_text()} (a known limitation of this "
            f"torch build: see README, 'torch-aoti'); {where}",
            fix="use a torch build whose AOTInductor loader works on this machine (torch 2.13 CPU loads and runs "
            "these packages), or delete the cache entry to check again")

    def _package(self, args: tuple[torch.Tensor, ...]) -> Any:
        shapes = tuple(tuple(a.shape) for a in args)
        if shapes in self._packages:
            return self._packages[shapes]
        if self.probe_loader and self.load_check:
            probed = self._loader_verdict()
            if probed != "ok":
                raise self._unavailable(probed, "found on a one-convolution probe package before compiling the model")
        if self.cache is not None:
            entry = self.cache.get_or_build("aoti", self._fields(args), "model.pt2", lambda p: self._build(args, p))
            path, facts = entry.path, {k: entry.meta.get(k) for k in BUILD_FACTS}
            facts.update(cache=entry.status, package_sha256=entry.sha256[:16])
        else:
            if self._scratch is None:
                self._scratch = tempfile.TemporaryDirectory(prefix="harness-aoti-")
            path = Path(self._scratch.name) / f"model-{len(self._packages)}.pt2"
            facts = {**self._build(args, path), "cache": "none (no model digest)"}
        self._facts = facts
        verdict = facts.get("load_check")
        if verdict not in (None, "ok"):
            raise self._unavailable(str(verdict), f"package {path}")
        self._packages[shapes] = torch._inductor.aoti_load_package(str(path))
        return self._packages[shapes]

    def _device_text(self) -> str:
        if self.device.type != "cuda":
            return "cpu"
        return f"{torch.cuda.get_device_name(self.device)} (CUDA {torch.version.cuda})"

    # -- inference ---------------------------------------------------------------------------
    def _infer(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        args = tuple(feed[name] for name in self.input_names)
        out = self._package(args)(*args)
        if not isinstance(out, dict):  # older torch: outputs flattened in the model's order
            out = dict(zip(self.model_spec.output_names, out, strict=True))
        return {k: v.float() for k, v in out.items()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "runtime": "torch.export + AOTInductor", "torch": torch.__version__,
                "precision": "fp32", "inverse": "torch.inverse (exported)", **self._facts}


#: Child processes running now (a probe's compile, a load check), killed when the harness exits:
#: an interrupted run leaves no compile behind.
_CHILDREN: set[subprocess.Popen[str]] = set()


#: Run first in every child: no core dump. A child is expected to crash where the loader does,
#: and the kernel writes (or pipes to a handler such as Ubuntu's apport) the whole memory of a
#: process that has loaded torch's CUDA libraries before its parent hears of the crash: on the
#: H200 machine the crashing load check took 61 s while the probe compiled in 27 s. A soft limit
#: of 1 byte stops both: a core file needs at least a page, and the kernel skips a piped dump of a
#: process whose limit is 1.
_NO_CORE_DUMP = """
try:
    import resource
    _soft, _hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0 if _hard == 0 else 1, _hard))
except (ImportError, ValueError, OSError):
    pass
"""


def _run_child(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -c script args`` (without core dumps) with its output captured; ``TimeoutExpired``
    after ``CHECK_TIMEOUT_S``."""
    command = [sys.executable, "-c", _NO_CORE_DUMP + script, *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as child:
        _CHILDREN.add(child)
        try:
            out, err = child.communicate(timeout=CHECK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise
        finally:
            _CHILDREN.discard(child)
    return subprocess.CompletedProcess(command, child.returncode, out, err)


@atexit.register
def _end_children() -> None:
    for child in list(_CHILDREN):
        child.kill()


def child_env(cache_root: Path | None) -> dict[str, str]:
    """The environment of a compile or load child: Inductor caches into the harness's folder, the
    one the compile wrote to. Loading a package checks the CPU's vector ISA by compiling and
    loading one test library per ISA (six g++ calls, about 11 s on a 2-core machine); the child
    then finds the ones the compile built instead of building them again in Inductor's default
    folder."""
    env = dict(os.environ)
    inductor = inductor_cache_dir(cache_root)
    if inductor is not None:
        env[INDUCTOR_CACHE_ENV] = str(inductor.resolve())
    return env


def _load_in_child(path: Path, feed: Path, env: dict[str, str] | None = None) -> str:
    """``ok``, or what crashed, from loading package ``path`` and running it on the saved ``feed``
    in a child process."""
    try:
        done = _run_child(_CHECK, str(path), str(feed), env=env)
    except subprocess.TimeoutExpired:
        return f"loading and running the package took over {CHECK_TIMEOUT_S:.0f} s"
    stages = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("stage ")]
    if done.returncode == 0 and stages[-1:] == ["done"]:
        return "ok"
    tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:]
    return describe_crash(done.returncode, stages) + (f": {tail[0][:300]}" if tail and done.returncode > 0 else "")


def probe_fields() -> dict[str, Any]:
    """The loader probe's cache key: the torch build and the machine (its GPU), not the model."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"probe_device": "cpu", "torch": torch.__version__, "cuda": torch.version.cuda, "gpu": gpu,
            "format": PROBE_FORMAT}


def _probe_package(path: Path, cache_root: Path | None) -> dict[str, Any]:
    """Compile the probe package into ``path`` in a child process, then load and run it in
    another: ``{"load_check": "ok" or what failed, "compile_log": [...]}``."""
    env = child_env(cache_root)
    with tempfile.TemporaryDirectory(prefix="harness-aoti-probe-") as scratch:
        feed = Path(scratch) / "feed.pt"
        started = time.perf_counter()
        try:
            done = _run_child(_PROBE, str(path), str(feed), env=env)
        except subprocess.TimeoutExpired:
            verdict, log = f"compiling the probe package took over {CHECK_TIMEOUT_S:.0f} s", []
        else:
            log = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
            if done.returncode == 0 and path.is_file() and feed.is_file():
                compiled = time.perf_counter()
                verdict = _load_in_child(path, feed, env)
                return {"load_check": verdict, "compile_log": log[:MAX_LOG_LINES],
                        "compile_seconds": round(compiled - started, 1),
                        "check_seconds": round(time.perf_counter() - compiled, 1)}
            tail = log[-1:] or [f"exit status {done.returncode}"]
            verdict = f"compiling the probe package failed ({tail[0][:300]})"
    if not path.is_file():
        path.write_bytes(b"")  # the cache keeps the verdict with a placeholder: a later session skips at once
    return {"load_check": verdict, "compile_log": log[:MAX_LOG_LINES]}


#: Loader probes started in the background (``warm``), by cache folder: a thread waiting on the
#: probe's child processes. ``_loader_verdict`` joins it before it reads the cache entry.
_PROBES: dict[Path, threading.Thread] = {}


def warm(model: Any = None, device: str | torch.device = "cpu", cache_dir: str | Path | None = None,
         **_: Any) -> None:
    """Start the loader probe in the background for a run that will need it (a CUDA device and a
    cache to keep its verdict in), so its compile overlaps the other legs. The thread only waits
    on child processes and fills the cache entry; nothing reaches the console."""
    if torch.device(device).type == "cuda" and cache_dir is not None and aoti_missing() is None:
        start_probe(Path(cache_dir))


def start_probe(root: Path) -> None:
    """The loader probe for the artifact cache at ``root``, started on a background thread (once)."""
    if root in _PROBES:
        return
    cache = ArtifactCache(root)
    fields = probe_fields()  # CUDA is initialised here, on the caller's thread

    def probe() -> None:
        try:
            cache.get_or_build("aoti-loader", fields, "probe.pt2", lambda p: _probe_package(p, root))
        except Exception:  # noqa: BLE001  the runner builds it again in the foreground and raises there
            pass

    thread = threading.Thread(target=probe, name="harness-aoti-probe", daemon=True)
    _PROBES[root] = thread
    thread.start()


def _make(model: torch.nn.Module, **settings: Any) -> AotiRunner:
    return AotiRunner(model, settings.pop("device", "cpu"), **settings)


BACKENDS = (
    # PyTorch's own ahead-of-time deployment path; runs where the chain runs (CPU or CUDA)
    BackendSpec(NAME, "model", "fp32", "cpu", _make, aoti_missing, context=("cache_dir", "model_digest"),
                fix="install a C++ compiler (e.g. apt install g++) or set $CXX", warm=warm),
)
