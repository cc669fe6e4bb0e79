"""Precision audit: which operations of a graph (or of a TensorRT engine) compute in, or round
their values through, FP16 where a policy says they must stay FP32.

Model-neutral: a policy is a sequence of regions (see ``harness/model/precision.py`` for MVSNet's
and for the selector syntax) and an optional mapping from the policy's tensor names to a user
graph's. Rules, per region:

* a node other than a Cast that reads or writes a float16/bfloat16 tensor computes in FP16;
* a float16 tensor produced *and* read inside the region is a rounding through FP16 (a Cast round
  trip); a Cast entering the region from FP16 or leaving it to FP16 is the region's boundary;
* a float32 weight of more than ``MIN_WEIGHT_SIZE`` values, not all integers, that FP16 represents
  exactly was stored through FP16 (a trained weight is never exact in FP16 by chance).

``whole_graph=True`` (an FP32 graph) makes the whole graph one region. The engine side reads the
TensorRT engine inspector's layer JSON: a layer named after a protected node whose inputs or
outputs are FP16 fails.

TF32 (``tf32_exposed_nodes``, ``audit_engine_tf32``): ONNX Runtime's CUDA provider and trtexec
run FP32 MatMul/Gemm/Einsum in TF32 by default (inputs rounded to 10 mantissa bits). Where such a
node computes a GridSample's sampling grid, the rounding moves the samples by a fraction of a
pixel; the graph-level function names those nodes (a warning: whether they run in TF32 is the
runtime's setting), the engine side names the layers the inspector shows running a TF32 kernel.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness.convert.graph import (
    FLOAT_TYPES,
    LOW_PRECISION,
    TYPE_NAMES,
    constant_value,
    downstream,
    node_label,
    producers,
    tensor_types,
    upstream,
)
from harness.errors import ConfigError, HarnessError

#: ops a GPU runtime runs in TF32 when TF32 is allowed (FusedMatMul: ONNX Runtime's contrib fusion)
TF32_OPS = frozenset({"MatMul", "Gemm", "Einsum", "FusedMatMul"})
#: the two ways out of a TF32-rounded sampling grid, in every message that reports one
TF32_FIX = ("build and run without TF32 (trtexec --noTF32; ONNX Runtime CUDA provider option use_tf32=0) or "
            "export the geometry TF32-safe: compute the projection and the grid with elementwise multiply-adds "
            "instead of matmul, as harness/model/geometry.py does")
#: ops whose input k is a sampling grid (GridSample: input 1)
GRID_INPUTS = {"GridSample": 1}
#: ops that move or re-type values without computing: a region's start is walked back through them
TRANSPARENT = frozenset({"Cast", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Transpose"})
MIN_WEIGHT_SIZE = 64


class PrecisionError(HarnessError, AssertionError):
    """An operation a precision policy keeps in FP32 computes in, or is rounded through, FP16."""


@dataclass(frozen=True)
class PrecisionFinding:
    region: str
    node: str
    op: str
    problem: str

    def row(self) -> str:
        return f"{self.region}: {self.node} ({self.op}) {self.problem}"


@dataclass(frozen=True)
class PrecisionAudit:
    findings: tuple[PrecisionFinding, ...]
    region_nodes: Mapping[str, int] = field(default_factory=dict)  # nodes checked per region

    @property
    def passed(self) -> bool:
        return not self.findings

    def __bool__(self) -> bool:
        return self.passed

    def require(self, subject: str) -> None:
        """Raise ``PrecisionError`` listing the findings (first six)."""
        if self.findings:
            listed = "; ".join(f.row() for f in self.findings[:6])
            more = f" (+{len(self.findings) - 6} more)" if len(self.findings) > 6 else ""
            raise PrecisionError(subject, "FP32-only operations run in or are rounded through FP16 (or TF32)",
                                 observed=listed + more,
                                 expected=f"FP32 in every region of the policy ({', '.join(self.region_nodes)})",
                                 fix="keep those nodes FP32 (explicit Casts around them, or exclude them from "
                                 "AutoCast; see TENSORRT_NOTES.md on FP16 pitfalls); for a grid in TF32, " + TF32_FIX)


def _parse(selector: str) -> tuple[bool, tuple[str, ...], str, int]:
    first = selector.startswith("first:")
    body = selector.removeprefix("first:")
    ops, _, port = body.rpartition(".")
    if not ops or not (port.startswith("in") or port.startswith("out")) or not port.lstrip("inout").isdigit():
        raise ConfigError(selector, "not a tensor selector", observed=selector,
                          expected="input:<name>, output:<name>, <Op>.in<k>, <Op>.out<k> or first:<Op>.in<k>",
                          fix="fix the region (syntax: harness/model/precision.py)")
    side = "in" if port.startswith("in") else "out"
    return first, tuple(ops.split("|")), side, int(port[len(side):])


def _tensors(model: onnx.ModelProto, selectors: Iterable[str], names: Mapping[str, str],
             start: set[str] | None = None) -> set[str]:
    graph = model.graph
    found: set[str] = set()
    for selector in selectors:
        kind, _, name = selector.partition(":")
        if kind in ("input", "output") and name:
            wanted = names.get(name, name)
            pool = graph.input if kind == "input" else graph.output
            found |= {v.name for v in pool if v.name == wanted}
            continue
        first, ops, side, k = _parse(selector)
        nodes = [i for i, n in enumerate(graph.node) if n.op_type in ops]
        if first and start is not None:
            after = downstream(model, start)
            nodes = [i for i in nodes if i in after]
            nodes = [i for i in nodes if not (upstream(model, graph.node[i].input) & set(nodes))]
        for i in nodes:
            ports = graph.node[i].input if side == "in" else graph.node[i].output
            if k < len(ports) and ports[k]:
                found.add(ports[k])
    return found


def _walk_back(model: onnx.ModelProto, tensors: set[str]) -> set[str]:
    made_by = producers(model)
    out = set()
    for tensor in tensors:
        while tensor in made_by and model.graph.node[made_by[tensor]].op_type in TRANSPARENT:
            tensor = model.graph.node[made_by[tensor]].input[0]
        out.add(tensor)
    return out


def region_nodes(model: onnx.ModelProto, region: Mapping[str, Any], names: Mapping[str, str] | None = None) -> set[int]:
    """Indices of the nodes a policy region covers in ``model``."""
    names = names or {}
    if "ops" in region:
        return {i for i, n in enumerate(model.graph.node) if n.op_type in tuple(region["ops"])}
    if "from" not in region or "to" not in region:
        raise ConfigError(str(region.get("name", region)), "a region needs 'ops', or 'from' and 'to'", observed=dict(region),
                          expected="see harness/model/precision.py")
    start = _walk_back(model, _tensors(model, region["from"], names))
    end = _tensors(model, region["to"], names, start)
    return downstream(model, start) & upstream(model, end)


def _exact_in_fp16(value: np.ndarray) -> bool:
    if value.dtype != np.float32 or value.size <= MIN_WEIGHT_SIZE or np.all(value == np.round(value)):
        return False
    return bool(np.array_equal(value.astype(np.float16).astype(np.float32), value))


def audit_precision(model: onnx.ModelProto, regions: Sequence[Mapping[str, Any]] = (),
                    names: Mapping[str, str] | None = None, whole_graph: bool = False) -> PrecisionAudit:
    """Audit ``model`` against ``regions`` (or, with ``whole_graph``, every node)."""
    graph = model.graph
    types = tensor_types(model)
    made_by = producers(model)
    policy: list[tuple[str, set[int]]] = [("whole graph", set(range(len(graph.node))))] if whole_graph else []
    policy += [(str(r.get("name", "region")), region_nodes(model, r, names)) for r in regions]
    findings: list[PrecisionFinding] = []
    seen: set[tuple[str, str]] = set()

    def add(region: str, index: int, problem: str) -> None:
        node = graph.node[index]
        label = node_label(node, index)
        if (label, problem) not in seen:
            seen.add((label, problem))
            findings.append(PrecisionFinding(region, label, node.op_type, problem))

    for region, nodes in policy:
        for i in sorted(nodes):
            node = graph.node[i]
            ins = [t for t in node.input if t and types.get(t) in FLOAT_TYPES]
            outs = [t for t in node.output if t and types.get(t) in FLOAT_TYPES]
            low_in = [t for t in ins if types[t] in LOW_PRECISION]
            low_out = [t for t in outs if types[t] in LOW_PRECISION]
            if node.op_type != "Cast" and node.op_type not in ("Constant",) and (low_in or low_out):
                add(region, i, f"computes in {TYPE_NAMES.get(types[(low_in or low_out)[0]], 'low precision')}")
            for t in low_in:
                if made_by.get(t) in nodes and node.op_type == "Cast":
                    add(region, i, f"rounds its input through {TYPE_NAMES.get(types[t], 'low precision')} (Cast round trip)")
            for t in ins:
                value = constant_value(model, t) if t not in made_by or graph.node[made_by[t]].op_type == "Constant" \
                    else None
                if value is not None and _exact_in_fp16(value):
                    add(region, i, f"reads a float32 weight stored through float16 ({t})")
    return PrecisionAudit(tuple(findings), {name: len(nodes) for name, nodes in policy})


def protected_node_names(model: onnx.ModelProto, regions: Sequence[Mapping[str, Any]],
                         names: Mapping[str, str] | None = None) -> set[str]:
    """ONNX node names inside the policy's regions (to match TensorRT layer names)."""
    return {graph_node.name for r in regions for i in region_nodes(model, r, names)
            if (graph_node := model.graph.node[i]).name}


def tf32_exposed_nodes(model: onnx.ModelProto) -> list[str]:
    """Names (``node_label``) of the FP32 MatMul/Gemm/Einsum/FusedMatMul nodes from which a
    GridSample's grid input is computed, in graph order: the nodes TF32 would round on ONNX Runtime
    CUDA (``use_tf32`` defaults to 1) or in a TensorRT engine built with TF32 (trtexec's default).
    An empty list: the grid is computed by operators TF32 does not touch. Nodes reading FP16
    tensors are left out (TF32 concerns FP32 math; the precision audit covers FP16)."""
    graph = model.graph
    grids = [n.input[k] for n in graph.node if (k := GRID_INPUTS.get(n.op_type)) is not None and len(n.input) > k]
    if not grids:
        return []
    ancestry = upstream(model, grids)
    candidates = sorted(i for i in ancestry if graph.node[i].op_type in TF32_OPS)
    if not candidates:
        return []
    types = tensor_types(model)
    return [node_label(graph.node[i], i) for i in candidates
            if not any(types.get(t) in LOW_PRECISION for t in graph.node[i].input if t)]


def _mentions(layer: Mapping[str, Any], names: Iterable[str]) -> str | None:
    """The first of ``names`` that the layer's name or metadata (TensorRT puts the ONNX node names
    there, ``[ONNX Layer: ...]``) mentions."""
    text = f"{layer.get('Name', '')} {layer.get('Metadata', '')}"
    return next((n for n in names if n and n in text), None)


def audit_engine_tf32(layers: Sequence[Mapping[str, Any]], exposed: Iterable[str]) -> PrecisionAudit:
    """Findings from the engine inspector's ``Layers`` (JSON, ProfilingVerbosity DETAILED): a layer
    built from a TF32-exposed ONNX node (``tf32_exposed_nodes``) whose kernel (``TacticName``) is a
    TF32 one (``tf32`` in its name, as cuBLAS/CASK GEMM kernels are named). Myelin-fused layers
    (``ForeignNode``) do not name their math mode in the inspector: they are not reported."""
    names = sorted(set(exposed), key=len, reverse=True)  # the longest name first: /MatMul_1 before /MatMul
    findings = []
    for layer in layers:
        node = _mentions(layer, names)
        if node is None:
            continue
        kernel = str(layer.get("TacticName", "")) + " " + str(layer.get("LayerType", ""))
        if "tf32" in kernel.lower():
            findings.append(PrecisionFinding("sampling grid (TF32)", str(layer.get("Name", node)),
                                             str(layer.get("LayerType", "?")),
                                             f"runs a TF32 kernel ({layer.get('TacticName', '?')}) on the "
                                             f"sampling grid (ONNX node {node})"))
    return PrecisionAudit(tuple(findings), {"engine layers (TF32)": len(layers)})


def _low_format(entry: Any) -> bool:
    text = json.dumps(entry) if not isinstance(entry, str) else entry
    return any(word in text for word in ("FP16", "Half", "BF16", "fp16", "half"))


def audit_engine_layers(layers: Sequence[Mapping[str, Any]], protected: set[str]) -> PrecisionAudit:
    """Findings from the engine inspector's ``Layers`` (JSON, ProfilingVerbosity DETAILED): a layer
    whose name contains a protected ONNX node name and whose inputs or outputs are FP16."""
    findings = []
    for layer in layers:
        name = str(layer.get("Name", ""))
        if not any(p in name for p in protected):
            continue
        ports = [*layer.get("Inputs", []), *layer.get("Outputs", [])]
        formats = [p.get("Format/Datatype", p) if isinstance(p, Mapping) else p for p in ports]
        if any(_low_format(f) for f in formats):
            findings.append(PrecisionFinding("engine", name, str(layer.get("LayerType", "?")),
                                             "runs with FP16 inputs or outputs in the engine"))
    return PrecisionAudit(tuple(findings), {"engine layers": len(layers)})


def audit_onnx_file(path: str | Path, regions: Sequence[Mapping[str, Any]], names: Mapping[str, str] | None = None,
                    whole_graph: bool = False, inspector: str | Path | None = None) -> PrecisionAudit:
    """The audit of an ONNX file (any model: ``regions`` and ``names`` say what must stay FP32
    and what its tensors are called) and, when ``inspector`` names an existing inspector JSON of
    the engine built from it, of the engine's layers too."""
    model = onnx.load(str(path))
    audit = audit_precision(model, regions, names, whole_graph)
    layers = load_inspector_layers(inspector) if inspector is not None else None
    if layers is None:
        return audit
    engine = audit_engine_layers(layers, protected_node_names(model, regions, names))
    tf32 = audit_engine_tf32(layers, tf32_exposed_nodes(model))
    return PrecisionAudit(audit.findings + engine.findings + tf32.findings,
                          {**audit.region_nodes, **engine.region_nodes, **tf32.region_nodes})


def load_inspector_layers(path: str | Path) -> list[dict[str, Any]] | None:
    """The ``Layers`` list of an inspector JSON file; None when the file is absent (the engine
    was built where it could not be inspected)."""
    path = Path(path)
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    layers = data.get("Layers", []) if isinstance(data, dict) else data
    return [layer if isinstance(layer, dict) else {"Name": str(layer)} for layer in layers]
