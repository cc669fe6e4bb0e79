"""A fake ``tensorrt`` (TensorRT 10/11) or ``tensorrt_rtx`` module for CPU tests of the TensorRT leg.

Not a test module (pytest collects ``test_*.py``): the test files load it by path, since pytest
runs with ``--import-mode=importlib`` and ``tests/`` is no package.

``FakeTensorRT(...)`` is a module object with the names of the TensorRT 10/11 Python API the
harness uses, and nothing else: API removed in TensorRT 10 (``get_binding_index``,
``execute_async_v2``, ``build_engine``, ``max_workspace_size`` ...) does not exist here, and the
builder config, like a pybind11 object, refuses unknown attributes. Every call is recorded in
``fake.calls`` (``fake.called(name)`` lists the arguments of each call of ``name``).

The parser reads the real ONNX bytes (input names, shapes with -1 for symbolic dimensions,
dtypes, one layer per node). A "plan" is a small self-describing blob (magic, JSON header,
padding) that the fake ``Runtime`` deserialises into an engine with name-based I/O; a truncated
or foreign plan fails to deserialise with a logged error, as in TensorRT.

``install(monkeypatch, *fakes)`` binds fakes into ``harness.backends.trt_api``;
``fake_cuda(monkeypatch, ...)`` fakes the CUDA device the TensorRT leg asks torch about.
Pass ``None`` instead of a monkeypatch to assign for good (in a subprocess).
"""

from __future__ import annotations

import enum
import json
import os
import time
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import onnx

H100 = "NVIDIA H100 80GB HBM3"
PLAN_MAGIC = b"FAKE-TRT-PLAN\n"
CC_ERROR = ("The engine cannot run on this GPU, which has compute capability 9.0. Supported compute "
            "capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0")
DEFAULT_VERSIONS = {"tensorrt": "10.13.0.35", "tensorrt_rtx": "1.7.1.116"}


# -- enums and small value types (shared by every fake) ----------------------------------------

class Severity(enum.Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9
    FP4 = 10


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    TACTIC_SHARED_MEMORY = 4


class ProfilingVerbosity(enum.Enum):
    LAYER_NAMES_ONLY = 0
    NONE = 1
    DETAILED = 2


class LayerInformationFormat(enum.Enum):
    ONELINE = 0
    JSON = 1


class ErrorCode(enum.Enum):
    SUCCESS = 0
    INTERNAL_ERROR = 1
    MEM_ALLOC_FAILED = 2
    MODEL_DESERIALIZE_FAILED = 3
    INVALID_VALUE = 4
    INVALID_GRAPH = 5
    INVALID_NODE = 6
    UNSUPPORTED_GRAPH = 7
    UNSUPPORTED_NODE = 8
    UNSUPPORTED_NODE_ATTR = 9


_ONNX_TYPES = {1: DataType.FLOAT, 10: DataType.HALF, 16: DataType.BF16, 3: DataType.INT8, 6: DataType.INT32,
               7: DataType.INT64, 9: DataType.BOOL, 2: DataType.UINT8}


class ILogger:
    """Subclassable like the pybind11 trampoline: subclasses must call ``__init__`` and define ``log``."""

    Severity = Severity

    def __init__(self) -> None:
        self._initialised = True

    def log(self, severity: Severity, msg: str) -> None:
        raise NotImplementedError("ILogger.log is pure virtual")


class IProgressMonitor:
    def __init__(self) -> None:
        self._initialised = True

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        raise NotImplementedError

    def step_complete(self, phase_name: str, step: int) -> bool:
        raise NotImplementedError

    def phase_finish(self, phase_name: str) -> None:
        raise NotImplementedError


class Dims(tuple):
    """``trt.Dims(list)``: a sequence of ints, -1 for a runtime dimension."""

    def __new__(cls, shape: Iterable[int] = ()) -> Dims:
        return super().__new__(cls, tuple(int(d) for d in shape))

    def __repr__(self) -> str:
        return f"Dims({list(self)})"


class HostMemory:
    """``trt.IHostMemory``: bytes-like (``bytes(plan)``)."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self.nbytes = len(self._data)

    def __bytes__(self) -> bytes:
        return self._data

    def __len__(self) -> int:
        return self.nbytes


class ParserError:
    def __init__(self, code: ErrorCode, desc: str, node: int = -1, node_name: str = "", node_operator: str = "") -> None:
        self._code, self._desc, self._node, self._name, self._op = code, desc, node, node_name, node_operator

    def code(self) -> ErrorCode:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._name

    def node_operator(self) -> str:
        return self._op

    def file(self) -> str:
        return "ModelImporter.cpp"

    def line(self) -> int:
        return 0

    def func(self) -> str:
        return "parseNode"


# -- the module --------------------------------------------------------------------------------

class FakeTensorRT(types.ModuleType):
    """A fresh fake module. Options (all keyword):

    strongly_typed: value of ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (default 1 for 10.x,
        0 for 11.x and RTX, as renumbered there); ``None``: no such member (TensorRT < 9).
    tf32: whether ``BuilderFlag.TF32`` exists. progress_monitor: whether ``IProgressMonitor`` exists.
    unsupported_ops: ONNX op types the parser refuses (UNSUPPORTED_NODE, one error per node).
    parse_logged_error: parse fails with no parser errors, only this logged error.
    build_error: ``build_serialized_network`` logs this error and returns None.
    build_delay: seconds a build takes. build_log: file that gets one line per build.
    deserialize_error: ``deserialize_cuda_engine`` logs this error and returns None.
    plan_padding: bytes added to each plan (for engine sizes). execute_ok: what execute_async_v3 returns.
    """

    def __init__(self, flavour: str = "tensorrt", version: str | None = None, *,
                 strongly_typed: int | None | str = "default", tf32: bool = True, progress_monitor: bool = True,
                 unsupported_ops: Iterable[str] = (), parse_logged_error: str | None = None,
                 build_error: str | None = None, build_delay: float = 0.0, build_log: str | os.PathLike[str] | None = None,
                 deserialize_error: str | None = None, plan_padding: int = 0, execute_ok: bool = True) -> None:
        super().__init__(flavour)
        self.__version__ = version or DEFAULT_VERSIONS[flavour]
        self.flavour = flavour
        self.major = int(self.__version__.split(".")[0])
        new_numbering = flavour == "tensorrt_rtx" or self.major >= 11
        if strongly_typed == "default":
            strongly_typed = 0 if new_numbering else 1
        self.unsupported_ops = frozenset(unsupported_ops)
        self.parse_logged_error = parse_logged_error
        self.build_error = build_error
        self.build_delay = build_delay
        self.build_log = build_log
        self.deserialize_error = deserialize_error
        self.plan_padding = plan_padding
        self.execute_ok = execute_ok
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.networks: list[INetworkDefinition] = []
        self.configs: list[IBuilderConfig] = []
        self.profiles: list[IOptimizationProfile] = []
        self.plans: list[bytes] = []
        self.engines: list[ICudaEngine] = []
        self.contexts: list[IExecutionContext] = []
        self.monitor_returns: list[bool] = []

        # enums that differ by version
        if strongly_typed is None:
            flags = {"EXPLICIT_BATCH": 0}
        elif new_numbering:
            flags = {"STRONGLY_TYPED": int(strongly_typed)}
            flags.update({n: v for n, v in (("PREFER_JIT_PYTHON_PLUGINS", 1), ("PREFER_AOT_PYTHON_PLUGINS", 2))
                          if v != strongly_typed})
        else:
            flags = {"STRONGLY_TYPED": int(strongly_typed)}
            if strongly_typed != 0:
                flags["EXPLICIT_BATCH"] = 0
        self.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", flags)
        builder_flags = {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 5, "DISABLE_TIMING_CACHE": 6,
                         "DIRECT_IO": 11, "EDITABLE_TIMING_CACHE": 25}
        if tf32:
            builder_flags["TF32"] = 7
        if not new_numbering:  # weak typing flags: deprecated in 10.12, removed in 11
            builder_flags.update({"FP16": 0, "INT8": 1, "BF16": 17, "FP8": 18})
        self.BuilderFlag = enum.IntEnum("BuilderFlag", builder_flags)

        self.Severity = Severity
        self.ILogger = ILogger
        if progress_monitor:
            self.IProgressMonitor = IProgressMonitor
        self.Dims = Dims
        self.DataType = DataType
        self.TensorIOMode = TensorIOMode
        self.MemoryPoolType = MemoryPoolType
        self.ProfilingVerbosity = ProfilingVerbosity
        self.LayerInformationFormat = LayerInformationFormat
        self.ErrorCode = ErrorCode
        for alias, member in (("float32", "FLOAT"), ("float16", "HALF"), ("int32", "INT32"), ("int64", "INT64"),
                              ("bool", "BOOL"), ("int8", "INT8"), ("uint8", "UINT8"), ("bfloat16", "BF16")):
            setattr(self, alias, DataType[member])
        # classes whose instances need this fake: per-fake subclasses
        self.Builder = type("Builder", (Builder,), {"fake": self})
        self.OnnxParser = type("OnnxParser", (OnnxParser,), {"fake": self})
        self.Runtime = type("Runtime", (Runtime,), {"fake": self})

    # -- records --------------------------------------------------------------------------------
    def record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for call, args in self.calls if call == name]

    @property
    def build_count(self) -> int:
        return len(self.plans)

    # -- plans ----------------------------------------------------------------------------------
    def make_plan(self, io: Sequence[dict[str, Any]], layers: Sequence[dict[str, Any]] = (),
                  settings: dict[str, Any] | None = None, padding: int | None = None) -> bytes:
        """A plan this fake (same flavour and version) deserialises into an engine with ``io``.

        Each ``io`` entry: ``name``, ``mode`` (INPUT/OUTPUT), ``shape`` (-1 dynamic), ``dtype``
        (a DataType name), for dynamic inputs ``profile`` ([min, opt, max]), for outputs an
        optional ``rule``: per dimension an int or ``[input, axis, divisor]``.
        """
        pad = self.plan_padding if padding is None else padding
        header = {"flavour": self.flavour, "version": self.__version__, "io": list(io), "layers": list(layers),
                  "settings": settings or {}, "padding": pad}
        return PLAN_MAGIC + json.dumps(header).encode() + b"\n" + b"\0" * pad


# -- builder side ------------------------------------------------------------------------------

class ITensor:
    def __init__(self, name: str, shape: Sequence[int], dtype: DataType) -> None:
        self.name = name
        self.shape = Dims(shape)
        self.dtype = dtype


class INetworkDefinition:
    def __init__(self, fake: FakeTensorRT, flags: int) -> None:
        self.fake = fake
        self.flags = flags
        self.inputs: list[ITensor] = []
        self.outputs: list[ITensor] = []
        self.layers: list[dict[str, str]] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_input(self, index: int) -> ITensor:
        self.fake.record("get_input", index)
        return self.inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self.outputs[index]


def _value_info(value: onnx.ValueInfoProto) -> tuple[str, list[int], DataType]:
    kind = value.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in kind.shape.dim]
    return value.name, shape, _ONNX_TYPES.get(kind.elem_type, DataType.FLOAT)


class OnnxParser:
    fake: ClassVar[FakeTensorRT]

    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        if not isinstance(network, INetworkDefinition) or not isinstance(logger, ILogger):
            raise TypeError("OnnxParser(): incompatible constructor arguments")
        self.network = network
        self.logger = logger
        self.errors: list[ParserError] = []
        self.fake.record("OnnxParser", network, logger)

    def parse(self, model: bytes, path: str | None = None) -> bool:
        self.fake.record("parse", bytes(model), path)
        if self.fake.parse_logged_error is not None:
            self.logger.log(Severity.ERROR, self.fake.parse_logged_error)
            return False
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as exc:  # noqa: BLE001 - the parser reports any decode failure as an error
            self.errors.append(ParserError(ErrorCode.MODEL_DESERIALIZE_FAILED, f"Failed to parse ONNX model: {exc}"))
            return False
        initializers = {i.name for i in proto.graph.initializer}
        for value in proto.graph.input:
            if value.name not in initializers:
                self.network.inputs.append(ITensor(*_value_info(value)))
        for value in proto.graph.output:
            self.network.outputs.append(ITensor(*_value_info(value)))
        for index, node in enumerate(proto.graph.node):
            name = node.name or f"node{index}"
            self.network.layers.append({"Name": name, "LayerType": node.op_type})
            if node.op_type in self.fake.unsupported_ops:
                self.errors.append(ParserError(
                    ErrorCode.UNSUPPORTED_NODE, f"No importer registered for op: {node.op_type}", index, name,
                    node.op_type))
        return not self.errors

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> ParserError:
        return self.errors[index]

    def clear_errors(self) -> None:
        self.errors.clear()


class IOptimizationProfile:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake
        self.shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:  # noqa: A002
        if not all(isinstance(d, Dims) for d in (min, opt, max)):
            raise TypeError("set_shape(): shapes must be trt.Dims")
        self.fake.record("set_shape", input, min, opt, max)
        self.shapes[input] = (Dims(min), Dims(opt), Dims(max))

    def get_shape(self, input: str) -> list[Dims]:  # noqa: A002
        return list(self.shapes[input])


class ITimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def serialize(self) -> HostMemory:
        return HostMemory(self.data + b"timing-entry;")


class IBuilderConfig:
    """Like a pybind11 object: setting an attribute the API does not have raises AttributeError."""

    __slots__ = ("fake", "pool_limits", "builder_optimization_level", "profiling_verbosity", "flags",
                 "timing_cache", "profiles", "progress_monitor")

    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake
        self.pool_limits: dict[MemoryPoolType, int] = {}
        self.builder_optimization_level = 3
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
        tf32 = getattr(fake.BuilderFlag, "TF32", None)
        self.flags: set[Any] = {tf32} if tf32 is not None else set()  # TF32 is on by default
        self.timing_cache: ITimingCache | None = None
        self.profiles: list[IOptimizationProfile] = []
        self.progress_monitor: Any = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self.fake.record("set_memory_pool_limit", pool, pool_size)
        self.pool_limits[pool] = int(pool_size)

    def set_flag(self, flag: Any) -> None:
        self.fake.record("set_flag", flag)
        self.flags.add(flag)

    def clear_flag(self, flag: Any) -> None:
        self.fake.record("clear_flag", flag)
        self.flags.discard(flag)

    def get_flag(self, flag: Any) -> bool:
        return flag in self.flags

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        self.fake.record("create_timing_cache", bytes(serialized_timing_cache))
        return ITimingCache(serialized_timing_cache)

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self.fake.record("set_timing_cache", cache, ignore_mismatch)
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self.timing_cache

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.fake.record("add_optimization_profile", profile)
        self.profiles.append(profile)
        return len(self.profiles) - 1


class Builder:
    fake: ClassVar[FakeTensorRT]

    def __init__(self, logger: ILogger) -> None:
        if not isinstance(logger, ILogger) or not getattr(logger, "_initialised", False):
            raise TypeError("Builder(): the logger must be an initialised trt.ILogger")
        self.logger = logger
        self.fake.record("Builder", logger)

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        self.fake.record("create_network", flags)
        network = INetworkDefinition(self.fake, int(flags))
        self.fake.networks.append(network)
        return network

    def create_builder_config(self) -> IBuilderConfig:
        self.fake.record("create_builder_config")
        config = IBuilderConfig(self.fake)
        self.fake.configs.append(config)
        return config

    def create_optimization_profile(self) -> IOptimizationProfile:
        self.fake.record("create_optimization_profile")
        profile = IOptimizationProfile(self.fake)
        self.fake.profiles.append(profile)
        return profile

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> HostMemory | None:
        fake = self.fake
        fake.record("build_serialized_network", network, config)
        monitor = config.progress_monitor
        if monitor is not None:
            if not isinstance(monitor, IProgressMonitor) or not getattr(monitor, "_initialised", False):
                raise TypeError("progress_monitor must be an initialised trt.IProgressMonitor")
            monitor.phase_start("Building engine", None, 3)
            for step in range(3):
                keep_going = monitor.step_complete("Building engine", step)
                fake.monitor_returns.append(keep_going)
                if not keep_going:
                    self.logger.log(Severity.ERROR, "Build cancelled by the progress monitor")
                    return None
            monitor.phase_finish("Building engine")
        if fake.build_delay:
            time.sleep(fake.build_delay)
        if fake.build_log is not None:
            with open(fake.build_log, "a") as handle:
                handle.write(f"built {os.getpid()}\n")
        if fake.build_error is not None:
            self.logger.log(Severity.ERROR, fake.build_error)
            return None
        profiled = {name for p in config.profiles for name in p.shapes}
        io: list[dict[str, Any]] = []
        for tensor in network.inputs:
            entry: dict[str, Any] = {"name": tensor.name, "mode": "INPUT", "shape": list(tensor.shape),
                                     "dtype": tensor.dtype.name}
            if any(d < 0 for d in tensor.shape):
                if tensor.name not in profiled:
                    self.logger.log(Severity.ERROR, f"Network has dynamic or shape inputs, but no optimization "
                                                    f"profile has been defined (input {tensor.name}).")
                    return None
                lo, opt, hi = config.profiles[0].shapes[tensor.name]
                entry["profile"] = [list(lo), list(opt), list(hi)]
            io.append(entry)
        for tensor in network.outputs:
            io.append({"name": tensor.name, "mode": "OUTPUT", "shape": list(tensor.shape), "dtype": tensor.dtype.name})
        settings = {
            "network_flags": network.flags, "flags": sorted(f.name for f in config.flags),
            "workspace": config.pool_limits.get(MemoryPoolType.WORKSPACE),
            "optimization_level": config.builder_optimization_level,
            "profiling_verbosity": config.profiling_verbosity.name,
        }
        plan = fake.make_plan(io, layers=network.layers, settings=settings)
        fake.plans.append(plan)
        return HostMemory(plan)


# -- runtime side ------------------------------------------------------------------------------

class Runtime:
    fake: ClassVar[FakeTensorRT]

    def __init__(self, logger: ILogger) -> None:
        if not isinstance(logger, ILogger) or not getattr(logger, "_initialised", False):
            raise TypeError("Runtime(): the logger must be an initialised trt.ILogger")
        self.logger = logger
        self.fake.record("Runtime", logger)

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        fake = self.fake
        data = bytes(serialized_engine)
        fake.record("deserialize_cuda_engine", len(data))
        if fake.deserialize_error is not None:
            self.logger.log(Severity.ERROR, fake.deserialize_error)
            return None
        if not data.startswith(PLAN_MAGIC):
            self.logger.log(Severity.ERROR, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                            "(Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
            return None
        head, _, padding = data[len(PLAN_MAGIC):].partition(b"\n")
        try:
            spec = json.loads(head)
        except json.JSONDecodeError:
            spec = None
        if spec is None or len(padding) != spec["padding"]:
            self.logger.log(Severity.ERROR, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                            "(Serialization assertion sizeRead == size failed.)")
            return None
        if (spec["flavour"], spec["version"]) != (fake.flavour, fake.__version__):
            self.logger.log(Severity.ERROR, "IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The "
                                            f"engine plan file is not compatible with this version of TensorRT, "
                                            f"expecting library version {fake.__version__} got {spec['version']})")
            return None
        engine_class = RtxCudaEngine if fake.flavour == "tensorrt_rtx" else ICudaEngine
        engine = engine_class(fake, spec)
        fake.engines.append(engine)
        return engine


class ICudaEngine:
    def __init__(self, fake: FakeTensorRT, spec: dict[str, Any]) -> None:
        self.fake = fake
        self.spec = spec
        self.io = {entry["name"]: entry for entry in spec["io"]}
        self.names = [entry["name"] for entry in spec["io"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    @property
    def num_layers(self) -> int:
        return len(self.spec["layers"])

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        self.fake.record("get_tensor_mode", name)
        entry = self.io.get(name)
        return TensorIOMode[entry["mode"]] if entry else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self.io[name]["dtype"]]

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(self.io[name]["shape"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        self.fake.record("get_tensor_profile_shape", name, profile_index)
        entry = self.io[name]
        if entry["mode"] != "INPUT" or profile_index != 0:
            raise RuntimeError(f"get_tensor_profile_shape: {name} is not an input of profile {profile_index}")
        rows = entry.get("profile") or [entry["shape"]] * 3
        return [Dims(row) for row in rows]

    def create_execution_context(self, config: Any = None) -> IExecutionContext:
        self.fake.record("create_execution_context", config)
        context = IExecutionContext(self)
        self.fake.contexts.append(context)
        return context

    def create_engine_inspector(self) -> IEngineInspector:
        self.fake.record("create_engine_inspector")
        return IEngineInspector(self)

    def serialize(self) -> HostMemory:
        return HostMemory(self.fake.make_plan(self.spec["io"], self.spec["layers"], self.spec["settings"]))


class IRuntimeCache:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake
        self.data = b""

    def deserialize(self, data: bytes) -> bool:
        self.fake.record("runtime_cache.deserialize", bytes(data))
        self.data = bytes(data)
        return True

    def serialize(self) -> HostMemory:
        return HostMemory(self.data + b"jit-kernels;")


class IRuntimeConfig:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake
        self.cache: IRuntimeCache | None = None

    def create_runtime_cache(self) -> IRuntimeCache:
        self.fake.record("create_runtime_cache")
        return IRuntimeCache(self.fake)

    def set_runtime_cache(self, cache: IRuntimeCache) -> bool:
        self.fake.record("set_runtime_cache", cache)
        self.cache = cache
        return True


class RtxCudaEngine(ICudaEngine):
    """TensorRT-RTX engines also offer runtime configs (JIT kernel caches)."""

    def create_runtime_config(self) -> IRuntimeConfig:
        self.fake.record("create_runtime_config")
        return IRuntimeConfig(self.fake)


class IEngineInspector:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.execution_context: Any = None

    def get_engine_information(self, format: LayerInformationFormat) -> str:  # noqa: A002
        self.engine.fake.record("get_engine_information", format)
        layers = self.engine.spec["layers"]
        if format == LayerInformationFormat.JSON:
            return json.dumps({"Layers": layers, "Bindings": self.engine.names})
        return "\n".join(layer["Name"] for layer in layers)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.fake = engine.fake
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def _inside(self, name: str, shape: tuple[int, ...]) -> bool:
        entry = self.engine.io[name]
        low, _, high = entry.get("profile") or [entry["shape"]] * 3
        return len(shape) == len(low) and all(a <= s <= b for a, s, b in zip(low, shape, high))

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        shape = tuple(int(d) for d in shape)
        self.fake.record("set_input_shape", name, shape)
        if self.engine.io.get(name, {}).get("mode") != "INPUT" or not self._inside(name, shape):
            return False
        self.input_shapes[name] = shape
        return True

    def _dynamic_inputs(self) -> list[str]:
        return [n for n, e in self.engine.io.items() if e["mode"] == "INPUT" and any(d < 0 for d in e["shape"])]

    def get_tensor_shape(self, name: str) -> Dims:
        entry = self.engine.io[name]
        if entry["mode"] == "INPUT":
            return Dims(self.input_shapes.get(name, entry["shape"]))
        if any(n not in self.input_shapes for n in self._dynamic_inputs()):
            return Dims(entry["shape"])  # -1 until every runtime-shaped input has its shape
        rule = entry.get("rule") or entry["shape"]
        dims = []
        for item in rule:
            if isinstance(item, list):
                source, axis, divisor = item
                dims.append(self.input_shapes.get(source, self.engine.io[source]["shape"])[axis] // divisor)
            else:
                dims.append(int(item))
        return Dims(dims)

    def infer_shapes(self) -> list[str]:
        return [n for n in self._dynamic_inputs() if n not in self.input_shapes]

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.fake.record("set_tensor_address", name, memory)
        self.addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self.addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.fake.record("execute_async_v3", stream_handle)
        return self.fake.execute_ok


# -- binding into the harness ------------------------------------------------------------------

def _setter(patch: Any) -> Callable[[Any, str, Any], None]:
    return patch.setattr if patch is not None else setattr


def install(patch: Any, *fakes: FakeTensorRT) -> Callable[[str], Any]:
    """Make ``trt_api.bind()`` find ``fakes`` (by flavour) and nothing else; forget any earlier
    binding. ``patch``: a pytest MonkeyPatch (undone after the test) or None. Returns the
    replacement ``_import`` (it counts its calls in ``.imports``)."""
    from harness.backends import trt_api

    by_flavour = {fake.flavour: fake for fake in fakes}
    imports: list[str] = []

    def _import(flavour: str) -> Any:
        imports.append(flavour)
        if flavour not in by_flavour:
            raise ModuleNotFoundError(f"No module named '{flavour}'")
        return by_flavour[flavour]

    _import.imports = imports  # type: ignore[attr-defined]
    set_ = _setter(patch)
    set_(trt_api, "_import", _import)
    set_(trt_api, "_bound", None)
    set_(trt_api, "trt", None)
    if patch is not None:
        patch.delenv(trt_api.ENV_FLAVOUR, raising=False)
    else:
        os.environ.pop(trt_api.ENV_FLAVOUR, None)
    return _import


class FakeStream:
    """Stands in for ``torch.cuda.Stream`` (construction only; nothing can run on it here)."""

    def __init__(self, device: Any = None, priority: int = 0) -> None:
        self.device = device
        self.cuda_stream = 0x5EED


def fake_cuda(patch: Any, name: str = H100, cc: str = "9.0", index: int = 0) -> Any:
    """A CUDA device as the TensorRT leg sees it: ``trt_api.require_cuda``,
    ``trt_api.compute_capability``, ``torch.cuda.get_device_name`` and ``torch.cuda.Stream``."""
    import torch

    from harness.backends import trt_api

    device = torch.device("cuda", index)
    set_ = _setter(patch)
    set_(trt_api, "require_cuda", lambda backend="trt": device)
    set_(trt_api, "compute_capability", lambda device=None: cc)
    set_(torch.cuda, "get_device_name", lambda device=None: name)
    set_(torch.cuda, "Stream", FakeStream)
    return device

