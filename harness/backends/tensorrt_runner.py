"""TensorRT runner (TensorRT 10/11 or TensorRT-RTX, one code path): name-based I/O.

Buffers are torch CUDA tensors by default: inputs used in place when contiguous and 256-byte
aligned (else copied), dtypes checked against the engine, shapes checked against the engine's
profile, outputs allocated after the input shapes are set. Work runs on a dedicated stream that
waits for the caller's stream; the caller's stream waits for it before the outputs are used.

``buffers="pycuda"`` is the classic TensorRT-sample style instead: page-locked host buffers and
pycuda device allocations, host-to-device and device-to-host copies on a pycuda stream.
``cuda_graph=True`` captures the enqueue into a CUDA graph on static buffers and replays it (what
trtexec 11 does by default).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from harness.backends import trt_api
from harness.backends.base import BackendSpec, Runner
from harness.errors import BackendUnavailable, EngineBuildError, InvalidArgument, InvalidInput, RunError, ShapeError
from harness.modelspec import ModelSpec

Buffers = Literal["torch", "pycuda"]
ALIGNMENT = 256  # bytes; TensorRT's requirement for I/O addresses


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.contiguous()
    if tensor.data_ptr() % ALIGNMENT:
        tensor = tensor.clone()  # a fresh allocation from torch's caching allocator is aligned
    return tensor


class TrtRunner(Runner):
    """Args:
        engine_path: a serialized engine (``EngineFromOnnx``'s artifact).
        label: suffix of ``name`` (``trt-<label>``), e.g. the precision.
        flavour: ``auto``, ``tensorrt`` or ``tensorrt_rtx``.
        buffers: ``torch`` (CUDA tensors in place) or ``pycuda`` (pinned host + device copies).
        model_spec: the model the engine is (its feed checks); MVSNet's when None.
    """

    def __init__(self, engine_path: str | Path, label: str = "", flavour: str = "auto", buffers: Buffers = "torch",
                 validate_values: bool = True, runtime_cache: Path | None = None, cuda_graph: bool = False,
                 model_spec: ModelSpec | None = None) -> None:
        super().__init__(validate_values, model_spec)
        self.name = f"trt-{label}" if label else "trt"
        self.info = trt_api.bind(flavour)
        self.device = trt_api.require_cuda(self.name)
        if buffers not in ("torch", "pycuda"):
            raise InvalidArgument("trt buffers", "unknown buffer mode", observed=buffers, expected="torch or pycuda")
        if cuda_graph and buffers != "torch":
            raise InvalidArgument("trt cuda_graph", "needs torch buffers", observed=buffers, expected="buffers='torch'",
                                  fix="drop --harness-trt-buffers pycuda or the CUDA graph")
        if buffers == "pycuda":
            try:
                importlib.import_module("pycuda.driver")
            except ImportError:
                raise BackendUnavailable(self.name, "pycuda not importable (buffer mode pycuda)",
                                         fix="pip install pycuda, or use the default torch buffers") from None
        self.path = Path(engine_path)
        self.buffers = buffers
        self.cuda_graph = cuda_graph
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_shapes: dict[str, tuple[int, ...]] = {}
        self._static_in: dict[str, torch.Tensor] = {}
        self._static_out: dict[str, torch.Tensor] = {}
        self.runtime_cache = runtime_cache
        self._engine: trt_api.trt.ICudaEngine | None = None
        self._context: trt_api.trt.IExecutionContext | None = None
        self._stream: torch.cuda.Stream | None = None
        self._pycuda: _PycudaBuffers | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def _prepare(self) -> None:
        trt = trt_api.trt
        self._logger = trt_api.CapturingLogger(quiet=True)
        self._runtime = trt.Runtime(self._logger)
        data = self.path.read_bytes()
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            blocker = trt_api.runtime_blocker(self.info, self.device)
            logged = (self._logger.errors() or ["no error logged"])[-1]
            if blocker is not None or "compute capability" in logged:
                raise BackendUnavailable(self.name, blocker or logged[:200],
                                         fix=f"run on a GPU the engine supports ({self.info.label} said: {logged[:200]})")
            raise EngineBuildError(str(self.path), "TensorRT could not deserialize the engine", observed=logged[:300],
                                   expected="an engine built by the same TensorRT version for this GPU",
                                   fix="delete the cache entry (it is rebuilt) or rebuild for this GPU")
        self._engine = engine
        self._context = self._create_context(engine)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._stream = torch.cuda.Stream(device=self.device)
        if self.buffers == "pycuda":
            self._pycuda = _PycudaBuffers(self.device)

    def _create_context(self, engine: trt_api.trt.ICudaEngine) -> trt_api.trt.IExecutionContext:
        """Execution context; on TensorRT-RTX with a runtime cache of JIT-compiled kernels."""
        make_config = getattr(engine, "create_runtime_config", None)
        if self.info.is_rtx and make_config is not None and self.runtime_cache is not None:
            config = make_config()
            cache = config.create_runtime_cache()
            if self.runtime_cache.is_file():
                cache.deserialize(self.runtime_cache.read_bytes())
            config.set_runtime_cache(cache)
            self._runtime_config, self._cache_object = config, cache  # keep alive with the context
            return engine.create_execution_context(config)
        return engine.create_execution_context()

    def _close(self) -> None:
        if self.runtime_cache is not None and getattr(self, "_cache_object", None) is not None:
            from harness.fileio import atomic_write_bytes

            atomic_write_bytes(self.runtime_cache, bytes(self._cache_object.serialize()))
        self._graph = None
        self._static_in, self._static_out = {}, {}
        self._context = None
        self._engine = None
        self._stream = None
        self._pycuda = None

    # -- inference ------------------------------------------------------------------------------
    def _live(self) -> tuple[trt_api.trt.ICudaEngine, trt_api.trt.IExecutionContext]:
        assert self._engine is not None and self._context is not None, "prepare() first"
        return self._engine, self._context

    def _bind_inputs(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        engine, context = self._live()
        bound = {}
        for name in self.input_names:
            tensor = feed[name]
            expected = trt_api.torch_dtype(engine.get_tensor_dtype(name))
            if tensor.dtype != expected:
                raise InvalidInput(f"{self.name}: {name}", "dtype differs from the engine's", observed=str(tensor.dtype),
                                   expected=str(expected), fix=f"cast the input with .to({expected})")
            shape = tuple(tensor.shape)
            if self._dynamic(name):
                low, _, high = (trt_api.dims_tuple(d) for d in engine.get_tensor_profile_shape(name, 0))
            else:
                low = high = trt_api.dims_tuple(engine.get_tensor_shape(name))
            if len(shape) != len(low) or any(s < a or s > b for a, s, b in zip(low, shape, high)):
                raise ShapeError(f"{self.name}: {name}", "shape outside the engine's profile", observed=shape,
                                 expected=f"between {low} and {high}", fix="rebuild the engine with a profile that covers this case")
            if not context.set_input_shape(name, shape):
                raise ShapeError(f"{self.name}: {name}", "TensorRT refused the input shape", observed=shape,
                                 expected=f"between {low} and {high}", fix="rebuild the engine with a wider profile")
            bound[name] = tensor
        return bound

    def _dynamic(self, name: str) -> bool:
        return any(d < 0 for d in trt_api.dims_tuple(self._live()[0].get_tensor_shape(name)))

    def _output_shapes(self) -> dict[str, tuple[int, ...]]:
        _, context = self._live()
        shapes = {}
        for name in self.output_names:
            shape = trt_api.dims_tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                missing = context.infer_shapes()
                raise ShapeError(f"{self.name}: {name}", "output shape unresolved", observed=shape, expected="all dimensions known",
                                 fix=f"set shapes for {missing}")
            shapes[name] = shape
        return shapes

    def _infer(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        bound = self._bind_inputs(feed)
        if self._pycuda is not None:
            return self._pycuda.run(self, bound, self._output_shapes())
        if self.cuda_graph:
            return self._replay(bound)
        assert self._stream is not None
        engine, context = self._live()
        inputs = {name: _aligned(t) for name, t in bound.items()}
        for name, tensor in inputs.items():
            context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name, shape in self._output_shapes().items():
            dtype = trt_api.torch_dtype(engine.get_tensor_dtype(name))
            outputs[name] = torch.empty(shape, dtype=dtype, device=self.device)
            context.set_tensor_address(name, outputs[name].data_ptr())
        caller = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(caller)  # inputs were produced on the caller's stream
        if not context.execute_async_v3(self._stream.cuda_stream):
            raise RunError(self.name, "execute_async_v3 failed", observed="; ".join(self._logger.errors()[-3:]),
                           expected="a successful enqueue", fix="check the TensorRT errors quoted")
        caller.wait_stream(self._stream)  # consumers of the outputs wait for TensorRT's work
        for tensor in (*inputs.values(), *outputs.values()):
            tensor.record_stream(self._stream)
        return {name: t.float() for name, t in outputs.items()}

    def _replay(self, bound: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """CUDA-graph mode: addresses and shapes stay fixed, so one normal enqueue on static
        buffers is followed by a capture on the runner's (non-default) stream; later calls copy
        the feed in, replay, and return copies of the outputs. A new shape captures again."""
        assert self._stream is not None
        engine, context = self._live()
        shapes = {name: tuple(t.shape) for name, t in bound.items()}
        caller = torch.cuda.current_stream(self.device)
        if self._graph is None or shapes != self._graph_shapes:
            self._static_in = {name: _aligned(t).clone() for name, t in bound.items()}
            self._static_out = {
                name: torch.empty(shape, dtype=trt_api.torch_dtype(engine.get_tensor_dtype(name)), device=self.device)
                for name, shape in self._output_shapes().items()
            }
            for name, tensor in (*self._static_in.items(), *self._static_out.items()):
                context.set_tensor_address(name, tensor.data_ptr())
            self._stream.wait_stream(caller)
            if not context.execute_async_v3(self._stream.cuda_stream):  # TensorRT wants one run first
                raise RunError(self.name, "execute_async_v3 failed", observed="; ".join(self._logger.errors()[-3:]),
                               expected="a successful enqueue", fix="check the TensorRT errors quoted")
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream):
                context.execute_async_v3(self._stream.cuda_stream)
            self._graph, self._graph_shapes = graph, shapes
        for name, tensor in bound.items():
            self._static_in[name].copy_(tensor)
        self._stream.wait_stream(caller)
        with torch.cuda.stream(self._stream):
            self._graph.replay()
        caller.wait_stream(self._stream)
        return {name: t.float().clone() for name, t in self._static_out.items()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "runtime": self.info.flavour, "version": self.info.version,
                "engine": str(self.path), "buffers": self.buffers, "cuda_graph": self.cuda_graph}


class _PycudaBuffers:
    """Page-locked host buffers and device allocations, reused while shapes stay the same."""

    def __init__(self, device: torch.device) -> None:
        cuda = importlib.import_module("pycuda.driver")
        cuda.init()
        # share torch's primary context instead of creating a second one (pycuda.autoinit would)
        self.cuda = cuda
        self.context = cuda.Device(device.index or 0).retain_primary_context()
        self.stream: Any = None
        self.host: dict[str, Any] = {}
        self.device_mem: dict[str, Any] = {}

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> tuple[Any, Any]:
        host = self.host.get(name)
        if host is None or host.shape != shape or host.dtype != dtype:
            self.host[name] = self.cuda.pagelocked_empty(shape, dtype)
            self.device_mem[name] = self.cuda.mem_alloc(self.host[name].nbytes)
        return self.host[name], self.device_mem[name]

    def run(self, runner: TrtRunner, inputs: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        engine, context = runner._live()
        self.context.push()
        try:
            if self.stream is None:
                self.stream = self.cuda.Stream()
            for name, tensor in inputs.items():
                array = tensor.detach().cpu().numpy()
                host, dev = self._buffer(name, array.shape, array.dtype)
                np.copyto(host, array)
                self.cuda.memcpy_htod_async(dev, host, self.stream)
                context.set_tensor_address(name, int(dev))
            outs = {}
            for name, shape in shapes.items():
                dtype = torch.empty((), dtype=trt_api.torch_dtype(engine.get_tensor_dtype(name))).numpy().dtype
                host, dev = self._buffer(name, shape, dtype)
                context.set_tensor_address(name, int(dev))
                outs[name] = host
            if not context.execute_async_v3(self.stream.handle):
                raise RunError(runner.name, "execute_async_v3 failed (pycuda buffers)", observed="see the TensorRT log",
                               expected="a successful enqueue")
            for name, host in outs.items():
                self.cuda.memcpy_dtoh_async(host, self.device_mem[name], self.stream)
            self.stream.synchronize()
            return {name: torch.from_numpy(host.copy()).float().to(runner.device) for name, host in outs.items()}
        finally:
            self.context.pop()


# -- the backends this module declares (harness.backends.registry collects them) ---------------

def _missing() -> str | None:
    try:
        trt_api.bind("auto")
        trt_api.require_cuda()
    except BackendUnavailable as exc:
        return exc.missing
    return None


def _trt(precision: str):  # type: ignore[no-untyped-def]
    def make(engine_path: str | Path, **settings: Any) -> TrtRunner:
        return TrtRunner(engine_path, label=settings.pop("label", precision), **settings)
    return make


#: Where this module's backends are listed among the registry's (harness.backends.registry).
ORDER = 30

BACKENDS = (
    BackendSpec("trt-fp32", "engine", "fp32", "cuda", _trt("fp32"), _missing, graph="fp32"),  # TF32 cleared
    BackendSpec("trt-tf32", "engine", "tf32", "cuda", _trt("tf32"), _missing, graph="fp32"),
    BackendSpec("trt-fp16", "engine", "fp16", "cuda", _trt("fp16"), _missing, graph="fp16"),  # the mixed graph
)
