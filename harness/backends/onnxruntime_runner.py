"""ONNX Runtime runner: CPU execution provider, or CUDA with I/O binding on torch tensors.

``onnxruntime`` is imported here only, so the package imports on machines without it.

CUDA option sets (``cuda_options``):

* ``strict``: what the strict FP32 legs promise: ``use_tf32=0``, ONNX Runtime's own default
  exhaustive cuDNN algorithm search, the session on a dedicated torch stream
  (``user_compute_stream``) that waits for the producer of the inputs while the caller's stream
  waits for the outputs, so torch tensors are shared without host copies and without races.
* ``mixed``: the FP16 graph's legs: the same stream, TF32 left at ONNX Runtime's default
  (allowed). ``use_tf32=0`` made the simplified seed FP16 graph 2.7x slower on an H200 (34.3 ms
  against 12.8 ms with ORT's defaults, onnxruntime-gpu 1.31.1), and it protects nothing there:
  the graph's FP32 parts are the geometry, which has no MatMul (``harness/model/geometry.py``),
  and the variance, softmax and regression, which have none either.
* ``default``: ONNX Runtime as shipped: no provider option but the device (TF32 allowed, ORT's
  own stream); the caller's stream is synchronised before the run, as ORT synchronises after it.

``describe()`` records the option set and the TF32 setting it ran with.

ONNX Runtime's native log lines (its default logger and libraries below it, such as cuDNN's
frontend) never reach the console: the default logger is set to errors only, and whatever is
still written to the process's stderr while a session is created and first run is captured
into ``describe()["log"]`` for the run record.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from harness.backends.base import BackendSpec, Runner
from harness.errors import ArtifactError, BackendUnavailable, InvalidInput
from harness.gpus import cpu_share
from harness.modelspec import ModelSpec

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
CudaOptions = Literal["strict", "mixed", "default"]
CUDA_OPTION_SETS: tuple[CudaOptions, ...] = ("strict", "mixed", "default")
#: the TF32 setting of each option set, as describe() records it
TF32_SETTING = {"strict": "off (use_tf32=0)", "mixed": "allowed (ONNX Runtime's default use_tf32=1)",
                "default": "allowed (ONNX Runtime's default use_tf32=1)"}
ERRORS_ONLY = 3  # ONNX Runtime's severity levels: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
MAX_LOG_LINES = 50  # per runner, in the record; the rest is counted


def import_onnxruntime() -> Any:
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise BackendUnavailable("onnxruntime", f"onnxruntime not importable ({exc})",
                                 fix="pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA)") from None
    ort.set_default_logger_severity(ERRORS_ONLY)  # its default logger prints warnings to the console
    return ort


@contextlib.contextmanager
def captured_native_stderr(lines: list[str]) -> Iterator[None]:
    """Redirect file descriptor 2 (where native libraries write) into a temporary file for the
    block and append its non-empty lines to ``lines``. Python-level ``sys.stderr`` writes are
    flushed first so nothing of ours is swallowed."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr (daemonised): nothing to capture
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            lines.extend(line.rstrip() for line in text.splitlines() if line.strip())


def available_providers() -> list[str]:
    try:
        return list(import_onnxruntime().get_available_providers())
    except BackendUnavailable:
        return []


def ensure_available(device: torch.device, name: str = "onnxruntime") -> None:
    """Raise ``BackendUnavailable`` naming what is missing for ONNX Runtime on ``device``."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(name, "no CUDA device", fix="run on a machine with an NVIDIA GPU")
    ort = import_onnxruntime()
    provider = PROVIDERS[device.type]
    if provider not in ort.get_available_providers():
        raise BackendUnavailable(
            name, f"{provider} missing from onnxruntime {ort.__version__}",
            fix="pip install onnxruntime-gpu (a build matching your CUDA) instead of onnxruntime",
        )


def cuda_provider_options(cuda_options: CudaOptions, device_index: int, stream: int | None = None) -> dict[str, Any]:
    """The CUDA execution provider's options for an option set (see the module docstring);
    ``stream`` is the ``user_compute_stream`` handle of the ``strict`` and ``mixed`` sets."""
    if cuda_options not in CUDA_OPTION_SETS:
        raise InvalidInput("ONNX Runtime CUDA options", "unknown option set", observed=cuda_options,
                           expected=" or ".join(CUDA_OPTION_SETS))
    options: dict[str, Any] = {"device_id": device_index}
    if cuda_options == "default":
        return options
    if stream is None:
        raise InvalidInput(f"ONNX Runtime CUDA options {cuda_options}", "no stream to run on", observed="stream=None",
                           expected="the handle of a CUDA stream (torch.cuda.Stream().cuda_stream)")
    # the cuDNN algorithm search stays ORT's own default (exhaustive): a heuristic pick was
    # measured up to 2.7x slower
    options["user_compute_stream"] = str(stream)
    if cuda_options == "strict":
        options["use_tf32"] = 0  # strict FP32, like the torch reference
    return options


class OrtRunner(Runner):
    """Args:
        onnx_path: the graph to run.
        device: ``"cpu"`` or ``"cuda[:i]"`` (needs onnxruntime-gpu's CUDAExecutionProvider).
        label: a suffix for ``name`` (e.g. the graph variant: ``raw``/``simplified``).
        threads: ONNX Runtime's intra-op threads; by default ``harness.gpus.cpu_share()`` (a pytest-xdist
            worker's share of the cores, ``HARNESS_CPU_THREADS``), else ONNX Runtime's own (every core).
        tuned: keep ONNX Runtime's CPU memory arena for the session's life (benchmarks: faster
            steady state); parity runs give the memory back after each run.
        cuda_options: ``strict`` (TF32 off, the harness's stream), ``mixed`` (the harness's stream,
            TF32 as ONNX Runtime defaults) or ``default`` (ONNX Runtime as shipped); see the module
            docstring.
        model_spec: the model the graph is (its feed checks and output shapes); MVSNet's when None.
    """

    def __init__(self, onnx_path: str | Path, device: str | torch.device = "cpu", label: str = "",
                 validate_values: bool = True, threads: int | None = None, tuned: bool = False,
                 cuda_options: CudaOptions = "strict", model_spec: ModelSpec | None = None) -> None:
        super().__init__(validate_values, model_spec)
        if cuda_options not in CUDA_OPTION_SETS:
            raise InvalidInput("ONNX Runtime CUDA options", "unknown option set", observed=cuda_options,
                               expected=" or ".join(CUDA_OPTION_SETS))
        self.path = Path(onnx_path)
        self.device = torch.device(device)
        self.provider = PROVIDERS[self.device.type]
        self.threads = threads
        self.tuned = tuned
        self.cuda_options = cuda_options
        self.name = f"ort-{self.device.type}" + (f"-{label}" if label else "")
        ensure_available(self.device, self.name)
        self._session: Any = None
        self._stream: torch.cuda.Stream | None = None
        self.log: list[str] = []  # native lines captured while creating the session and at each new input shape
        self._shapes_seen: set[tuple] = set()

    def _prepare(self) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.log_severity_level = ERRORS_ONLY
        # the CPU arena keeps every peak allocation for the session's life: with several sessions
        # alive at the seed shape that exhausted 24 GiB; parity runs give memory back, benchmarks
        # (tuned) keep the arena for speed
        options.enable_cpu_mem_arena = self.tuned
        threads = self.threads or cpu_share()  # under xdist: this worker's share of the cores
        if threads:
            options.intra_op_num_threads = threads
        providers: list[Any]
        if self.device.type == "cuda":
            if self.cuda_options != "default":
                self._stream = torch.cuda.Stream(device=self.device)
            stream = self._stream.cuda_stream if self._stream is not None else None
            providers = [(self.provider, cuda_provider_options(self.cuda_options, self.device.index or 0, stream))]
        else:
            providers = [self.provider]
        try:
            with captured_native_stderr(self.log):
                self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types; report, never swallow
            raise ArtifactError(
                str(self.path), "ONNX Runtime cannot load the graph", observed=f"{type(exc).__name__}: {str(exc)[:200]}",
                expected="a complete ONNX file this onnxruntime supports",
                fix="delete the file's cache entry (the harness rebuilds it) or re-export the model",
            ) from exc
        names = tuple(i.name for i in self._session.get_inputs())
        self.input_names = names
        self.output_names = tuple(o.name for o in self._session.get_outputs())
        self._static_shapes = {
            i.name: tuple(i.shape) for i in self._session.get_inputs() if all(isinstance(d, int) for d in i.shape)
        }

    def _close(self) -> None:
        self._session = None
        self._stream = None

    def check_feed(self, feed: dict[str, torch.Tensor]) -> None:
        self.prepare()
        super().check_feed(feed)
        for name, shape in self._static_shapes.items():
            if tuple(feed[name].shape) != shape:
                raise InvalidInput(
                    f"{self.name}: {name}", "shape differs from the ONNX graph's static shape",
                    observed=tuple(feed[name].shape), expected=shape,
                    fix="export a graph for this shape (the harness does per case) or use a dynamic-shape export",
                )

    def _infer(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # the first run at each input shape picks kernels (cuDNN search, cudnn_frontend plans, whose
        # failures ONNX Runtime prints): capture its lines; a dynamic graph meets many shapes
        shapes = tuple((name, tuple(t.shape)) for name, t in feed.items())
        if shapes not in self._shapes_seen:
            self._shapes_seen.add(shapes)
            with captured_native_stderr(self.log):
                return self._run(feed)
        return self._run(feed)

    def _run(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cpu":
            arrays = {name: t.numpy() for name, t in feed.items()}
            outputs = self._session.run(list(self.output_names), arrays)
            return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in zip(self.output_names, outputs)}
        return self._infer_cuda(feed)

    def _infer_cuda(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        binding = self._session.io_binding()
        index = self.device.index or 0
        for name, tensor in feed.items():
            binding.bind_input(name, "cuda", index, np.float32, list(tensor.shape), tensor.data_ptr())
        # outputs are allocated here, in the shapes the model spec gives for this feed
        outputs = {name: torch.empty(self.output_shape(feed, name), dtype=torch.float32, device=self.device)
                   for name in self.output_names}
        for name, tensor in outputs.items():
            binding.bind_output(name, "cuda", index, np.float32, list(tensor.shape), tensor.data_ptr())
        caller = torch.cuda.current_stream(self.device)
        if self._stream is None:  # ORT as shipped runs on its own stream and synchronises after the run
            caller.synchronize()
            self._session.run_with_iobinding(binding)
            return outputs
        self._stream.wait_stream(caller)  # inputs were produced on the caller's stream
        self._session.run_with_iobinding(binding)
        caller.wait_stream(self._stream)  # consumers of the outputs wait for ORT's work
        for tensor in (*feed.values(), *outputs.values()):
            tensor.record_stream(self._stream)
        return outputs

    def run_all(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every graph output by name, from host tensors (probe builds: diagnostics, not timed)."""
        self.prepare()
        names = [o.name for o in self._session.get_outputs()]
        arrays = self._session.run(names, {k: v.detach().cpu().numpy() for k, v in feed.items()})
        return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in zip(names, arrays)}

    def describe(self) -> dict[str, Any]:
        ort = import_onnxruntime()
        info = {**super().describe(), "runtime": "onnxruntime", "onnxruntime": ort.__version__,
                "provider": self.provider, "onnx_path": str(self.path)}
        if self.device.type == "cuda":
            info["cuda_options"] = self.cuda_options
            info["tf32"] = TF32_SETTING[self.cuda_options]
        if self.log:
            info["log"] = self.log[:MAX_LOG_LINES] + (
                [f"... {len(self.log) - MAX_LOG_LINES} more lines"] if len(self.log) > MAX_LOG_LINES else [])
        return info


# -- the backends this module declares (harness.backends.registry collects them) ---------------

def _missing(device: str):  # type: ignore[no-untyped-def]
    def check() -> str | None:
        try:
            ensure_available(torch.device(device))
        except BackendUnavailable as exc:
            return exc.missing
        return None
    return check


def _ort(device: str, cuda_options: CudaOptions = "strict"):  # type: ignore[no-untyped-def]
    def make(onnx_path: str | Path, **settings: Any) -> OrtRunner:
        # a caller's cuda_options win over the backend's (bench times the FP16 graph both ways)
        settings.setdefault("cuda_options", cuda_options)
        return OrtRunner(onnx_path, settings.pop("device", device), **settings)
    return make


def ort_backend(device: str, graph_precision: str = "fp32", cuda_options: str = "strict") -> str:
    """The registry name of ONNX Runtime on ``device`` for a graph precision and option set
    (``ort-cpu``, ``ort-cuda-fp16``, ``ort-cuda-default`` ...)."""
    return (f"ort-{torch.device(device).type}" + ("-default" if cuda_options == "default" else "")
            + ("-fp16" if graph_precision == "fp16" else ""))


CPU_FIX = "pip install onnxruntime"
CUDA_FIX = "run on a machine with an NVIDIA GPU and pip install onnxruntime-gpu (a build matching your CUDA)"
#: Where this module's backends are listed among the registry's (harness.backends.registry).
ORDER = 20

BACKENDS = (
    BackendSpec("ort-cpu", "onnx", "fp32", "cpu", _ort("cpu"), _missing("cpu"), graph="fp32", fix=CPU_FIX),
    BackendSpec("ort-cuda", "onnx", "fp32", "cuda", _ort("cuda"), _missing("cuda"), graph="fp32", fix=CUDA_FIX),
    # ONNX Runtime as shipped: its default CUDA options (TF32 allowed)
    BackendSpec("ort-cuda-default", "onnx", "tf32", "cuda", _ort("cuda", "default"), _missing("cuda"), graph="fp32",
                fix=CUDA_FIX),
    # the mixed-precision graph the TensorRT fp16 engine is built from, on another runtime
    # not in the main job's default on a GPU: ort-cuda-fp16 runs the same graph there, and these six
    # legs cost the main job 16 s of its 90 at the seed shape on an H200 (2026-12-03)
    BackendSpec("ort-cpu-fp16", "onnx", "fp16", "cpu", _ort("cpu"), _missing("cpu"), graph="fp16", fix=CPU_FIX,
                gpu_default=False),
    # the harness's stream, TF32 as ONNX Runtime defaults: use_tf32=0 cost this graph 2.7x (module docstring)
    BackendSpec("ort-cuda-fp16", "onnx", "fp16", "cuda", _ort("cuda", "mixed"), _missing("cuda"), graph="fp16",
                fix=CUDA_FIX),
)
