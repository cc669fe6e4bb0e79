"""Builders from the torch model to ONNX: ``OnnxFromTorch`` (export + checker + audit) and
``SimplifiedOnnxFromOnnx`` (onnxsim). Both are lazy (work on call) and cached by content.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import onnx
import torch

from harness.convert.audit import Audit, audit_model
from harness.convert.cache import ArtifactCache, CacheEntry, source_digest
from harness.convert.progress import step
from harness.convert.workarounds import EXPORTABLE, InverseWorkaround, probe_output_names
from harness.errors import ExportError, InvalidArgument, UnsupportedOperator
from harness.fileio import atomic_write_bytes
from harness.model.mvsnet import MVSNet

Exporter = Literal["torchscript", "dynamo"]
EXPORTERS: tuple[Exporter, ...] = ("torchscript", "dynamo")
DEFAULT_OPSET = 17
_CODE_FILES = ("model/mvsnet.py", "model/layers.py", "model/geometry.py", "convert/workarounds.py", "convert/onnx_export.py")


@lru_cache(maxsize=1)
def export_code_digest() -> str:
    """Hash of the source that decides the exported graph, so code changes invalidate the cache."""
    return source_digest(*_CODE_FILES)


GraphPrecision = Literal["fp32", "fp16"]


@dataclass(frozen=True)
class ExportConfig:
    """What decides an exported graph besides the weights and the input shapes.

    ``precision="fp16"`` names the mixed-precision graph: half-precision convolutions with explicit
    Casts around them, FP32 elsewhere (what strongly typed TensorRT builds as is). It is not traced:
    ``harness.convert.mixed.MixedOnnxFromOnnx`` derives it from the FP32 export.
    ``dynamic=True`` leaves H, W (multiples of 32) and D symbolic, for TensorRT profiles.
    """

    exporter: Exporter = "torchscript"
    opset: int = DEFAULT_OPSET
    workaround: str = "precomputed"
    precision: GraphPrecision = "fp32"
    dynamic: bool = False
    probes: bool = False  # a probe build: intermediate stages as extra outputs (never timed)

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise InvalidArgument("exporter", "unknown exporter", observed=self.exporter, expected=" or ".join(EXPORTERS),
                                  fix="pass --harness-exporters torchscript,dynamo")
        if self.precision not in ("fp32", "fp16"):
            raise InvalidArgument("graph precision", "unknown precision", observed=self.precision, expected="fp32 or fp16")
        if not 16 <= self.opset <= 23:
            raise InvalidArgument("opset", "unsupported ONNX opset", observed=self.opset, expected="16..23 (GridSample needs >= 16)",
                                  fix="pass --harness-opset 17")

    @property
    def label(self) -> str:
        dynamic = "-dynamic" if self.dynamic else ""
        probes = "-probes" if self.probes else ""
        return f"{self.exporter}-op{self.opset}-{self.workaround}-{self.precision}{dynamic}{probes}"


@dataclass(frozen=True)
class OnnxArtifact:
    """An ONNX file in the cache with what is known about it."""

    path: Path
    sha256: str
    config: ExportConfig
    simplified: bool
    node_count: int
    audit: dict[str, Any]
    seconds: float  # export (or simplify) time when built; 0 when taken from the cache
    cache_status: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def variant(self) -> str:
        return "simplified" if self.simplified else "raw"

    def load(self) -> onnx.ModelProto:
        return onnx.load(str(self.path))

    def require_trt_ready(self) -> None:
        """Raise ``UnsupportedOperator`` before an engine build if the audit found anything."""
        Audit.from_dict(self.audit).require_trt_ready(str(self.path))


def artifact_of(entry: CacheEntry, config: ExportConfig, simplified: bool) -> OnnxArtifact:
    meta = entry.meta
    return OnnxArtifact(
        path=entry.path, sha256=entry.sha256, config=config, simplified=simplified,
        node_count=int(meta.get("node_count", 0)), audit=dict(meta.get("audit", {})),
        seconds=float(meta.get("build_seconds", 0.0)) if entry.status != "hit" else 0.0,
        cache_status=entry.status, extra={k: meta[k] for k in ("nodes_before", "nodes_after", "onnxsim") if k in meta},
    )


@contextlib.contextmanager
def _quiet_exporter():
    """The exporters print progress and deprecation chatter; keep the test log readable."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _dynamic_axes(input_names: tuple[str, ...]) -> dict[str, dict[int, str]]:
    axes = {"imgs": {3: "height", 4: "width"}, "depth_values": {1: "num_depth"},
            "depth": {1: "height_4", 2: "width_4"}, "photometric_confidence": {1: "height_4", 2: "width_4"}}
    return {k: v for k, v in axes.items() if k in input_names or k in ("depth", "photometric_confidence")}


def _dynamic_shapes(input_names: tuple[str, ...]) -> dict[str, object]:
    dim = torch.export.Dim
    h32, w32 = dim("h32", min=1, max=256), dim("w32", min=1, max=256)
    shapes: dict[str, object] = {name: None for name in input_names}
    shapes["imgs"] = {3: 32 * h32, 4: 32 * w32}
    shapes["depth_values"] = {1: dim("num_depth", min=8, max=1024)}
    return shapes


PAUSE_ENV = "HARNESS_TEST_PAUSE_IN_EXPORT"
_exports_started = 0


def _pause_for_tests() -> None:
    """With ``$HARNESS_TEST_PAUSE_IN_EXPORT=N`` (tests only), the N-th export of the process says
    so on stderr and waits up to 60 s inside the export's error handling, so that a test can
    signal a cold export at a known point instead of racing a sub-second export with a sleep."""
    global _exports_started
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted:
        return
    _exports_started += 1
    if _exports_started != int(wanted):
        return
    sys.stderr.write("export paused for a test: waiting for a signal\n")
    sys.stderr.flush()
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        time.sleep(0.05)


def export_onnx_bytes(
    model: MVSNet,
    workaround: InverseWorkaround,
    example_feed: dict[str, torch.Tensor],
    exporter: Exporter,
    opset: int,
    dynamic: bool = False,
    probes: bool = False,
) -> bytes:
    """Export once and return the serialized ModelProto (no caching, no checks).

    Exports run on the CPU: the example feed is moved there and a model held on a GPU is copied.
    """
    if next(model.parameters()).device.type != "cpu":
        import copy

        model = copy.deepcopy(model).cpu()
    example_feed = {k: v.cpu() for k, v in example_feed.items()}
    if workaround.name == "custom_op" and exporter != "torchscript":
        raise ExportError(f"ONNX export ({exporter}, workaround custom_op)", "exporter not supported by this workaround",
                          observed=exporter, expected="torchscript (the com.microsoft::Inverse symbolic is a TorchScript symbolic)",
                          fix="pass --harness-exporters torchscript, or use precomputed/closed_form with dynamo")
    module = workaround.export_module(model, probes=probes)
    names = workaround.input_names
    args = tuple(example_feed[name] for name in names)
    outputs = probe_output_names(int(example_feed["imgs"].shape[1])) if probes else workaround.output_names
    try:
        with _quiet_exporter(), torch.no_grad():
            _pause_for_tests()
            if exporter == "torchscript":
                buffer = io.BytesIO()
                torch.onnx.export(
                    module, args, buffer,  # type: ignore[arg-type]  # BytesIO works
                    dynamo=False, opset_version=opset,
                    input_names=list(names), output_names=list(outputs),
                    do_constant_folding=True, dynamic_axes=_dynamic_axes(names) if dynamic else None,
                    custom_opsets={"com.microsoft": 1} if workaround.name == "custom_op" else None,
                )
                return buffer.getvalue()
            program = torch.onnx.export(
                module, args, dynamo=True, opset_version=opset, verbose=False,
                input_names=list(names), output_names=list(outputs),
                dynamic_shapes=_dynamic_shapes(names) if dynamic else None,
            )
            assert program is not None
            return program.model_proto.SerializeToString()
    except Exception as exc:  # the exporters raise many types; classify, never swallow
        text = f"{type(exc).__name__}: {exc}"
        if "linalg_inv" in text or "aten::inverse" in text:
            raise UnsupportedOperator(
                f"ONNX export ({exporter}, opset {opset})", "torch.inverse cannot be exported",
                observed="aten::linalg_inv has no ONNX translation", expected="a graph without a matrix inverse",
                fix=f"use an inverse workaround: {' or '.join(EXPORTABLE)} (--harness-workarounds)",
            ) from exc
        raise ExportError(
            f"ONNX export ({exporter}, opset {opset}, workaround {workaround.name})", "export failed",
            observed=text.splitlines()[0][:300], expected="a successful torch.onnx.export",
            fix="try the other exporter (--harness-exporters) or opset; run with -p no:cacheprovider -x --tb=long for the trace",
        ) from exc


class OnnxFromTorch:
    """Export MVSNet to ONNX (fixed I/O names), check it, audit its operators, cache it.

    The cache key covers the weights, the export code, torch's version, the exporter, the opset,
    the workaround and the input shapes.
    """

    def __init__(
        self,
        model: MVSNet,
        weights_digest: str,
        example_feed: dict[str, torch.Tensor],
        config: ExportConfig,
        workaround: InverseWorkaround,
        cache: ArtifactCache,
    ) -> None:
        if config.precision != "fp32":
            raise InvalidArgument(f"ONNX export ({config.label})", "only FP32 graphs are exported from torch",
                                  observed=config.precision, expected="fp32",
                                  fix="derive the FP16 graph from the FP32 export with harness.convert.mixed.MixedOnnxFromOnnx")
        self.model = model
        self.weights_digest = weights_digest
        self.feed = workaround.prepare_feed(example_feed)
        self.config = config
        self.workaround = workaround
        self.cache = cache

    def key_fields(self) -> dict[str, Any]:
        return {
            "weights": self.weights_digest,
            "code": export_code_digest(),
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "exporter": self.config.exporter,
            "opset": self.config.opset,
            "workaround": self.workaround.name,
            "precision": self.config.precision,
            "dynamic": self.config.dynamic,
            "probes": self.config.probes,
            "inputs": {k: list(v.shape) for k, v in self.feed.items()},
        }

    def _build(self, path: Path) -> dict[str, Any]:
        started = time.perf_counter()
        shape = "x".join(str(d) for d in self.feed["imgs"].shape[1:2] + self.feed["imgs"].shape[3:])
        with step(f"exporting ONNX {self.config.label} ({shape}, D={self.feed['depth_values'].shape[-1]})", "exported"):
            data = export_onnx_bytes(self.model, self.workaround, self.feed, self.config.exporter, self.config.opset,
                                     self.config.dynamic, self.config.probes)
        seconds = time.perf_counter() - started
        proto = onnx.load_from_string(data)
        check(proto, f"exported ONNX ({self.config.label})")
        audit: Audit = audit_model(proto)
        atomic_write_bytes(path, data)
        return {"node_count": audit.node_count, "audit": audit.as_dict(), "export_seconds": round(seconds, 4)}

    def __call__(self) -> OnnxArtifact:
        entry = self.cache.get_or_build("onnx", self.key_fields(), "model.onnx", self._build)
        return artifact_of(entry, self.config, simplified=False)


def check(proto: onnx.ModelProto, subject: str) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(subject, "onnx.checker rejects the graph", observed=str(exc).splitlines()[0][:300],
                          expected="a valid ONNX model", fix="try the other exporter or opset") from exc


class SimplifiedOnnxFromOnnx:
    """onnxsim over an exported graph; records node counts before and after."""

    def __init__(self, source: OnnxArtifact, cache: ArtifactCache) -> None:
        self.source = source
        self.cache = cache

    def key_fields(self) -> dict[str, Any]:
        import onnxsim

        return {"source_sha256": self.source.sha256, "onnxsim": onnxsim.__version__}

    def _build(self, path: Path) -> dict[str, Any]:
        import onnxsim

        proto = self.source.load()
        before = len(proto.graph.node)
        try:
            with step(f"simplifying ONNX {self.source.config.label} (onnxsim)", "simplified"), _quiet_exporter():
                simplified, ok = onnxsim.simplify(proto)
        except Exception as exc:  # onnxsim raises RuntimeError/ValueError/... from C++; report, never swallow
            raise ExportError(str(self.source.path), "onnxsim failed", observed=f"{type(exc).__name__}: {str(exc)[:300]}",
                              expected="a graph onnxsim can simplify", fix="run the raw graph (--harness-variants raw)") from exc
        if not ok:
            raise ExportError(str(self.source.path), "onnxsim's check failed", observed="simplified graph differs",
                              expected="a verified simplification", fix="run the raw graph (--harness-variants raw)")
        check(simplified, f"simplified ONNX ({self.source.config.label})")
        audit = audit_model(simplified)
        atomic_write_bytes(path, simplified.SerializeToString())
        return {
            "node_count": audit.node_count, "audit": audit.as_dict(), "nodes_before": before,
            "nodes_after": audit.node_count, "onnxsim": onnxsim.__version__,
        }

    def __call__(self) -> OnnxArtifact:
        entry = self.cache.get_or_build("onnx-simplified", self.key_fields(), "model.onnx", self._build)
        return artifact_of(entry, self.source.config, simplified=True)
