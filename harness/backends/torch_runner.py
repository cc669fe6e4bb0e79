"""PyTorch eager runner: the reference. CPU, or CUDA when present.

Precisions: ``fp32`` is strict (TF32 off for cuDNN convolutions and matmuls), ``tf32`` is
PyTorch's default on CUDA (TF32 cuDNN convolutions, FP32 matmuls), ``fp16`` is autocast. The
global TF32 flags are set around each call and restored, so one runner cannot change another's
numbers. (TF32 matmuls as well put MVSNet_pytorch's MatMul projection of the sampling grid in
TF32: measured on the H100, that moved depth by up to 91 mm, p99 3.4 mm, at the seed shape. The
harness's geometry now has no matmul (``harness/model/geometry.py``); matmuls stay FP32 here all
the same, as PyTorch's default.)
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch

from harness.backends.base import BackendSpec, Runner
from harness.backends.compiling import inductor_cache_dir, log_excerpt, quiet_compile
from harness.convert.workarounds import INPUTS_WITH_INVERSE, INPUTS_WITHOUT_INVERSE
from harness.errors import BackendUnavailable, InvalidArgument
from harness.model.mvsnet import MVSNet

Precision = Literal["fp32", "tf32", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "tf32", "fp16")
T = TypeVar("T")


@contextlib.contextmanager
def tf32_state(convolutions: bool, matmuls: bool = False) -> Iterator[None]:
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = convolutions
    torch.backends.cuda.matmul.allow_tf32 = matmuls
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class TorchRunner(Runner):
    """Runs ``MVSNet`` eagerly.

    Args:
        model: the network (moved to ``device``; not copied).
        device: ``"cpu"`` or ``"cuda[:i]"``.
        precision: see module docstring; ``tf32``/``fp16`` need CUDA.
        with_inverse: accept ``inverse_proj_matrices`` (the precomputed workaround) instead of
            inverting inside the model (``torch.inverse``, the original three-input call).
    """

    def __init__(
        self,
        model: MVSNet,
        device: str | torch.device = "cpu",
        precision: Precision = "fp32",
        with_inverse: bool = False,
        validate_values: bool = True,
    ) -> None:
        super().__init__(validate_values)
        if precision not in PRECISIONS:
            raise InvalidArgument("torch precision", "unknown precision", observed=precision, expected=" / ".join(PRECISIONS))
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"torch-{precision}", "no CUDA device", fix="run on a machine with an NVIDIA GPU")
        if precision != "fp32" and self.device.type != "cuda":
            raise BackendUnavailable(f"torch-{precision}", f"{precision} needs a CUDA device (no CUDA device)",
                                     fix="run on a GPU machine; on CPU only torch-fp32 exists")
        # a runner owns its copy on another device: moving the caller's model in place would
        # break everyone else holding it (the exporters, other runners)
        on_device = next(model.parameters()).device
        self.model = model if on_device == self.device else copy.deepcopy(model)
        self.precision = precision
        self.with_inverse = with_inverse
        self.input_names = INPUTS_WITH_INVERSE if with_inverse else INPUTS_WITHOUT_INVERSE
        self.name = f"torch-{precision}" + ("" if self.device.type == "cpu" else "-cuda")

    def _prepare(self) -> None:
        self.model.to(self.device).eval()

    def _infer(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        autocast = (
            torch.autocast("cuda", dtype=torch.float16) if self.precision == "fp16" else contextlib.nullcontext()
        )
        with torch.inference_mode(), tf32_state(self.precision == "tf32"), autocast:
            out = self.model(
                feed["imgs"], feed["proj_matrices"], feed["depth_values"], feed.get("inverse_proj_matrices")
            )
        return {k: v.float() for k, v in out.items()}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(), "runtime": "torch", "torch": torch.__version__, "precision": self.precision,
            "tf32": "cudnn convolutions" if self.precision == "tf32" else False, "inverse": "input" if self.with_inverse else "torch.inverse",
        }


#: ``torch.compile``'s modes. ``default``: Inductor's fusions with cuDNN convolutions, compiled in
#: seconds to a minute, and cached on disk. ``max-autotune-no-cudagraphs`` benchmarks Triton and
#: cuDNN candidates for every convolution and matmul: on a fresh H200 that took minutes (60
#: ``AUTOTUNE`` blocks; ``run --cases small,seed`` unfinished after 200 s), for a benchmark of
#: 3.74 ms at the seed case (torch strict FP32 26.91 ms). ``default``'s speed there is still to
#: be measured on the H200. The modes with Inductor's own CUDA graphs need ``cuda_graph=False``:
#: the runner captures one graph of the whole forward itself.
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
INDUCTOR_GRAPH_MODES = ("reduce-overhead", "max-autotune")


class TorchFastRunner(Runner):
    """The fastest torch path the harness builds, on CUDA: batch norm folded, mixed FP16 (or
    FP32), channels-last, ``torch.compile``, and CUDA-graph replay of the whole forward.

    The graph is captured on static input buffers at the first call (and again when shapes
    change); each ``infer`` copies the feed into them, replays, and returns copies of the outputs.
    The compile and the first calls for a shape (which compile) say nothing on the console:
    Inductor's, Triton's and autotuning's warnings, logs and output are kept in the record
    (``describe()["compile_log"]``).

    Args:
        compile_mode: one of ``COMPILE_MODES`` (see there), or None for no ``torch.compile``.
        cache_dir: the harness's artifact cache; Inductor caches its compile under
            ``<cache_dir>/inductor`` so a later session reuses it (None: Inductor's default
            folder; a ``$TORCHINDUCTOR_CACHE_DIR`` the user set wins).
    """

    def __init__(self, model: MVSNet, device: str | torch.device = "cuda", half: bool = True,
                 compile_mode: str | None = "default", cuda_graph: bool = True,
                 cache_dir: str | Path | None = None, validate_values: bool = True) -> None:
        super().__init__(validate_values)
        self.device = torch.device(device)
        self.precision = "fp16" if half else "fp32"
        self.name = f"torch-fast-{self.precision}"
        if compile_mode is not None and compile_mode not in COMPILE_MODES:
            raise InvalidArgument(f"{self.name}: compile_mode", "unknown torch.compile mode", observed=compile_mode,
                                  expected=" / ".join(COMPILE_MODES) + " or None (no torch.compile)",
                                  fix="pass one of torch.compile's modes")
        if cuda_graph and compile_mode in INDUCTOR_GRAPH_MODES:
            raise InvalidArgument(f"{self.name}: compile_mode", "Inductor's CUDA graphs inside the runner's own capture",
                                  observed=compile_mode, expected="a mode without CUDA graphs while cuda_graph=True",
                                  fix="use max-autotune-no-cudagraphs or default, or pass cuda_graph=False")
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise BackendUnavailable(self.name, "no CUDA device (torch.compile + CUDA graphs path)",
                                     fix="run on a GPU machine; on CPU use torch-fp32")
        self.source = model
        self.half = half
        self.compile_mode = compile_mode
        self.cuda_graph = cuda_graph
        self.inductor_cache = inductor_cache_dir(cache_dir) if compile_mode else None
        self.input_names = INPUTS_WITHOUT_INVERSE
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_in: dict[str, torch.Tensor] = {}
        self._static_out: dict[str, torch.Tensor] = {}
        self._warm: set[tuple[tuple[int, ...], ...]] = set()  # feed shapes compiled for (no CUDA graph)
        self._log: list[str] = []
        self._compile_s = 0.0

    def _quietly(self, work: Callable[[], T]) -> T:
        """``work`` with Inductor's cache in the harness's and what it says in the record."""
        started = time.perf_counter()
        try:
            return quiet_compile(work, self._log, self.inductor_cache)
        finally:
            self._compile_s += time.perf_counter() - started

    def _prepare(self) -> None:
        from harness.model.fast import fast_model

        self.model = fast_model(self.source, self.device, half=self.half)
        mode = self.compile_mode
        self.fn = self._quietly(lambda: torch.compile(self.model, mode=mode, dynamic=False)) if mode else self.model

    def _call(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode(), tf32_state(False):
            return self.fn(feed["imgs"], feed["proj_matrices"], feed["depth_values"])

    def _capture(self, feed: dict[str, torch.Tensor]) -> None:
        self._static_in = {k: v.clone() for k, v in feed.items()}
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):  # compile, autotune and warm up outside the capture
                self._call(self._static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._static_out = self._call(self._static_in)
        self._graph = graph

    def _infer(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.cuda_graph:
            shapes = tuple(tuple(v.shape) for v in feed.values())
            if shapes in self._warm:
                return {k: v.float() for k, v in self._call(feed).items()}
            out = self._quietly(lambda: self._call(feed))  # a new shape compiles (again)
            self._warm.add(shapes)
            return {k: v.float() for k, v in out.items()}
        if self._graph is None or any(self._static_in[k].shape != v.shape for k, v in feed.items()):
            self._quietly(lambda: self._capture(feed))
        for name, tensor in feed.items():
            self._static_in[name].copy_(tensor)
        assert self._graph is not None
        self._graph.replay()
        return {k: v.float().clone() for k, v in self._static_out.items()}

    def _close(self) -> None:
        self._graph = None
        self._static_in, self._static_out = {}, {}
        self._warm.clear()

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "runtime": "torch", "torch": torch.__version__, "precision": self.precision,
                "compile_mode": self.compile_mode, "cuda_graph": self.cuda_graph, "batch_norm": "folded",
                "inductor_cache": str(self.inductor_cache) if self.inductor_cache else None,
                "compile_seconds": round(self._compile_s, 3), "compile_log": log_excerpt(self._log),
                "memory_format": "channels_last(_3d)"}


# -- the backends this module declares (harness.backends.registry collects them) ---------------

def _cuda_missing() -> str | None:
    return None if torch.cuda.is_available() else "no CUDA device"


def _eager(precision: Precision):  # type: ignore[no-untyped-def]
    def make(model: MVSNet, **settings: Any) -> TorchRunner:
        return TorchRunner(model, settings.pop("device", "cpu"), precision, **settings)
    return make


def _fast(model: MVSNet, **settings: Any) -> TorchFastRunner:
    return TorchFastRunner(model, settings.pop("device", "cuda"), half=True, **settings)


#: Where this module's backends are listed among the registry's (harness.backends.registry).
ORDER = 0

BACKENDS = (
    # the reference, and PyTorch's own reduced-precision modes (bench and attribution hops)
    BackendSpec("torch-fp32", "model", "fp32", "cpu", _eager("fp32"), lambda: None, candidate=False),
    BackendSpec("torch-tf32", "model", "tf32", "cuda", _eager("tf32"), _cuda_missing, candidate=False),
    BackendSpec("torch-fp16", "model", "fp16", "cuda", _eager("fp16"), _cuda_missing, candidate=False),
    # the fast deployment path (folded batch norm, FP16 convolutions, torch.compile, CUDA graph)
    # timed at its best compile: the default mode (what run and pytest compile, in seconds) measured
    # 6.25 ms at the seed case and 44.06 ms at DTU on an H200, max-autotune-no-cudagraphs 3.79 / 30.06
    # ms (its minutes of autotuning paid once, then cached with the artifacts)
    BackendSpec("torch-fast-fp16", "model", "fp16", "cuda", _fast, _cuda_missing, context=("cache_dir",),
                bench_settings={"compile_mode": "max-autotune-no-cudagraphs"}),
)
