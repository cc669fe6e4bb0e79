"""Model-neutral graph edits for injecting bugs: reroute a tensor through new nodes, round it
through FP16 or TF32, run a set of nodes in FP16, drop an activation, scale or round a constant.
Every function edits the given ``onnx.ModelProto`` in place and keeps the node list topological.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper

from harness.convert.graph import constant_value, consumers, fresh_name, producers, set_constant_value, tensor_types
from harness.errors import HarnessError


class MutationError(HarnessError, ValueError):
    """A graph edit found nothing to change in the graph it was given."""


def _insert(model: onnx.ModelProto, position: int, nodes: Iterable[onnx.NodeProto]) -> None:
    for offset, node in enumerate(nodes):
        model.graph.node.insert(position + offset, node)


def _first_reader(model: onnx.ModelProto, tensor: str, readers: Iterable[int] | None = None) -> int:
    found = list(readers) if readers is not None else consumers(model).get(tensor, [])
    return min(found) if found else len(model.graph.node)


def reroute(model: onnx.ModelProto, tensor: str, make: Callable[[str], list[onnx.NodeProto]],
            readers: Iterable[int] | None = None) -> None:
    """Put the nodes ``make(tensor)`` (whose last output is the new value) between ``tensor``
    and its readers (all of them, or the node indices ``readers``)."""
    chosen = sorted(set(readers) if readers is not None else set(consumers(model).get(tensor, [])))
    if not chosen:
        raise MutationError(tensor, "tensor has no reader to reroute", observed="no consumer", expected="a tensor some node reads",
                            fix="pick a tensor inside the graph")
    nodes = make(tensor)
    new = nodes[-1].output[0]
    for i in chosen:
        node = model.graph.node[i]
        for k, name in enumerate(node.input):
            if name == tensor:
                node.input[k] = new
    _insert(model, chosen[0], nodes)


def _cast(model: onnx.ModelProto, source: str, to: int, tag: str) -> onnx.NodeProto:
    out = fresh_name(model, f"{source}__{tag}")
    return helper.make_node("Cast", [source], [out], to=to, name=fresh_name(model, f"mutate/{tag}/{source}"))


def round_through(model: onnx.ModelProto, tensor: str, low: int = TensorProto.FLOAT16,
                  readers: Iterable[int] | None = None) -> None:
    """Cast ``tensor`` to ``low`` and back: FP32 compute on values rounded to FP16."""
    def make(source: str) -> list[onnx.NodeProto]:
        down = _cast(model, source, low, "to_fp16")
        up = helper.make_node("Cast", [down.output[0]], [f"{down.output[0]}__back"], to=TensorProto.FLOAT,
                              name=f"{down.name}/back")
        return [down, up]
    reroute(model, tensor, make, readers)


def tf32_round(model: onnx.ModelProto, tensor: str, readers: Iterable[int] | None = None) -> None:
    """Round ``tensor`` to TF32's 10-bit mantissa (Veltkamp split: hi = p - (p - x), p = x * 8193),
    what a GPU's TF32 MatMul does to its inputs; plain FP32 ops, so it runs anywhere."""
    def make(source: str) -> list[onnx.NodeProto]:
        c = fresh_name(model, f"{source}__veltkamp_c")
        p, q, hi = (fresh_name(model, f"{source}__tf32_{s}") for s in ("p", "q", "hi"))
        return [
            helper.make_node("Constant", [], [c], value=helper.make_tensor(c, TensorProto.FLOAT, [], [8193.0])),
            helper.make_node("Mul", [source, c], [p]),
            helper.make_node("Sub", [p, source], [q]),
            helper.make_node("Sub", [p, q], [hi]),
        ]
    reroute(model, tensor, make, readers)


def compute_in(model: onnx.ModelProto, nodes: Iterable[int], low: int = TensorProto.FLOAT16) -> None:
    """Run the nodes ``nodes`` in ``low`` precision: FP32 inputs from outside are cast down,
    outputs read outside (or graph outputs) are cast back up; inside, every float tensor is low."""
    chosen = set(nodes)
    if not chosen:
        raise MutationError("compute_in", "no node to run in low precision", observed="an empty set", expected="one node index or more",
                            fix="select the nodes first")
    types = tensor_types(model)
    made_by = producers(model)
    readers = consumers(model)
    outputs = {o.name for o in model.graph.output}
    graph = model.graph
    entries = sorted({t for i in chosen for t in graph.node[i].input
                      if t and types.get(t) == TensorProto.FLOAT and made_by.get(t) not in chosen})
    exits = sorted({t for i in chosen for t in graph.node[i].output
                    if types.get(t) == TensorProto.FLOAT
                    and (t in outputs or any(j not in chosen for j in readers.get(t, [])))})
    renamed = {t: fresh_name(model, f"{t}__low") for t in exits}
    targets = [graph.node[i] for i in chosen]
    for node in targets:
        for k, name in enumerate(node.output):
            if name in renamed:
                node.output[k] = renamed[name]
        for k, name in enumerate(node.input):
            if name in renamed and made_by.get(name) in chosen:
                node.input[k] = renamed[name]
    for tensor in entries:
        reroute(model, tensor, lambda src: [_cast(model, src, low, "low")],
                readers=[i for i, n in enumerate(graph.node) if n in targets and tensor in n.input])
    for tensor, low_name in renamed.items():
        at = max(i for i, n in enumerate(graph.node) if low_name in n.output) + 1
        _insert(model, at, [helper.make_node("Cast", [low_name], [tensor], to=TensorProto.FLOAT,
                                             name=fresh_name(model, f"mutate/up/{tensor}"))])


def drop_node(model: onnx.ModelProto, index: int) -> None:
    """Remove a one-input node (an activation), wiring its readers to its input."""
    node = model.graph.node[index]
    source, result = node.input[0], node.output[0]
    for other in model.graph.node:
        for k, name in enumerate(other.input):
            if name == result:
                other.input[k] = source
    del model.graph.node[index]


def scale_constant(model: onnx.ModelProto, name: str, factor: float) -> None:
    value = constant_value(model, name)
    if value is None:
        raise MutationError(name, "not a constant", observed="computed at run time", expected="an initializer or Constant output",
                            fix="scale or round an initializer")
    set_constant_value(model, name, (value.astype(np.float64) * factor).astype(value.dtype))


def round_constant(model: onnx.ModelProto, name: str) -> None:
    value = constant_value(model, name)
    if value is None:
        raise MutationError(name, "not a constant", observed="computed at run time", expected="an initializer or Constant output",
                            fix="scale or round an initializer")
    set_constant_value(model, name, value.astype(np.float16).astype(value.dtype))
