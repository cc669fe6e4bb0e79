"""``EngineFromOnnx``: TensorRT engine builds, lazily, cached by content.

The network is strongly typed (TensorRT 11 and TensorRT-RTX know nothing else; TensorRT 10 gets
``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` by its symbolic name), so precision comes from
the ONNX graph: ``fp32``/``tf32`` build the FP32 graph with the TF32 builder flag cleared/set,
``fp16`` builds the mixed-precision graph (``ExportConfig(precision="fp16")``). Dynamic inputs
get one optimisation profile (``Profile``). Timing caches persist per TensorRT version and GPU
(TensorRT-RTX compiles kernels at run time and uses a runtime cache instead). The inspector's
JSON (layers, precisions) is saved beside the engine when this machine can deserialise it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from harness.backends import trt_api
from harness.convert.cache import ArtifactCache
from harness.convert.onnx_export import OnnxArtifact
from harness.convert.progress import ElapsedTicker, ProgressLine, progress_monitor
from harness.data.cases import Case
from harness.errors import BackendUnavailable, EngineBuildError, InvalidArgument
from harness.fileio import atomic_write_bytes, atomic_write_text

EnginePrecision = Literal["fp32", "tf32", "fp16"]
ENGINE_PRECISIONS: tuple[EnginePrecision, ...] = ("fp32", "tf32", "fp16")
Shape = tuple[int, ...]

# Parser error codes -> what usually fixes them.
_PARSER_FIXES = {
    "UNSUPPORTED_NODE": "run the operator audit (suites/test_export.py) and pick a workaround that avoids the operator",
    "UNSUPPORTED_NODE_ATTR": "export at opset 17 (--harness-opset 17); newer opsets rename attributes the parser misreads",
    "UNSUPPORTED_GRAPH": "export with static shapes or simplify the graph (onnxsim)",
    "INVALID_NODE": "re-export the graph; onnx.checker should pass first",
    "INVALID_GRAPH": "re-export the graph; onnx.checker should pass first",
    "MODEL_DESERIALIZE_FAILED": "the ONNX file is corrupt: delete the cache entry to re-export",
}


@dataclass(frozen=True)
class Profile:
    """min/opt/max shapes per input name (one optimisation profile)."""

    shapes: tuple[tuple[str, Shape, Shape, Shape], ...]

    @classmethod
    def static(cls, shapes: dict[str, Shape]) -> Profile:
        return cls(tuple((name, s, s, s) for name, s in shapes.items()))

    @classmethod
    def around(cls, case: Case, input_names: tuple[str, ...], low: Case, high: Case) -> Profile:
        """Dynamic H, W and D: ``low`` as min, the case as opt, ``high`` as max."""
        for bound in (low, high):
            if bound.views != case.views:
                raise InvalidArgument("engine profile", "views differ between profile bounds and the case",
                                      observed=f"{bound.views} vs {case.views}", expected="the same view count (views are not dynamic)")
        rows = []
        for name in input_names:
            lo, opt, hi = (c.input_shapes(True)[name] for c in (low, case, high))
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise InvalidArgument("engine profile", f"min <= opt <= max does not hold for {name}",
                                      observed=f"{lo} / {opt} / {hi}", expected="each dimension ordered", fix="widen the profile bounds")
            rows.append((name, lo, opt, hi))
        return cls(tuple(rows))

    def as_dict(self) -> dict[str, dict[str, list[int]]]:
        return {name: {"min": list(lo), "opt": list(opt), "max": list(hi)} for name, lo, opt, hi in self.shapes}

    def contains(self, name: str, shape: Shape) -> bool:
        for row_name, lo, _, hi in self.shapes:
            if row_name == name:
                return len(shape) == len(lo) and all(a <= s <= b for a, s, b in zip(lo, shape, hi))
        return False

    @property
    def is_static(self) -> bool:
        return all(lo == opt == hi for _, lo, opt, hi in self.shapes)


@dataclass(frozen=True)
class BuildSettings:
    precision: EnginePrecision = "fp32"
    workspace_mib: int = 4096
    optimization_level: int = 3
    timing_cache: bool = True
    flavour: str = "auto"  # tensorrt, tensorrt_rtx or auto

    def __post_init__(self) -> None:
        if self.precision not in ENGINE_PRECISIONS:
            raise InvalidArgument("engine precision", "unknown precision", observed=self.precision, expected=", ".join(ENGINE_PRECISIONS),
                                  fix="pass --harness-backends trt-fp32,trt-tf32,trt-fp16")
        if not 0 <= self.optimization_level <= 5:
            raise InvalidArgument("builder optimisation level", "out of range", observed=self.optimization_level, expected="0..5",
                                  fix="pass --harness-trt-opt-level 3")
        if self.workspace_mib < 16:
            raise InvalidArgument("workspace", "too small", observed=f"{self.workspace_mib} MiB", expected=">= 16 MiB",
                                  fix="pass --harness-trt-workspace 4096")

    def as_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "workspace_mib": self.workspace_mib,
                "optimization_level": self.optimization_level, "timing_cache": self.timing_cache}


@dataclass(frozen=True)
class EngineArtifact:
    path: Path
    sha256: str
    settings: BuildSettings
    profile: Profile
    cache_status: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def build_seconds(self) -> float:
        return float(self.meta.get("build_seconds", 0.0))

    @property
    def engine_bytes(self) -> int:
        return int(self.meta.get("bytes", 0))

    @property
    def inspector_path(self) -> Path:
        return self.path.parent / "inspector.json"


def network_flags(info: trt_api.TrtInfo) -> int:
    """Creation flags for a strongly typed network, by symbolic name (never a literal bit)."""
    trt = trt_api.trt
    if info.is_rtx or info.major >= 11:
        return 0  # always strongly typed; STRONGLY_TYPED is deprecated, ignored and renumbered there
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise EngineBuildError(info.label, "no strongly typed networks", observed=info.version, expected="TensorRT >= 10.0",
                               fix="pip install 'tensorrt>=10'")
    return 1 << int(flag)


def parser_errors(parser: trt_api.trt.OnnxParser) -> list[dict[str, str]]:
    errors = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        code = getattr(error.code(), "name", str(error.code()))
        errors.append({
            "code": code, "desc": error.desc(), "node": error.node_name() or f"#{error.node()}",
            "operator": error.node_operator(), "fix": _PARSER_FIXES.get(code, "see the TensorRT log above"),
        })
    return errors


class EngineFromOnnx:
    """Build (or fetch) the engine for ``onnx`` with ``settings`` and ``profile``.

    The cache key covers the ONNX bytes, the TensorRT module and version, the GPU name and
    compute capability, the precision, the profile and the builder settings.
    """

    def __init__(self, onnx: OnnxArtifact, settings: BuildSettings, profile: Profile, cache: ArtifactCache) -> None:
        self.onnx = onnx
        self.settings = settings
        self.profile = profile
        self.cache = cache

    def key_fields(self, info: trt_api.TrtInfo, device: torch.device) -> dict[str, Any]:
        return {
            "onnx_sha256": self.onnx.sha256,
            "trt": info.flavour, "trt_version": info.version,
            "gpu": torch.cuda.get_device_name(device), "compute_capability": trt_api.compute_capability(device),
            "profile": self.profile.as_dict(), **self.settings.as_dict(),
        }

    def _check_graph(self) -> None:
        graph_precision = self.onnx.config.precision
        wanted = "fp16" if self.settings.precision == "fp16" else "fp32"
        if graph_precision != wanted:
            raise InvalidArgument(
                f"engine {self.settings.precision}", "ONNX graph precision does not match", observed=graph_precision,
                expected=f"a {wanted} graph (strongly typed TensorRT takes precision from the graph)",
                fix=f"export with ExportConfig(precision='{wanted}')",
            )
        self.onnx.require_trt_ready()  # the audit refuses known parser failures before any build

    def __call__(self) -> EngineArtifact:
        info = trt_api.bind(self.settings.flavour)
        device = trt_api.require_cuda()
        self._check_graph()
        if self.settings.precision == "tf32" and getattr(trt_api.trt.BuilderFlag, "TF32", None) is None:
            # before any cache entry exists: a capability of this TensorRT, not a failed build
            raise BackendUnavailable(f"trt-tf32 ({info.label})", f"{info.label} has no TF32 builder flag",
                                     fix="use trt-fp32 or trt-fp16 with this TensorRT")
        entry = self.cache.get_or_build("engine", self.key_fields(info, device), "model.engine",
                                        lambda path: self._build(path, info, device))
        return EngineArtifact(entry.path, entry.sha256, self.settings, self.profile, entry.status, dict(entry.meta))

    # -- the build ------------------------------------------------------------------------------
    def _timing_cache_path(self, info: trt_api.TrtInfo, device: torch.device) -> Path:
        gpu = torch.cuda.get_device_name(device).replace(" ", "_")
        return self.cache.root / "trt-timing" / f"{info.flavour}-{info.version}-{gpu}.cache"

    def _build(self, path: Path, info: trt_api.TrtInfo, device: torch.device) -> dict[str, Any]:
        trt = trt_api.trt
        subject = f"engine {self.settings.precision} from {self.onnx.path.name} ({self.onnx.config.label})"
        logger = trt_api.CapturingLogger(quiet=True)
        builder = trt.Builder(logger)
        network = builder.create_network(network_flags(info))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(self.onnx.path.read_bytes(), str(self.onnx.path)):
            errors = parser_errors(parser)
            first = errors[0] if errors else {"code": "?", "desc": "; ".join(logger.errors()[-3:]), "node": "?",
                                              "operator": "?", "fix": "see the TensorRT log"}
            raise EngineBuildError(
                subject, "TensorRT's ONNX parser failed",
                observed="; ".join(f"{e['node']} ({e['operator']}) {e['code']}: {e['desc']}" for e in errors[:5]) or first["desc"],
                expected="a graph the parser accepts", fix=first["fix"],
            )
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.settings.workspace_mib << 20)
        config.builder_optimization_level = self.settings.optimization_level
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        tf32 = getattr(trt.BuilderFlag, "TF32", None)
        if tf32 is not None:
            if self.settings.precision == "tf32":
                config.set_flag(tf32)
            else:
                config.clear_flag(tf32)  # strict FP32 parity (TF32 is on by default)
        self._add_profile(builder, network, config, subject)
        timing_cache, cache_file = None, self._timing_cache_path(info, device)
        if self.settings.timing_cache and not info.is_rtx:
            previous = cache_file.read_bytes() if cache_file.is_file() else b""
            timing_cache = config.create_timing_cache(previous)
            config.set_timing_cache(timing_cache, False)

        line = ProgressLine(f"building {self.settings.precision} engine ({self.onnx.config.label})")
        monitor = progress_monitor(trt, line)
        if monitor is not None:
            config.progress_monitor = monitor
        started = time.perf_counter()
        if not line.enabled:  # under CI or into a log: a line when the build starts, one when it ends
            line.stream.write(f"{line.label} ...\n")
            line.stream.flush()
        with ElapsedTicker(line) if monitor is None else _nothing():
            plan = builder.build_serialized_network(network, config)
        if not line.enabled and plan is not None:
            line.stream.write(f"{line.label}: built in {time.perf_counter() - started:.1f} s\n")
            line.stream.flush()
        seconds = time.perf_counter() - started
        if plan is None:
            line.close("failed")
            raise EngineBuildError(subject, "build_serialized_network returned nothing",
                                   observed="; ".join(logger.errors()[-3:]) or "no error logged", expected="a serialized engine",
                                   fix="raise the workspace (--harness-trt-workspace) or read the TensorRT errors quoted")
        line.close("built")
        data = bytes(plan)
        atomic_write_bytes(path, data)
        meta: dict[str, Any] = {
            "trt": info.label, "build_seconds_trt": round(seconds, 3), "engine_mib": round(len(data) / 2**20, 2),
            "network_layers": network.num_layers, "inputs": [network.get_input(i).name for i in range(network.num_inputs)],
            "onnx": str(self.onnx.path), "onnx_config": self.onnx.config.label, "onnx_variant": self.onnx.variant,
        }
        if timing_cache is not None:
            atomic_write_bytes(cache_file, bytes(config.get_timing_cache().serialize()))
            meta["timing_cache"] = str(cache_file)
        meta.update(self._inspect(data, path.parent / "inspector.json"))
        return meta

    def _add_profile(self, builder: trt_api.trt.Builder, network: trt_api.trt.INetworkDefinition,
                     config: trt_api.trt.IBuilderConfig, subject: str) -> None:
        dynamic = []
        for index in range(network.num_inputs):
            tensor = network.get_input(index)
            if any(d < 0 for d in trt_api.dims_tuple(tensor.shape)):
                dynamic.append(tensor.name)
        if not dynamic:
            return
        rows = {name: (lo, opt, hi) for name, lo, opt, hi in self.profile.shapes}
        missing = [n for n in dynamic if n not in rows]
        if missing:
            raise EngineBuildError(subject, "dynamic inputs without a profile", observed=missing,
                                   expected="min/opt/max shapes for every dynamic input", fix="build with Profile.around(case, ...)")
        profile = builder.create_optimization_profile()
        for name in dynamic:
            lo, opt, hi = rows[name]
            profile.set_shape(name, trt_api.to_dims(lo), trt_api.to_dims(opt), trt_api.to_dims(hi))
        config.add_optimization_profile(profile)

    def _inspect(self, data: bytes, target: Path) -> dict[str, Any]:
        """Layer information via the engine inspector, when this machine can load the engine."""
        trt = trt_api.trt
        logger = trt_api.CapturingLogger(quiet=True)
        engine = trt.Runtime(logger).deserialize_cuda_engine(data)
        if engine is None:
            reason = (logger.errors() or ["deserialize_cuda_engine returned None"])[-1]
            return {"inspector": f"unavailable: {reason[:300]}"}
        inspector = engine.create_engine_inspector()
        text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        atomic_write_text(target, text)
        try:
            layers = json.loads(text).get("Layers", [])
        except json.JSONDecodeError:
            layers = []
        return {"inspector": str(target), "engine_layers": len(layers)}


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
