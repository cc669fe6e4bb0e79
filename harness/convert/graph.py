"""Model-neutral reading and editing helpers for ``onnx.ModelProto`` graphs: element types of
every tensor, producers and consumers, reachability, constant values. Used by the precision
audit (``convert/precision.py``) and by the mutation catalogue (``harness/mutate.py``); they know
nothing about MVSNet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE})
LOW_PRECISION = frozenset({TensorProto.FLOAT16, TensorProto.BFLOAT16})
TYPE_NAMES: dict[int, str] = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16",
              TensorProto.DOUBLE: "float64"}


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type (``TensorProto`` enum) of every tensor the graph names, from the declared
    inputs/outputs/initializers and ONNX shape inference; stale ``value_info`` is ignored."""
    bare = copy_model(model)
    del bare.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is best effort; declared types below still apply
        inferred = bare
    types: dict[str, int] = {}
    for info in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
        if node.op_type == "Cast" and node.output:
            for attr in node.attribute:
                if attr.name == "to":
                    types[node.output[0]] = int(attr.i)
    return types


def producers(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> index of the node producing it."""
    return {out: i for i, node in enumerate(model.graph.node) for out in node.output if out}


def consumers(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Tensor name -> indices of the nodes reading it."""
    found: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(model.graph.node):
        for name in node.input:
            if name:
                found[name].append(i)
    return found


def downstream(model: onnx.ModelProto, tensors: Iterable[str]) -> set[int]:
    """Indices of every node that (transitively) reads one of ``tensors``."""
    readers = consumers(model)
    seen: set[int] = set()
    stack = [i for t in tensors for i in readers.get(t, [])]
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        stack.extend(j for out in model.graph.node[i].output for j in readers.get(out, []))
    return seen


def upstream(model: onnx.ModelProto, tensors: Iterable[str]) -> set[int]:
    """Indices of every node that (transitively) produces one of ``tensors``."""
    made_by = producers(model)
    seen: set[int] = set()
    stack = [made_by[t] for t in tensors if t in made_by]
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        stack.extend(made_by[t] for t in model.graph.node[i].input if t in made_by)
    return seen


def constant_value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The value of an initializer or Constant-node output, else None."""
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
    return None


def set_constant_value(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    """Replace an initializer's or Constant node's value in place (same name)."""
    for init in model.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(value, name))
            return
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    attr.t.CopyFrom(numpy_helper.from_array(value))
                    return
    raise KeyError(name)


def attribute(node: onnx.NodeProto, name: str) -> object:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return None


def set_attribute(node: onnx.NodeProto, name: str, value: object) -> None:
    for i, attr in enumerate(node.attribute):
        if attr.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


def fresh_name(model: onnx.ModelProto, base: str) -> str:
    taken = {t for n in model.graph.node for t in (*n.input, *n.output)}
    taken |= {i.name for i in model.graph.initializer} | {i.name for i in model.graph.input}
    taken |= {n.name for n in model.graph.node if n.name}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def rename_tensors(model: onnx.ModelProto, mapping: dict[str, str]) -> None:
    """Rename tensors everywhere (graph inputs and outputs, node inputs and outputs, initializers)
    in place; names not in ``mapping`` stay."""
    if not mapping:
        return
    graph = model.graph
    for info in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        info.name = mapping.get(info.name, info.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
