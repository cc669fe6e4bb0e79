"""A user's ONNX graph as it declares itself, read without running it: its tensors (names, static
or symbolic shapes, dtypes), opset, producer, the TensorRT operator audit and the attributes of
its GridSample nodes; and a probe copy whose intermediate stages are graph outputs (for
``harness.check``'s localisation of a failing graph).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from harness.convert.audit import audit_model
from harness.errors import InvalidArgument, MissingFile
from harness.model.io import STAGE_OPERATORS, TensorSpec


@dataclass(frozen=True)
class GraphFacts:
    """What the user's ONNX file declares: tensors, opset, producer, audit, GridSample attributes."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    producer: str
    node_count: int
    audit: dict[str, Any]
    grid_samples: tuple[dict[str, Any], ...]

    def summary(self) -> str:
        findings = self.audit.get("trt_findings", [])
        verdict = "TensorRT audit ok" if not findings else "TensorRT audit: " + "; ".join(
            f"{f['node']} ({f['op']}): {f['problem']}" for f in findings[:3])
        return f"opset {self.opset}, producer {self.producer or 'unknown'}, {self.node_count} nodes; {verdict}"


def _dtype(elem_type: int) -> str:
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        return f"onnx-type-{elem_type}"


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim)
    return TensorSpec(value.name, dims, _dtype(tensor.elem_type))


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            value = onnx.helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


def inspect_onnx(path: Path) -> GraphFacts:
    """Read the user's graph (no inference): tensors, opset, producer, audit, GridSample nodes."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(str(path), "ONNX file not found", observed="no such file", expected="an .onnx file",
                          fix="pass the file torch.onnx.export / onnxsim wrote")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own types; report, never swallow
        raise InvalidArgument(str(path), "not a readable ONNX file", observed=f"{type(exc).__name__}: {str(exc)[:160]}",
                              expected="an ONNX model file", fix="re-export the model") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)
    audit = audit_model(model)
    grid = tuple(
        {"node": n.name or f"node{i}", "mode": str(_attr(n, "mode", "bilinear" if audit.opset < 20 else "linear")),
         "align_corners": int(_attr(n, "align_corners", 0)),  # type: ignore[call-overload]
         "padding_mode": str(_attr(n, "padding_mode", "zeros"))}
        for i, n in enumerate(model.graph.node) if n.op_type == "GridSample")
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return GraphFacts(path, inputs, tuple(_spec(v) for v in model.graph.output), audit.opset, producer,
                      audit.node_count, audit.as_dict(), grid)



def probe_graph(path: Path, out: Path) -> dict[str, str]:
    """A copy of the user's graph at ``out`` whose GridSample and (last) Softmax outputs are graph
    outputs too; returns ``{graph tensor: stage}`` (``warped_<v>``, ``prob``)."""
    model = onnx.load(str(path))
    stages: dict[str, str] = {}
    for stage, op in STAGE_OPERATORS:
        nodes = [n for n in model.graph.node if n.op_type == op]
        if stage == "prob":
            nodes = nodes[-1:]
        for index, node in enumerate(nodes, 1):
            stages[node.output[0]] = f"{stage}_{index}" if stage == "warped" else stage
    present = {o.name for o in model.graph.output}
    for name in stages:
        if name not in present:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return stages


def _proportional(graph: Any, tensor: Any, axis: int) -> bool:
    """Whether every slice of ``graph`` along ``axis`` is a multiple of ``tensor``'s (a
    BatchNorm folded into the convolution at export scales each output channel)."""
    import numpy as np

    g = np.moveaxis(graph.astype(np.float64), axis, 0).reshape(graph.shape[axis], -1)
    t = np.moveaxis(tensor.astype(np.float64), axis, 0).reshape(tensor.shape[axis], -1)
    norms = (t * t).sum(axis=1)
    scale = np.where(norms > 0, (g * t).sum(axis=1) / np.where(norms > 0, norms, 1.0), 0.0)
    residual = np.sqrt(((g - scale[:, None] * t) ** 2).sum(axis=1))
    return bool(np.all(residual <= 1e-2 * np.sqrt((g * g).sum(axis=1)) + 1e-6))  # FP16-stored weights too


def conv_weights_differing(path: Path, tensors: dict[str, Any]) -> tuple[int, int]:
    """``(differing, total)`` over the graph's convolution weights stored as initializers: a weight
    differs when no checkpoint tensor (``tensors``: name -> numpy array) of its shape matches it up
    to a scale per output channel (Conv: axis 0, ConvTranspose: axis 1)."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    initializers = {i.name: i for i in model.graph.initializer}
    by_shape: dict[tuple[int, ...], list[Any]] = {}
    for value in tensors.values():
        if value.ndim >= 3:  # convolution weights: [out, in, k...]
            by_shape.setdefault(tuple(value.shape), []).append(value)
    total = differing = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        axis = 1 if node.op_type == "ConvTranspose" else 0
        total += 1
        if not any(_proportional(weight, t, axis) for t in by_shape.get(tuple(weight.shape), [])):
            differing += 1
    return differing, total
