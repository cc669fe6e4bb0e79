"""A catalogue of realistic conversion bugs (and benign rewrites) as edits of an exported graph.

Each mutation is a named function ``onnx.ModelProto -> onnx.ModelProto`` (a copy; the input is
never changed) whose docstring says which real-world bug it stands for. ``suites/test_sensitivity.py``
and ``python -m harness mutate`` inject every one into the small-case graphs and check that the
gate fails the bugs and passes the benign rewrites.

The edits themselves (``convert/graph_edit.py``) are model-neutral; the catalogue finds MVSNet's parts by structure (op types and data flow, not node
names), so it applies to the torchscript and dynamo exports alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from harness.convert.graph import (
    attribute,
    constant_value,
    consumers,
    copy_model,
    downstream,
    producers,
    rename_tensors,
    set_attribute,
    set_constant_value,
    upstream,
)
from harness.convert.graph_edit import (
    MutationError,
    compute_in,
    drop_node,
    reroute,
    round_constant,
    round_through,
    scale_constant,
    tf32_round,
)

NOT_APPLICABLE = "pass names= for a graph with other tensor names, or leave this mutation out"
Edit = Callable[[onnx.ModelProto], onnx.ModelProto]


@dataclass(frozen=True)
class Mutation:
    name: str
    doc: str
    edit: Edit
    benign: bool = False
    precisions: tuple[str, ...] = ("fp32", "fp16")
    variant: str = "simplified"  # which exported graph it is applied to

    def __call__(self, model: onnx.ModelProto, names: Mapping[str, str] | None = None) -> onnx.ModelProto:
        """The mutated copy. ``names`` maps MVSNet's tensor names (``depth_values``, ``depth``,
        ``proj_matrices``, ...) to a user graph's, so the catalogue applies to any MVSNet export."""
        working = copy_model(model)
        to_ours = {theirs: ours for ours, theirs in (names or {}).items() if theirs != ours}
        rename_tensors(working, to_ours)
        edited = self.edit(working)
        rename_tensors(edited, {ours: theirs for theirs, ours in to_ours.items()})
        del edited.graph.value_info[:]  # types inside may have changed; runtimes re-infer
        return edited


CATALOGUE: dict[str, Mutation] = {}


def mutation(name: str, *, benign: bool = False, precisions: tuple[str, ...] = ("fp32", "fp16"),
             variant: str = "simplified") -> Callable[[Edit], Edit]:
    def register(edit: Edit) -> Edit:
        doc = " ".join((edit.__doc__ or "").split())
        CATALOGUE[name] = Mutation(name, doc, edit, benign, precisions, variant)
        return edit
    return register


def mutations(precision: str) -> list[Mutation]:
    return [m for m in CATALOGUE.values() if precision in m.precisions]


# -- MVSNet's parts, found by structure -------------------------------------------------------------

def _of(model: onnx.ModelProto, *ops: str) -> list[int]:
    return [i for i, n in enumerate(model.graph.node) if n.op_type in ops]


def _need(found: list[int], what: str) -> list[int]:
    if not found:
        raise MutationError(what, "not found in the graph", observed="no match", expected=f"an MVSNet export with {what}", fix=NOT_APPLICABLE)
    return found


def _convs(model: onnx.ModelProto, rank: int) -> list[int]:
    """Conv nodes whose weight has ``rank`` dimensions (4: 2-D feature convs, 5: 3-D cost convs)."""
    found = []
    for i in _of(model, "Conv"):
        weight = constant_value(model, model.graph.node[i].input[1])
        if weight is not None and weight.ndim == rank:
            found.append(i)
    return _need(found, f"Conv with a rank-{rank} weight")


def _geometry(model: onnx.ModelProto) -> tuple[set[int], set[int], set[int]]:
    """(nodes computing the grids, nodes reading the projections' data, nodes reading the depth
    hypotheses' data). The projections are ``proj_matrices`` and, when fed, ``inverse_proj_matrices``."""
    inputs = {i.name for i in model.graph.input} & {"proj_matrices", "inverse_proj_matrices"}
    grids = upstream(model, [model.graph.node[i].input[1] for i in _need(_of(model, "GridSample"), "GridSample")])
    return grids, downstream(model, inputs), downstream(model, ["depth_values"])


def _from(model: onnx.ModelProto, tensor: str, nodes: set[int], inputs: set[str]) -> bool:
    """Whether ``tensor`` is a graph input of ``inputs`` or an output of one of ``nodes``."""
    return tensor in inputs or producers(model).get(tensor) in nodes


def _grid_products(model: onnx.ModelProto) -> list[int]:
    """The multiply-adds of the rotation times the pixel grid (``rot @ [x, y, 1]``, MatMuls in
    MVSNet_pytorch, elementwise in harness/model/geometry.py): every node of the grids that reads
    the projections' data and pixel coordinates (a Mul of a rotation coefficient and x or y), and
    the Adds summing them, up to the product with the depth hypotheses (excluded)."""
    grids, projected, by_depth = _geometry(model)
    inputs = {"proj_matrices", "inverse_proj_matrices"}
    muls = [i for i in _of(model, "Mul", "MatMul") if i in grids and i not in by_depth
            and sum(_from(model, t, projected, inputs) for t in model.graph.node[i].input) == 1]
    after = downstream(model, [t for m in muls for t in model.graph.node[m].output])
    adds = [i for i in _of(model, "Add") if i in after and i in grids and i not in by_depth]
    return _need(sorted({*muls, *adds}), "grid product (rotation x pixel grid)")


def _grid_product_inputs(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(tensor, output name of the node reading it) for every factor and term entering the grid
    product: the rotation coefficients, the pixel coordinates and the third column (what a MatMul
    ``rot @ [x, y, 1]`` reads)."""
    nodes = _grid_products(model)
    made = {t for i in nodes for t in model.graph.node[i].output}
    return [(t, model.graph.node[i].output[0]) for i in nodes for t in dict.fromkeys(model.graph.node[i].input)
            if t and t not in made]


def _projection_products(model: onnx.ModelProto) -> list[int]:
    """The multiply-adds of ``src_proj @ inv_ref_proj``: the Muls of two projections' values with
    no such Mul after them (those of a closed-form inverse come before), and the Adds summing them."""
    grids, projected, by_depth = _geometry(model)
    inputs = {"proj_matrices", "inverse_proj_matrices"}
    both = [i for i in _of(model, "Mul", "MatMul") if i in grids and i not in by_depth
            and all(_from(model, t, projected, inputs) for t in model.graph.node[i].input)]
    last = [i for i in both if not downstream(model, model.graph.node[i].output) & set(both)]
    grid = set(_grid_products(model))
    after = downstream(model, [t for m in last for t in model.graph.node[m].output])
    adds = [i for i in _of(model, "Add") if i in after and i in grids and i not in by_depth and i not in grid
            and not upstream(model, model.graph.node[i].input) & grid]
    return _need(sorted({*last, *adds}), "projection product (src_proj @ inv_ref_proj)")


def _variance_nodes(model: onnx.ModelProto) -> list[int]:
    """From the sampled volumes to the first 3-D convolution's input (excluding Casts)."""
    samples = [t for i in _need(_of(model, "GridSample"), "GridSample") for t in model.graph.node[i].output]
    first_conv = model.graph.node[min(_convs(model, 5))]
    region = downstream(model, samples) & (upstream(model, [first_conv.input[0]]))
    return _need(sorted(i for i in region if model.graph.node[i].op_type != "Cast"), "variance")


def _regression_nodes(model: onnx.ModelProto) -> list[int]:
    softmax = _need(_of(model, "Softmax"), "Softmax")
    region = downstream(model, model.graph.node[softmax[0]].output) & upstream(model, ["depth"])
    return _need(sorted(region), "depth regression")


def _depth_values_readers(model: onnx.ModelProto, towards: str) -> list[int]:
    """Readers of the input ``depth_values`` whose data reaches the sampling grids (``grid``), or
    only the depth regression (``regression``)."""
    to_grid = upstream(model, [model.graph.node[i].input[1] for i in _of(model, "GridSample")])
    to_depth = upstream(model, ["depth"])
    readers = consumers(model).get("depth_values", [])
    chosen = [i for i in readers if (i in to_grid if towards == "grid" else i in to_depth and i not in to_grid)]
    return _need(chosen, f"depth_values towards {towards}")


def _view_gathers(model: onnx.ModelProto, data: str | None) -> list[tuple[int, int]]:
    """(index of the Gather taking view 1, of the one taking view 2) per gathered tensor."""
    by_data: dict[str, dict[int, int]] = {}
    for i in _of(model, "Gather"):
        node = model.graph.node[i]
        index = constant_value(model, node.input[1])
        if index is not None and index.ndim == 0 and int(index) in (1, 2) and (attribute(node, "axis") or 0) == 1:
            by_data.setdefault(node.input[0], {})[int(index)] = i
    pairs = [(v[1], v[2]) for d, v in by_data.items() if 1 in v and 2 in v and (data is None or d == data)]
    return pairs


def _swap_gathers(model: onnx.ModelProto, pairs: list[tuple[int, int]]) -> None:
    for a, b in pairs:
        na, nb = model.graph.node[a], model.graph.node[b]
        ia, ib = na.input[1], nb.input[1]
        na.input[1], nb.input[1] = ib, ia


def _deconvs(model: onnx.ModelProto) -> list[int]:
    return _need(_of(model, "ConvTranspose"), "ConvTranspose")


def _add_constant(model: onnx.ModelProto, readers: list[int], tensor: str, value: float) -> None:
    def make(source: str) -> list[onnx.NodeProto]:
        c, out = f"{source}__offset_c{readers[0]}", f"{source}__offset{readers[0]}"
        return [helper.make_node("Constant", [], [c], value=helper.make_tensor(c, TensorProto.FLOAT, [], [value])),
                helper.make_node("Add", [source, c], [out])]
    reroute(model, tensor, make, readers)


def _edit_inputs(model: onnx.ModelProto, pairs: list[tuple[str, str]], edit: Callable[..., None]) -> None:
    """``edit(model, tensor, readers=[reader])`` for each (tensor, reader's output name); the
    reader is looked up by name each time, as every edit inserts nodes before it."""
    for tensor, reader in pairs:
        index = next(i for i, n in enumerate(model.graph.node) if reader in n.output)
        edit(model, tensor, readers=[index])


# -- the catalogue: bugs ----------------------------------------------------------------------------

@mutation("gridsample-nearest")
def _gridsample_nearest(model: onnx.ModelProto) -> onnx.ModelProto:
    """GridSample read as nearest instead of bilinear (TensorRT's parser on the opset-20 mode
    rename, NVIDIA/TensorRT#4646)."""
    for i in _need(_of(model, "GridSample"), "GridSample"):
        set_attribute(model.graph.node[i], "mode", "nearest")
    return model


@mutation("gridsample-align-corners")
def _gridsample_align(model: onnx.ModelProto) -> onnx.ModelProto:
    """align_corners dropped (PyTorch's default changed to False after MVSNet was written)."""
    for i in _need(_of(model, "GridSample"), "GridSample"):
        set_attribute(model.graph.node[i], "align_corners", 0)
    return model


@mutation("gridsample-padding-border")
def _gridsample_border(model: onnx.ModelProto) -> onnx.ModelProto:
    """Padding mode border instead of zeros (a plugin or rewrite with the wrong default)."""
    for i in _need(_of(model, "GridSample"), "GridSample"):
        set_attribute(model.graph.node[i], "padding_mode", "border")
    return model


@mutation("softmax-axis")
def _softmax_axis(model: onnx.ModelProto) -> onnx.ModelProto:
    """Softmax over the last axis instead of depth (opset-13 default axis -1 after a rewrite)."""
    for i in _need(_of(model, "Softmax"), "Softmax"):
        set_attribute(model.graph.node[i], "axis", -1)
    return model


@mutation("relu-dropped-feature")
def _relu_feature(model: onnx.ModelProto) -> onnx.ModelProto:
    """One activation of the feature network lost in a fusion (the 4th 2-D convolution's ReLU)."""
    conv = model.graph.node[_convs(model, 4)[3]]
    drop_node(model, _need([i for i in consumers(model)[conv.output[0]] if model.graph.node[i].op_type == "Relu"],
                           "ReLU after a feature conv")[0])
    return model


@mutation("relu-dropped-deconv")
def _relu_deconv(model: onnx.ModelProto) -> onnx.ModelProto:
    """The ReLU after the first 3-D deconvolution lost in a Conv+BN+ReLU fusion."""
    deconv = model.graph.node[_deconvs(model)[0]]
    after = set(downstream(model, deconv.output))
    drop_node(model, min(i for i in after if model.graph.node[i].op_type == "Relu"))
    return model


@mutation("bn-epsilon", variant="raw")
def _bn_epsilon(model: onnx.ModelProto) -> onnx.ModelProto:
    """Batch-norm epsilon 1e-5 -> 1e-3 in one deconvolution's batch norm (a framework's default
    taken instead of the checkpoint's); on the raw graph, where batch norm is still a node."""
    bn = _need(_of(model, "BatchNormalization"), "BatchNormalization")[0]
    set_attribute(model.graph.node[bn], "epsilon", 1e-3)
    return model


@mutation("bias-x1.01-first-feature-conv")
def _bias_first(model: onnx.ModelProto) -> onnx.ModelProto:
    """The first feature convolution's bias scaled by 1.01 (a folding or quantisation slip)."""
    scale_constant(model, model.graph.node[_convs(model, 4)[0]].input[2], 1.01)
    return model


@mutation("bias-x1.01-last-feature-conv")
def _bias_last(model: onnx.ModelProto) -> onnx.ModelProto:
    """The last feature convolution's bias scaled by 1.01."""
    scale_constant(model, model.graph.node[_convs(model, 4)[-1]].input[2], 1.01)
    return model


@mutation("bias-dropped-3d-conv")
def _bias_dropped(model: onnx.ModelProto) -> onnx.ModelProto:
    """The bias of a 3-D convolution lost (an exporter that drops an optional input)."""
    node = model.graph.node[_convs(model, 5)[2]]
    if len(node.input) < 3 or constant_value(model, node.input[2]) is None:
        raise MutationError(node.name, "3-D convolution without a constant bias", observed=list(node.input),
                            expected="Conv(x, weight, bias) with an initializer bias", fix=NOT_APPLICABLE)
    del node.input[2]
    return model


@mutation("weight-x1.01-3d-conv")
def _weight_scaled(model: onnx.ModelProto) -> onnx.ModelProto:
    """One 3-D convolution's weights scaled by 1.01 (batch-norm folding with the wrong variance)."""
    scale_constant(model, model.graph.node[_convs(model, 5)[3]].input[1], 1.01)
    return model


@mutation("weight-fp16-3d-conv", precisions=("fp32",))
def _weight_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """One 3-D convolution's FP32 weights stored through FP16 (a converter's FP16 weight cache)."""
    round_constant(model, model.graph.node[_convs(model, 5)[3]].input[1])
    return model


@mutation("all-weights-fp16", precisions=("fp32",))
def _weights_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every convolution weight and bias stored through FP16 in the FP32 graph."""
    for i in _of(model, "Conv", "ConvTranspose"):
        for name in model.graph.node[i].input[1:]:
            if constant_value(model, name) is not None:
                round_constant(model, name)
    return model


# The geometry's two matrix products are MatMuls in MVSNet_pytorch and elementwise multiply-adds
# in the harness's export (TF32-safe, harness/model/geometry.py); the four mutations below keep
# their names (the bug they stand for is the original's MatMul in FP16 or TF32) and edit whichever
# form the graph has.

@mutation("projection-matmul-fp16")
def _projection_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The 4x4 projection product (src_proj @ inv_ref_proj, a MatMul in MVSNet_pytorch) computed
    in FP16."""
    compute_in(model, _projection_products(model))
    return model


@mutation("grid-matmul-fp16")
def _grid_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The sampling-grid product (rotation @ pixel grid, a MatMul in MVSNet_pytorch) computed on
    FP16 tensors (autocast)."""
    compute_in(model, _grid_products(model))
    return model


@mutation("grid-matmul-inputs-via-fp16")
def _grid_inputs_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The grid product's inputs (rotation, pixel coordinates) rounded through FP16 (Cast round
    trips), the product itself FP32."""
    _edit_inputs(model, _grid_product_inputs(model), round_through)
    return model


@mutation("grid-matmul-tf32")
def _grid_tf32(model: onnx.ModelProto) -> onnx.ModelProto:
    """TF32 rounding of the grid product's inputs: MVSNet_pytorch's rot @ xyz MatMul run by ONNX
    Runtime CUDA or trtexec with their TF32 default (the projection left FP32)."""
    _edit_inputs(model, _grid_product_inputs(model), tf32_round)
    return model


@mutation("grid-via-fp16")
def _grid_roundtrip(model: onnx.ModelProto) -> onnx.ModelProto:
    """The normalised sampling grid rounded through FP16 just before GridSample."""
    for i in sorted(_need(_of(model, "GridSample"), "GridSample"), reverse=True):
        round_through(model, model.graph.node[i].input[1], readers=[i])
    return model


@mutation("gridsample-fp16")
def _gridsample_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """GridSample computed in FP16 (features and grid)."""
    compute_in(model, _of(model, "GridSample"))
    return model


@mutation("variance-fp16")
def _variance_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The variance E[x^2] - E[x]^2 computed in FP16 (cancellation)."""
    compute_in(model, _variance_nodes(model))
    return model


@mutation("softmax-fp16")
def _softmax_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The softmax over depth computed in FP16."""
    compute_in(model, _need(_of(model, "Softmax"), "Softmax"))
    return model


@mutation("regression-fp16")
def _regression_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Depth regression and confidence (everything after the softmax) computed in FP16."""
    compute_in(model, _regression_nodes(model))
    return model


@mutation("depth-values-offset-regression")
def _depth_offset_regression(model: onnx.ModelProto) -> onnx.ModelProto:
    """Depth hypotheses 1 scene unit (mm) off in the regression only (a re-derived depth_min)."""
    tensor = "depth_values"
    _add_constant(model, _depth_values_readers(model, "regression"), tensor, 1.0)
    return model


@mutation("depth-values-offset-warp")
def _depth_offset_warp(model: onnx.ModelProto) -> onnx.ModelProto:
    """Depth hypotheses 1 mm off in the plane sweep only (the warp), not in the regression."""
    _add_constant(model, _depth_values_readers(model, "grid"), "depth_values", 1.0)
    return model


@mutation("source-views-swapped")
def _views_swapped(model: onnx.ModelProto) -> onnx.ModelProto:
    """The two source views' projection matrices swapped, their features not (an index slip)."""
    pairs = _view_gathers(model, "proj_matrices")
    _swap_gathers(model, _need_pairs(pairs, "proj_matrices views"))
    return model


@mutation("deconv-padding")
def _deconv_padding(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deconvolution's padding put at the end only (pads 1,1 -> 0,2: same shape, shifted)."""
    node = model.graph.node[_deconvs(model)[0]]
    pads = [int(p) for p in attribute(node, "pads") or []]  # type: ignore[attr-defined]
    half = len(pads) // 2
    set_attribute(node, "pads", [0] * half + [p + q for p, q in zip(pads[:half], pads[half:])])
    return model


@mutation("index-cast-round")
def _index_round(model: onnx.ModelProto) -> onnx.ModelProto:
    """The confidence's depth index rounded instead of truncated (float -> int cast rewritten)."""
    casts = [i for i in _of(model, "Cast") if attribute(model.graph.node[i], "to") in (TensorProto.INT64,
                                                                                        TensorProto.INT32)]
    cast = _need(casts, "float -> int Cast")[0]
    source = model.graph.node[cast].input[0]
    reroute(model, source, lambda s: [helper.make_node("Round", [s], [f"{s}__rounded"])], readers=[cast])
    return model


@mutation("confidence-window")
def _confidence_window(model: onnx.ModelProto) -> onnx.ModelProto:
    """The confidence window moved by one hypothesis (offsets -1..2 -> 0..3)."""
    for name in {t for n in model.graph.node for t in n.input}:
        value = constant_value(model, name)
        if value is not None and value.dtype.kind == "i" and value.size == 4 and list(value.flatten()) == [-1, 0, 1, 2]:
            set_constant_value(model, name, value + 1)
            return model
    raise MutationError("confidence window", "offsets not found in the graph", observed="no int constant [-1, 0, 1, 2]",
                        expected="the gathered confidence window of harness/model/mvsnet.py", fix=NOT_APPLICABLE)


# -- benign rewrites: must pass -----------------------------------------------------------------------

@mutation("identity-inserted", benign=True)
def _identity(model: onnx.ModelProto) -> onnx.ModelProto:
    """Identity nodes before every GridSample's grid and after the softmax (what debuggers and
    some exporters insert)."""
    for i in sorted(_of(model, "GridSample"), reverse=True):
        reroute(model, model.graph.node[i].input[1], lambda s: [helper.make_node("Identity", [s], [f"{s}__id"])],
                readers=[i])
    softmax = model.graph.node[_need(_of(model, "Softmax"), "Softmax")[0]].output[0]
    reroute(model, softmax, lambda s: [helper.make_node("Identity", [s], [f"{s}__id"])])
    return model


@mutation("onnxsim-again", benign=True)
def _onnxsim_again(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxsim over the simplified graph a second time."""
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise MutationError("onnxsim", "second simplification failed its check", observed="outputs differ",
                            expected="onnxsim's own check passing", fix="report it to onnxsim; leave this rewrite out")
    return simplified


@mutation("views-swapped-consistently", benign=True)
def _views_consistent(model: onnx.ModelProto) -> onnx.ModelProto:
    """Source views 1 and 2 swapped together with their projections (the variance is symmetric
    in the views: only the summation order changes)."""
    _swap_gathers(model, _need_pairs(_view_gathers(model, None), "view gathers"))
    return model


@mutation("raw-graph", benign=True, variant="raw")
def _raw(model: onnx.ModelProto) -> onnx.ModelProto:
    """The raw export judged like the simplified one (what onnxsim changes must not matter)."""
    return model


def _need_pairs(pairs: list[tuple[int, int]], what: str) -> list[tuple[int, int]]:
    if not pairs:
        raise MutationError(what, "views 1 and 2 are not gathered by constant indices", observed="no pair of Gathers",
                            expected="Gather(axis=1) with constant indices 1 and 2 on one tensor", fix=NOT_APPLICABLE)
    return pairs
