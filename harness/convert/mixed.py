"""The mixed-precision (FP16) graph derived from an exported FP32 graph: ``MixedOnnxFromOnnx``.

Tracing a half-precision torch model costs minutes and gigabytes at DTU-sized shapes (the CPU
runs the FP16 3D convolutions of the trace slowly), for a graph that differs from the FP32 one
only in element types. Here the FP32 graph's convolution nodes (and the nodes a policy lets
follow them) are rewritten to FP16 instead: their float weights are stored as FP16, each FP32
tensor entering the set is cast down once and each tensor leaving it is cast back up under its
original name, so every other node, the graph's inputs and outputs stay FP32 and unchanged.
The result is audited against the FP32 regions before it is cached.

Model-neutral: the op policy and the regions come from the caller (MVSNet's by default, from
``harness/model/precision.py``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.convert.audit import audit_model
from harness.convert.cache import ArtifactCache, source_digest
from harness.convert.graph import consumers, fresh_name, producers, tensor_types
from harness.convert.onnx_export import OnnxArtifact, artifact_of, check
from harness.convert.precision import audit_precision
from harness.convert.progress import step
from harness.errors import ExportError, InvalidArgument
from harness.fileio import atomic_write_bytes
from harness.model.precision import FP16_OPS, FP32_REGIONS

_CODE_FILES = ("convert/mixed.py", "convert/graph.py", "model/precision.py")


@lru_cache(maxsize=1)
def mixed_code_digest() -> str:
    """Hash of the code that decides the conversion (and the policy it applies)."""
    return source_digest(*_CODE_FILES)


def fp16_nodes(model: onnx.ModelProto, seeds: Sequence[str], follow: Sequence[str]) -> set[int]:
    """Indices of the nodes to run in FP16: every ``seeds`` node, and every ``follow`` node whose
    computed inputs (not initializers or Constant outputs) are all produced by chosen nodes."""
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    constants |= {n.output[0] for n in graph.node if n.op_type == "Constant" and n.output}
    made_by = producers(model)
    chosen: set[int] = set()
    for i, node in enumerate(graph.node):  # topological order: producers are decided first
        if node.op_type in seeds:
            chosen.add(i)
        elif node.op_type in follow:
            computed = [t for t in node.input if t and t not in constants]
            if computed and all(made_by.get(t) in chosen for t in computed):
                chosen.add(i)
    return chosen


def convert_to_mixed(model: onnx.ModelProto, nodes: set[int]) -> onnx.ModelProto:
    """A copy of ``model`` whose ``nodes`` compute in FP16 (see the module docstring)."""
    if not nodes:
        raise InvalidArgument("FP16 conversion", "no node to run in FP16", observed="none of the policy's ops in the graph",
                              expected="a graph with convolutions", fix="check the graph (or the FP16 op policy)")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    types = tensor_types(out)
    readers = consumers(out)
    made_by = producers(out)
    outputs = {o.name for o in graph.output}
    initializers = {i.name: i for i in graph.initializer}

    def is_float(name: str) -> bool:
        return types.get(name) == TensorProto.FLOAT

    # weights: stored as FP16 (a copy under a new name where an FP32 node reads the same one)
    renamed_weight: dict[str, str] = {}
    halved: set[str] = set()
    for name in sorted({t for i in nodes for t in graph.node[i].input if t in initializers and is_float(t)}):
        half = numpy_helper.to_array(initializers[name]).astype(np.float16)
        if all(j in nodes for j in readers.get(name, [])) and name not in outputs:
            initializers[name].CopyFrom(numpy_helper.from_array(half, name))
            halved.add(name)
        else:
            renamed_weight[name] = fresh_name(out, f"{name}__fp16")
            graph.initializer.append(numpy_helper.from_array(half, renamed_weight[name]))
    entries = sorted({t for i in nodes for t in graph.node[i].input
                      if t and t not in initializers and is_float(t) and made_by.get(t) not in nodes})
    exits = sorted({t for i in nodes for t in graph.node[i].output
                    if t and is_float(t) and (t in outputs or any(j not in nodes for j in readers.get(t, [])))})
    down = {t: fresh_name(out, f"{t}__fp16") for t in entries}
    up = {t: fresh_name(out, f"{t}__fp16") for t in exits}
    inside = {t for i in nodes for t in graph.node[i].output if t and is_float(t)}

    rebuilt: list[onnx.NodeProto] = []
    cast_down: set[str] = set()
    for i, node in enumerate(graph.node):
        if i not in nodes:
            rebuilt.append(node)
            continue
        for t in node.input:
            if t in down and t not in cast_down:
                cast_down.add(t)
                rebuilt.append(helper.make_node("Cast", [t], [down[t]], to=TensorProto.FLOAT16,
                                                name=fresh_name(out, f"fp16/down/{t}")))
        node.input[:] = [down.get(t) or renamed_weight.get(t) or up.get(t) or t for t in node.input]
        exiting = [t for t in node.output if t in up]
        node.output[:] = [up.get(t, t) for t in node.output]
        rebuilt.append(node)
        rebuilt += [helper.make_node("Cast", [up[t]], [t], to=TensorProto.FLOAT, name=fresh_name(out, f"fp16/up/{t}"))
                    for t in exiting]
    del graph.node[:]
    graph.node.extend(rebuilt)
    # declared types of tensors that are now FP16 (an exit keeps its name and FP32 type)
    for info in graph.value_info:
        if ((info.name in inside and info.name not in up) or info.name in halved) and info.type.HasField("tensor_type"):
            info.type.tensor_type.elem_type = TensorProto.FLOAT16
    return out


class MixedOnnxFromOnnx:
    """The FP16 graph of an FP32 ``OnnxArtifact`` (raw export), checked, audited and cached.

    The cache key covers the source graph's bytes (weights, exporter, opset, workaround, shapes and
    export code are in them), the conversion code and policy, and onnx's version.
    """

    def __init__(self, source: OnnxArtifact, cache: ArtifactCache,
                 ops: Mapping[str, Sequence[str]] = FP16_OPS,
                 regions: Sequence[Mapping[str, Any]] = FP32_REGIONS) -> None:
        if source.config.precision != "fp32" or source.simplified:
            raise InvalidArgument("FP16 conversion", "the source must be a raw FP32 graph",
                                  observed=f"{source.variant} {source.config.precision}", expected="raw fp32",
                                  fix="convert the raw FP32 export (Chain.onnx does)")
        self.source = source
        self.cache = cache
        self.ops = {k: tuple(v) for k, v in ops.items()}
        self.regions = regions
        self.config = replace(source.config, precision="fp16")

    def key_fields(self) -> dict[str, Any]:
        return {"source_sha256": self.source.sha256, "code": mixed_code_digest(), "onnx": onnx.__version__,
                "ops": self.ops, "regions": [dict(r) for r in self.regions]}

    def _build(self, path: Path) -> dict[str, Any]:
        started = time.perf_counter()
        with step(f"converting ONNX to FP16 {self.config.label}", "converted"):
            model = self.source.load()
            mixed = convert_to_mixed(model, fp16_nodes(model, self.ops.get("seeds", ()), self.ops.get("follow", ())))
        subject = f"FP16 ONNX ({self.config.label})"
        check(mixed, subject)
        precision = audit_precision(mixed, self.regions)
        if not precision.passed:  # the policy or the conversion is wrong: never cache such a graph
            raise ExportError(subject, "the FP16 conversion put FP32-only operations in FP16",
                              observed="; ".join(f.row() for f in precision.findings[:4]),
                              expected="FP32 in every region of harness/model/precision.py",
                              fix="fix FP16_OPS in harness/model/precision.py")
        audit = audit_model(mixed)
        atomic_write_bytes(path, mixed.SerializeToString())
        return {"node_count": audit.node_count, "audit": audit.as_dict(),
                "export_seconds": round(time.perf_counter() - started, 4), "source_sha256": self.source.sha256}

    def __call__(self) -> OnnxArtifact:
        entry = self.cache.get_or_build("onnx-fp16", self.key_fields(), "model.onnx", self._build)
        return artifact_of(entry, self.config, simplified=False)
