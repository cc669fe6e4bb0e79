"""The one place that wires the chain: weights -> torch model -> ONNX (raw, simplified; FP32 or
mixed FP16) -> TensorRT engines -> runners on every backend, for a case (shape + data) and an
inverse workaround.

``plugin.py`` (pytest) and ``cli.py`` (``python -m harness``) are thin fronts over ``Chain``, so
the gate and the main job cannot drift apart. Everything expensive is built once per ``Chain``
(the pytest session) and cached on disk by content across sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harness.backends import registry
from harness.backends.base import Runner
from harness.convert.cache import ArtifactCache
from harness.convert.mixed import MixedOnnxFromOnnx
from harness.convert.onnx_export import EXPORTERS, ExportConfig, OnnxArtifact, OnnxFromTorch, SimplifiedOnnxFromOnnx
from harness.convert.workarounds import EXPORTABLE, get_workaround
from harness.data.cases import CASES, Case, case_feed, case_views, get_case
from harness.data.families import FAMILIES
from harness.data.views import Views
from harness.errors import BackendUnavailable, InvalidArgument
from harness.hostmem import give_back

if TYPE_CHECKING:
    from harness.convert.engine import EngineArtifact
    from harness.report.replay import Replay
from harness.gates.limits import Tolerances, machine_class
from harness.model.checkpoint import load_checkpoint, state_dict_digest
from harness.model.mvsnet import MVSNet
from harness.options import chain_fields
from harness.vocabulary import VARIANTS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_WEIGHTS = PROJECT_ROOT / "fixtures" / "weights" / "mvsnet-default.ckpt"
#: Candidates compared with torch strict FP32: every backend the registry (harness.backends)
#: declares as one. ``-fp16`` ORT legs run the mixed-precision graph that the TensorRT fp16 engine
#: is built from (a cross-check of that graph on another runtime); ``ort-cuda-default`` is ONNX
#: Runtime as shipped (its default CUDA options: TF32 allowed); ``torch-fast-fp16`` is the fast
#: torch path (it consumes the model, so it is not crossed with graph variants).
CANDIDATES = registry.names(candidates_only=True)
#: The variant, workaround and exporter of a leg whose backend consumes the torch model.
MODEL_LEG = ("model", "none", "none")
#: What the harness's comma-list options may name (harness.options: their help, defaults and checks,
#: the same on both fronts).
OPTION_NAMES: dict[str, tuple[str, ...]] = {"cases": tuple(CASES), "backends": CANDIDATES, "workarounds": EXPORTABLE,
                                            "exporters": EXPORTERS, "variants": VARIANTS, "families": FAMILIES}


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable("device", "no CUDA device", fix="run with --device cpu, or on a GPU machine")
    if not (device == "cpu" or device.startswith("cuda")):
        raise InvalidArgument("device", "unknown device", observed=device, expected="auto, cpu, cuda or cuda:N")
    return torch.device(device)


@dataclass(frozen=True)
class ChainConfig:
    weights: Path | None = None  # None: the bundled default checkpoint
    scene: Path | None = None  # None: the bundled synthetic scene
    cache_dir: Path | None = None  # None: harness.convert.cache.default_cache_dir()
    device: str = "auto"
    opset: int = 17
    trt_flavour: str = "auto"  # tensorrt, tensorrt_rtx or auto
    trt_workspace_mib: int = 4096
    trt_opt_level: int = 3
    trt_dynamic: bool = False  # one optimisation profile over H, W and D instead of static shapes
    trt_buffers: str = "torch"  # or pycuda
    trt_cuda_graph: bool = False  # replay the enqueue from a CUDA graph
    align_corners: bool = True  # the reference's sampling convention (harness.model.geometry)

    @classmethod
    def from_options(cls, parsed: Mapping[str, Any]) -> ChainConfig:
        """The config of parsed option values by name (harness.options.parsed_values): how pytest
        and every ``python -m harness`` command build theirs."""
        return cls(**chain_fields(parsed))


@dataclass(frozen=True)
class Leg:
    """One parity comparison: a candidate backend against the torch reference on one case."""

    candidate: str  # runner family+target: ort-cpu, ort-cuda, trt-fp32, ...
    variant: str  # ONNX graph: raw or simplified
    workaround: str
    exporter: str
    case: str
    reference: str = "torch-fp32"

    @property
    def id(self) -> str:
        if self.consumes == "model":
            return f"{self.candidate}-vs-{self.reference}-{self.case}"
        return f"{self.candidate}-{self.variant}-vs-{self.reference}-{self.workaround}-{self.exporter}-{self.case}"

    @property
    def consumes(self) -> str:
        """What the candidate's runner is made from: model, onnx or engine (the registry says)."""
        try:
            return registry.get(self.candidate).consumes
        except BackendUnavailable:
            return "onnx"

    @property
    def precision(self) -> str:
        """Tolerance precision, as the candidate's backend declares it (fp32, tf32 or fp16)."""
        try:
            return registry.get(self.candidate).precision
        except BackendUnavailable:
            return "fp16" if self.candidate.endswith("-fp16") else "fp32"

    @property
    def graph_precision(self) -> str:
        return "fp16" if self.precision == "fp16" else "fp32"


@dataclass
class Chain:
    config: ChainConfig = field(default_factory=ChainConfig)
    _model: MVSNet | None = None
    _memo: dict[tuple, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.config.device)
        self.cache = ArtifactCache(self.config.cache_dir)

    # -- model and data ----------------------------------------------------------------------
    @property
    def weights_path(self) -> Path:
        return Path(self.config.weights) if self.config.weights is not None else BUNDLED_WEIGHTS

    @property
    def model(self) -> MVSNet:
        if self._model is None:
            self._model = load_checkpoint(self.weights_path, map_location="cpu",
                                          align_corners=self.config.align_corners)
        return self._model

    @property
    def weights_digest(self) -> str:
        return self._once(("digest",), lambda: state_dict_digest(self.model))

    @property
    def export_digest(self) -> str:
        """What identifies the exported function besides the export settings: the weights and,
        when it is not the default, the sampling convention (not a weight, but it changes the graph)."""
        return self.weights_digest if self.config.align_corners else f"{self.weights_digest}-align_corners=0"

    def _once(self, key: tuple, make: Callable[[], object]):
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def case(self, name: str) -> Case:
        return get_case(name)

    def views(self, case: str) -> Views:
        return self._once(("views", case), lambda: case_views(get_case(case), self.config.scene))

    def feed(self, case: str) -> dict[str, torch.Tensor]:
        """The model feed with the precomputed inverse included (workarounds pick what they need)."""
        return self._once(("feed", case), lambda: case_feed(get_case(case), self.views(case), with_inverse=True))

    def export_feed(self, case: str, dynamic: bool) -> dict[str, torch.Tensor]:
        """The example feed an export traces: the case itself, or for a dynamic-shape graph a
        small one with the case's view count (views are unrolled, so they stay static); tracing
        a DTU-sized forward on the CPU would cost minutes for the same graph."""
        if not dynamic:
            return self.feed(case)
        this = get_case(case)
        small = Case(f"export-{this.views}v", this.views, 128, 160, 48)
        return self._once(("export-feed", this.views),
                          lambda: case_feed(small, case_views(small, self.config.scene), with_inverse=True))

    def workaround_feed(self, case: str, workaround: str) -> dict[str, torch.Tensor]:
        return get_workaround(workaround).prepare_feed(self.feed(case))

    def reference_feed(self, case: str) -> dict[str, torch.Tensor]:
        """The original three-input call (``torch.inverse`` inside the model)."""
        return {k: v for k, v in self.feed(case).items() if k != "inverse_proj_matrices"}

    # -- ONNX --------------------------------------------------------------------------------
    def onnx(self, case: str, workaround: str, exporter: str, variant: str = "raw", precision: str = "fp32",
             dynamic: bool = False, probes: bool = False) -> OnnxArtifact:
        if variant not in VARIANTS:
            raise InvalidArgument("ONNX variant", "unknown variant", observed=variant, expected=" or ".join(VARIANTS))

        def build_raw() -> OnnxArtifact:
            if precision == "fp16":  # derived from the FP32 export (one trace serves both precisions)
                return MixedOnnxFromOnnx(self.onnx(case, workaround, exporter, "raw", "fp32", dynamic, probes), self.cache)()
            config = ExportConfig(exporter=exporter, opset=self.config.opset, workaround=workaround,  # type: ignore[arg-type]
                                  precision=precision, dynamic=dynamic, probes=probes)  # type: ignore[arg-type]
            return OnnxFromTorch(self.model, self.export_digest, self.export_feed(case, dynamic), config,
                                 get_workaround(workaround), self.cache)()

        key = (case, workaround, exporter, precision, dynamic, probes)
        raw = self._once(("onnx", *key, "raw"), build_raw)
        if variant == "raw":
            return raw
        return self._once(("onnx", *key, variant), lambda: SimplifiedOnnxFromOnnx(raw, self.cache)())

    # -- TensorRT ----------------------------------------------------------------------------
    def engine(self, case: str, workaround: str, exporter: str, variant: str, precision: str,
               dynamic: bool | None = None) -> EngineArtifact:
        """Build (or fetch) the engine; raises BackendUnavailable when TensorRT or CUDA is missing."""
        from harness.backends import trt_api
        from harness.convert.engine import BuildSettings, EngineFromOnnx, Profile

        dynamic = self.config.trt_dynamic if dynamic is None else dynamic

        def build() -> EngineArtifact:
            trt_api.bind(self.config.trt_flavour)  # "tensorrt not importable" before any export work
            trt_api.require_cuda()
            graph = "fp16" if precision == "fp16" else "fp32"
            artifact = self.onnx(case, workaround, exporter, variant, graph, dynamic)
            names = get_workaround(workaround).input_names
            this = get_case(case)
            if dynamic:
                profile = Profile.around(this, names, low=_bound_case(this, "small"), high=_bound_case(this, "dtu"))
            else:
                profile = Profile.static({n: this.input_shapes(True)[n] for n in names})
            settings = BuildSettings(precision=precision, workspace_mib=self.config.trt_workspace_mib,  # type: ignore[arg-type]
                                     optimization_level=self.config.trt_opt_level, flavour=self.config.trt_flavour)
            return EngineFromOnnx(artifact, settings, profile, self.cache)()

        return self._once(("engine", case, workaround, exporter, variant, precision, dynamic), build)

    def trt_settings(self, engine: EngineArtifact, **extra: Any) -> dict[str, Any]:
        """The chain's TensorRT run settings for ``engine`` (every front runs engines alike)."""
        return {"flavour": self.config.trt_flavour, "buffers": self.config.trt_buffers,
                "cuda_graph": self.config.trt_cuda_graph,
                "runtime_cache": self.cache.root / "trt-runtime" / f"{engine.sha256[:16]}.cache", **extra}

    def trt_runner(self, case: str, workaround: str, exporter: str, variant: str, precision: str,
                   dynamic: bool | None = None) -> Runner:
        dynamic = self.config.trt_dynamic if dynamic is None else dynamic

        def make() -> Runner:
            engine = self.engine(case, workaround, exporter, variant, precision, dynamic)
            return registry.make_runner(f"trt-{precision}", engine.path, **self.trt_settings(engine)).prepare()

        return self._once(("trt", case, workaround, exporter, variant, precision, dynamic), make)

    # -- runners -----------------------------------------------------------------------------
    def torch_runner(self, precision: str = "fp32", with_inverse: bool = False, device: torch.device | None = None) -> Runner:
        dev = device or self.device
        return self._once(("torch", precision, with_inverse, str(dev)),
                          lambda: registry.make_runner(f"torch-{precision}", self.model, device=dev,
                                                       with_inverse=with_inverse).prepare())

    def model_context(self, name: str) -> dict[str, Any]:
        """What backend ``name`` asks of the chain besides the model (its spec's ``context``)."""
        known: dict[str, Callable[[], Any]] = {"cache_dir": lambda: self.cache.root,
                                               "model_digest": lambda: self.export_digest}
        return {key: known[key]() for key in registry.get(name).context}  # only what is asked: a digest hashes the weights

    def warm(self, names: Iterable[str]) -> None:
        """Start the background preparation of the model-consuming backends among ``names``
        (``registry.warm``), so that it overlaps the legs before theirs."""
        for name in dict.fromkeys(names):
            if name in registry.specs() and registry.get(name).consumes == "model":
                registry.warm(name, self.model, device=self.device, **self.model_context(name))

    def model_runner(self, name: str, **settings: Any) -> Runner:
        """A backend that consumes the torch model (e.g. ``torch-fast-fp16``), on the chain's device."""
        return self._once(("model", name, tuple(sorted(settings.items()))),
                          lambda: registry.make_runner(name, self.model, device=self.device,
                                                       **{**self.model_context(name), **settings}).prepare())

    def ort_runner(self, case: str, workaround: str, exporter: str, variant: str, device: str,
                   precision: str = "fp32", cuda_options: str = "strict") -> Runner:
        from harness.backends.onnxruntime_runner import ort_backend

        name = ort_backend(device, precision, cuda_options)

        def make() -> Runner:
            registry.require(name)  # before any export work
            artifact = self.onnx(case, workaround, exporter, variant, precision)
            label = variant if precision == "fp32" else f"{precision}-{variant}"
            if cuda_options != "strict":
                label = f"{cuda_options}-{label}"
            return registry.make_runner(name, artifact.path, label=label).prepare()

        return self._once(("ort", case, workaround, exporter, variant, device, precision, cuda_options), make)

    def onnx_file_runner(self, path: str | Path, device: str = "cpu", label: str = "",
                         validate_values: bool = True) -> Runner:
        """A prepared ONNX Runtime runner for any ONNX file (a user's graph, a mutated graph);
        not memoised: the caller closes it (``ort_runner_for_file`` is the memoised one)."""
        backend = f"ort-{torch.device(device).type}"
        registry.require(backend)
        return registry.make_runner(backend, Path(path), device=device, label=label,
                                    validate_values=validate_values).prepare()

    def ort_runtime(self, device: str = "cpu") -> str:
        """``onnxruntime <version> <device>``: what a golden baseline records it was taken with."""
        from harness.backends.onnxruntime_runner import import_onnxruntime

        return f"onnxruntime {import_onnxruntime().__version__} {device}"

    def ort_runner_for_file(self, onnx_path: Path, device: str = "cpu", label: str = "file") -> Runner:
        """ONNX Runtime on a graph file that no builder made (a user's graph, a mutated copy); closed
        with the chain."""
        return self._once(("ort-file", str(Path(onnx_path).resolve()), device),
                          lambda: self.onnx_file_runner(onnx_path, device, label))

    def candidate_runner(self, leg: Leg) -> Runner:
        spec = registry.get(leg.candidate)  # an unknown name: BackendUnavailable naming the known ones
        if spec.consumes == "model":
            return self.model_runner(spec.name)
        if spec.consumes == "engine":
            return self.trt_runner(leg.case, leg.workaround, leg.exporter, leg.variant, spec.precision)
        options = "default" if spec.name.endswith("-default") else "strict"
        return self.ort_runner(leg.case, leg.workaround, leg.exporter, leg.variant, spec.device,
                               leg.graph_precision, options)

    def reference_outputs(self, case: str) -> dict[str, torch.Tensor]:
        """torch strict FP32, the original three-input call, on the chain's device."""
        return self._once(("ref", case, str(self.device)),
                          lambda: self.torch_runner("fp32").infer(self.reference_feed(case)))

    def machine_class(self, candidate: str) -> str:
        """The gates' machine class of a comparison with ``candidate``: ``cuda`` when the reference
        (the chain's device) or the candidate's backend runs on a CUDA device, else ``cpu``."""
        try:
            device = registry.get(candidate).device
        except BackendUnavailable:
            device = "cuda" if candidate.startswith("trt-") else "cpu"
        return machine_class(str(self.device), device)

    def release(self, leg: Leg) -> None:
        """Close and forget the candidate runner of ``leg`` (artifacts stay cached on disk)."""
        for key in [k for k, v in self._memo.items() if isinstance(v, Runner) and k[0] in ("ort", "trt")
                    and leg.case in k and leg.workaround in k and leg.exporter in k and leg.variant in k]:
            runner = self._memo.pop(key)
            assert isinstance(runner, Runner)
            runner.close()
        give_back()  # the leg's freed tensors back to the system (harness.hostmem)

    # -- user artifacts (python -m harness check, --harness-onnx/-engine/-model) ---------------
    def case_feed(self, case: Case) -> dict[str, torch.Tensor]:
        """The feed of any case (a named one or one read off a user graph's static shapes), with
        the precomputed inverse included."""
        key = ("case-feed", case.views, case.height, case.width, case.num_depth)
        return self._once(key, lambda: case_feed(case, case_views(case, self.config.scene), with_inverse=True))

    def convention_model(self, align_corners: bool) -> torch.nn.Module:
        """The harness's MVSNet with the given sampling convention (a copy when it is not the chain's)."""
        if align_corners == self.config.align_corners:
            return self.model

        def flipped() -> torch.nn.Module:
            import copy

            other = copy.deepcopy(self.model)
            other.align_corners = align_corners
            return other

        return self._once(("convention-model", align_corners), flipped)

    def user_model(self, spec: str) -> torch.nn.Module:
        """The user's ``MODULE:CALLABLE`` with the chain's checkpoint, through the safe loader."""
        from harness.model.user import load_user_model

        return self._once(("user-model", spec), lambda: load_user_model(spec, self.weights_path))

    def user_reference_outputs(self, case: Case, model: str | None = None,
                               align_corners: bool | None = None) -> dict[str, torch.Tensor]:
        """torch strict FP32 on ``case``: the user's model when given, else the harness's MVSNet
        with ``align_corners`` (default: the chain's convention), original three-input call."""
        convention = self.config.align_corners if align_corners is None else align_corners
        net = self.user_model(model) if model else self.convention_model(convention)
        feed = {k: v for k, v in self.case_feed(case).items() if k != "inverse_proj_matrices"}

        def run() -> dict[str, torch.Tensor]:
            runner = registry.make_runner("torch-fp32", net, device=self.device, with_inverse=False)
            try:
                return runner.prepare().infer(feed)
            finally:
                runner.close()

        return self._once(self._user_ref_key(case, model, convention), run)

    def _user_ref_key(self, case: Case, model: str | None, convention: bool) -> tuple:
        """The memo key of ``user_reference_outputs`` (``user_reference_stages`` fills it too)."""
        return ("user-ref", case, model, convention, str(self.device))

    def user_reference_stages(self, case: Case, align_corners: bool | None = None) -> dict[str, torch.Tensor]:
        """The harness MVSNet's intermediate stages (``harness.model.mvsnet.probing``) on ``case``,
        strict FP32 on the CPU, for localising a user graph. On a CPU chain the same run's outputs
        are kept as ``user_reference_outputs`` of that case and convention: the probes only copy
        what the model computes, so a second torch run would give the same tensors (at the seed
        shape on 2 cores it cost ``check`` about 5 s per case)."""
        from harness.model.mvsnet import probing

        convention = self.config.align_corners if align_corners is None else align_corners
        net = self.convention_model(convention)
        feed = {k: v for k, v in self.case_feed(case).items() if k != "inverse_proj_matrices"}
        cpu = torch.device("cpu")

        def run() -> dict[str, torch.Tensor]:
            runner = registry.make_runner("torch-fp32", net, device=cpu, with_inverse=False)
            try:
                with probing(runner.prepare().model) as probes:  # type: ignore[attr-defined]
                    outputs = runner.infer(feed)
                if self.device == cpu:
                    self._once(self._user_ref_key(case, None, convention), lambda: outputs)
                return {k: v.cpu() for k, v in probes.items()}
            finally:
                runner.close()

        return self._once(("user-ref-stages", case, align_corners), run)

    def user_onnx_all_outputs(self, path: Path, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every output of a (probe) graph by its own name, from host tensors keyed by the graph's
        input names (diagnostics, not timed)."""
        runner = registry.make_runner("ort-cpu", Path(path), label=f"user-{Path(path).stem}", validate_values=False)
        try:
            return runner.run_all(feed)  # type: ignore[attr-defined]  # OrtRunner: every output by name
        finally:
            runner.close()

    def user_onnx_runner(self, path: Path, inputs: dict[str, str], outputs: dict[str, str], device: str,
                         name: str, cuda_options: str = "strict") -> Runner:
        """ONNX Runtime over the user's graph, fed and read by role (``inputs``: role -> graph
        name, ``outputs``: graph name -> role); on CUDA with the option set ``cuda_options``
        (``strict``: TF32 off; ``default``: ONNX Runtime as shipped)."""
        from harness.backends.onnxruntime_runner import ort_backend
        from harness.backends.renamed import renamed

        backend = ort_backend(device, "fp32", cuda_options)

        def make() -> Runner:
            registry.require(backend)
            inner = registry.make_runner(backend, Path(path), label=f"user-{Path(path).stem}")
            return renamed(inner, inputs, outputs, name).prepare()

        return self._once(("user-ort", str(path), backend, tuple(sorted(inputs.items()))), make)

    def user_engine_runner(self, path: Path, name: str, inputs: dict[str, str] | None = None,
                           outputs: dict[str, str] | None = None, io_map: dict[str, str] | None = None) -> Runner:
        """TensorRT over the user's serialized engine: the plan header is read and checked
        against this TensorRT before anything is deserialised. Without ``inputs``/``outputs``
        (role -> name, name -> role) the engine's tensors are bound after deserialisation, by
        ``harness.model.io.bind_io`` (and ``io_map``)."""
        from harness.backends import trt_api
        from harness.backends.renamed import renamed
        from harness.convert.plan_header import read_plan_header, require_runtime_match
        from harness.model.io import TensorSpec, bind_io

        def make() -> Runner:
            header = read_plan_header(path)  # a foreign or truncated file is refused even without TensorRT
            try:
                info = trt_api.bind(self.config.trt_flavour)
                trt_api.require_cuda(name)
            except BackendUnavailable as exc:
                raise BackendUnavailable(exc.backend, f"{exc.missing} (the engine's plan header: built with "
                                         f"TensorRT {header.version_text})", fix=exc.fix) from None
            require_runtime_match(header, info.label, info.version)
            inner = registry.make_runner("trt-fp32", Path(path), label=f"user-{Path(path).stem}",
                                         flavour=self.config.trt_flavour, buffers=self.config.trt_buffers)
            ins, outs = inputs, outputs
            if ins is None or outs is None:
                inner.prepare()
                engine = inner._engine  # type: ignore[attr-defined]
                assert engine is not None

                def spec(n: str) -> TensorSpec:
                    dtype = "float32" if engine.get_tensor_dtype(n) == trt_api.trt.DataType.FLOAT else \
                        str(engine.get_tensor_dtype(n))
                    return TensorSpec(n, tuple(int(d) if int(d) >= 0 else "?" for d in engine.get_tensor_shape(n)),
                                      dtype)

                binding = bind_io([spec(n) for n in inner.input_names],
                                  [spec(n) for n in inner.output_names], io_map, str(path))  # type: ignore[attr-defined]
                ins, outs = binding.input_roles(), binding.output_roles()
            return renamed(inner, ins, outs, name).prepare()

        return self._once(("user-trt", str(path)), make)

    def user_onnx_trt_runner(self, path: Path, inputs: dict[str, str], outputs: dict[str, str], case: Case,
                             audit: dict[str, Any], name: str) -> Runner:
        """A TensorRT FP32 engine built from the user's ONNX (static shapes of ``case``); the
        operator audit refuses known parser failures (GridSample at opset >= 20) first."""
        import hashlib

        from harness.backends import trt_api
        from harness.backends.renamed import renamed
        from harness.convert.audit import Audit
        from harness.convert.engine import BuildSettings, EngineFromOnnx, Profile
        from harness.convert.onnx_export import OnnxArtifact

        def make() -> Runner:
            # a property of the graph, not of this machine: refused here even where TensorRT is missing
            Audit.from_dict(audit).require_trt_ready(str(path))
            trt_api.bind(self.config.trt_flavour)
            trt_api.require_cuda(name)
            shapes = case.input_shapes(any(r == "inverse_proj_matrices" for r in inputs))
            artifact = OnnxArtifact(Path(path), hashlib.sha256(Path(path).read_bytes()).hexdigest(), ExportConfig(), False,
                                    int(audit.get("node_count", 0)), audit, 0.0, "user", {"source": "user"})
            profile = Profile.static({inputs[role]: shape for role, shape in shapes.items()})
            settings = BuildSettings(precision="fp32", workspace_mib=self.config.trt_workspace_mib,
                                     optimization_level=self.config.trt_opt_level, flavour=self.config.trt_flavour)
            engine = EngineFromOnnx(artifact, settings, profile, self.cache)()
            inner = registry.make_runner("trt-fp32", engine.path, **self.trt_settings(engine, label=f"user-{Path(path).stem}"))
            return renamed(inner, inputs, outputs, name).prepare()

        return self._once(("user-onnx-trt", str(path), case), make)

    def close(self) -> None:
        for value in self._memo.values():
            if isinstance(value, Runner):
                value.close()
        self._memo.clear()


@dataclass(frozen=True)
class LegResult:
    leg: Leg
    diffs: dict  # output name -> OutputDiff
    artifact: dict[str, Any]
    outputs: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # the candidate's, kept for accuracy
    localisation: str = ""  # per-stage table, when localised (--harness-localize or a failure)

    @property
    def passed(self) -> bool:
        return all(self.diffs.values())

    def row(self) -> dict[str, Any]:
        """The run record's parity row."""
        return {
            "id": self.leg.id, "case": self.leg.case, "candidate": self.leg.candidate, "reference": self.leg.reference,
            "workaround": self.leg.workaround, "exporter": self.leg.exporter, "variant": self.leg.variant,
            "precision": self.leg.precision, "passed": self.passed,
            "metrics": {name: dict(d.metrics) for name, d in self.diffs.items()},
            "tolerance": {name: dict(d.tolerance) for name, d in self.diffs.items()},
            "artifact": self.artifact,
        }


def run_leg(chain: Chain, leg: Leg, tolerances: Tolerances) -> LegResult:
    """Run one parity leg: candidate vs torch strict FP32 (original three-input call)."""
    from harness.compare import compare
    from harness.model.mvsnet import OUTPUT_NAMES

    runner = chain.candidate_runner(leg)
    candidate = runner.infer(chain.workaround_feed(leg.case, leg.workaround))
    reference = chain.reference_outputs(leg.case)
    tolerance = tolerances.lookup(leg.reference, leg.candidate, leg.precision, OUTPUT_NAMES, case=leg.case,
                                  machine=chain.machine_class(leg.candidate))
    diffs = compare(reference, candidate, tolerance, depth_values=chain.feed(leg.case)["depth_values"])
    if leg.consumes == "model":
        return LegResult(leg, diffs, {"runner": runner.describe()}, candidate)
    artifact = chain.onnx(leg.case, leg.workaround, leg.exporter, leg.variant, leg.graph_precision,
                          chain.config.trt_dynamic and leg.candidate.startswith("trt-"))
    info = {
        "onnx_sha256": artifact.sha256[:16], "nodes": artifact.node_count, "opset": artifact.audit.get("opset"),
        "export_seconds": artifact.seconds, "cache": artifact.cache_status, **artifact.extra,
    }
    log = runner.describe().get("log")
    if log:  # the runtime's own console lines (e.g. cuDNN frontend refusals), kept off the console
        info["runtime_log"] = log
    if leg.candidate.startswith("trt-"):
        engine = chain.engine(leg.case, leg.workaround, leg.exporter, leg.variant, leg.precision)
        info.update({"engine_sha256": engine.sha256[:16], "engine_mib": engine.meta.get("engine_mib"),
                     "build_seconds": engine.build_seconds, "engine_cache": engine.cache_status})
    return LegResult(leg, diffs, info, candidate)


def with_golden(chain: Chain, leg: Leg, tolerances: Tolerances, result: LegResult, directory: Path) -> LegResult:
    """``result`` with the golden check of an ONNX Runtime CPU leg added: one ``golden <output>``
    diff per output against the stored outputs of the leg's graph variant (``harness/gates/golden.py``);
    other legs, or no usable baseline, add the reason to the artifact record instead."""
    from dataclasses import replace

    from harness.gates.golden import check_golden, golden_key
    from harness.model.mvsnet import OUTPUT_NAMES

    if leg.candidate not in ("ort-cpu", "ort-cpu-fp16"):
        return replace(result, artifact={**result.artifact, "golden": "only ONNX Runtime CPU legs have golden outputs"})
    key = golden_key(leg.case, leg.workaround, leg.exporter, leg.variant, leg.graph_precision)
    tolerance = tolerances.lookup("golden", leg.candidate, leg.precision, OUTPUT_NAMES)
    check = check_golden(directory, key, result.outputs, tolerance, chain.workaround_feed(leg.case, leg.workaround),
                         chain.ort_runtime("cpu"), chain.feed(leg.case)["depth_values"])
    if check.skipped:
        return replace(result, artifact={**result.artifact, "golden": check.skipped})
    diffs = {**result.diffs, **{f"golden {name}": replace(d, name=f"golden {name}") for name, d in check.diffs.items()}}
    return replace(result, diffs=diffs, artifact={**result.artifact, "golden": key})

def replay_leg(chain: Chain, leg: Leg, result: LegResult, folder: Path, on_exists: str = "suffix") -> Replay:
    """Save ``leg``'s inputs, torch reference, graph and gates for Polygraphy and trtexec (see
    harness.report.replay) into ``folder``. The harness names its feed and outputs as the exported
    graph does (workaround input names, OUTPUT_NAMES), so no name mapping is needed here."""
    from harness.convert.engine import BuildSettings, Profile
    from harness.convert.trtexec import trtexec_command
    from harness.model.mvsnet import OUTPUT_NAMES
    from harness.report.replay import depth_step_of, save_replay

    if leg.consumes == "model":
        raise InvalidArgument(leg.id, "nothing for Polygraphy or trtexec to replay",
                              observed=f"{leg.candidate} consumes the torch model (no ONNX graph, no engine)",
                              expected="an ONNX Runtime or TensorRT leg",
                              fix="reproduce it with the leg's pytest id; its record holds the runner's settings")
    trt = leg.candidate.startswith("trt-")
    artifact = chain.onnx(leg.case, leg.workaround, leg.exporter, leg.variant, leg.graph_precision,
                          chain.config.trt_dynamic and trt)
    feed = chain.workaround_feed(leg.case, leg.workaround)
    precision = leg.precision if trt else leg.graph_precision
    settings = BuildSettings(precision=precision, workspace_mib=chain.config.trt_workspace_mib,  # type: ignore[arg-type]
                             optimization_level=chain.config.trt_opt_level, flavour=chain.config.trt_flavour)
    build = trtexec_command(artifact.path, settings, Profile.static({n: tuple(t.shape) for n, t in feed.items()}),
                            trt_major=11, engine_path=Path("engine.plan"))
    return save_replay(
        folder, onnx_path=artifact.path, inputs=feed, reference=chain.reference_outputs(leg.case),
        # the outputs' gates only: stage and golden rows (localised or --harness-golden legs) gate other data
        gates={name: dict(diff.tolerance) for name, diff in result.diffs.items() if name in OUTPUT_NAMES},
        depth_step=depth_step_of(chain.feed(leg.case)["depth_values"]), subject=leg.id, trtexec_build=build,
        polygraphy_trt_flags=("--strongly-typed", "--tf32") if precision == "tf32" else ("--strongly-typed",),
        on_exists=on_exists, copy_onnx=True,
    )


def plan_legs(
    cases: tuple[str, ...],
    workarounds: tuple[str, ...],
    exporters: tuple[str, ...],
    variants: tuple[str, ...],
    candidates: tuple[str, ...],
) -> list[Leg]:
    """Every combination, less those that cannot exist: a workaround with an exporter it does not
    support (custom_op: torchscript only), and TensorRT legs of a graph TensorRT refuses
    (custom_op; the export suite proves the refusal). A candidate that consumes the torch model
    gets one leg per case (``MODEL_LEG``)."""
    from harness.convert.onnx_export import EXPORTERS
    from harness.convert.workarounds import EXPORTERS_FOR, TRT_EXPORTABLE

    legs = []
    for case in cases:
        for candidate in candidates:
            if Leg(candidate, *MODEL_LEG, case).consumes == "model":  # not crossed with graph axes
                legs.append(Leg(candidate, *MODEL_LEG, case))
                continue
            legs += [Leg(candidate, variant, workaround, exporter, case)
                     for variant in variants for workaround in workarounds for exporter in exporters
                     if exporter in EXPORTERS_FOR.get(workaround, EXPORTERS)
                     and (workaround in TRT_EXPORTABLE or not candidate.startswith("trt-"))]
    return legs


def _bound_case(case: Case, name: str) -> Case:
    """A profile bound with ``case``'s view count and the H, W, D of case ``name`` (or of
    ``case`` itself where that is wider for a max bound / narrower for a min bound)."""
    other = get_case(name)
    pick = min if name == "small" else max
    return Case(f"{name}-bound", case.views, pick(case.height, other.height), pick(case.width, other.width),
                pick(case.num_depth, other.num_depth))
