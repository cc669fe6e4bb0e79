"""MVSNet's inputs and outputs by role, and how a graph someone else exported is bound to them.

Roles are the harness's own names (``imgs``, ``proj_matrices``, ``inverse_proj_matrices``,
``depth_values`` -> ``depth``, ``photometric_confidence``). A user's graph is bound to them, in
this order, and never by a silent guess:

1. ``--io-map NAME=ROLE,...`` entries, exactly as given;
2. the graph's names: the harness's own, or the source article's (``in_imgs``,
   ``in_proj_matrices``, ``in_inverse_proj_matrices``, ``in_depth_values`` -> ``out_depth``,
   ``out_confidence``);
3. only when no name is recognised: MVSNet_pytorch's positional order (``forward(imgs,
   proj_matrices, depth_values)``; with four inputs the article's order, the inverse third),
   reported as positional and checked against each role's rank.

The binding says whether the graph takes the precomputed inverse (four inputs) or inverts in the
graph (three). Anything unresolved or claimed twice is refused with the graph's actual names and
shapes and the ``--io-map`` that would fix it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import InvalidArgument, ShapeError
from harness.model.mvsnet import OUTPUT_NAMES

INPUT_ROLES = ("imgs", "proj_matrices", "inverse_proj_matrices", "depth_values")
REQUIRED_INPUTS = ("imgs", "proj_matrices", "depth_values")
OUTPUT_ROLES = OUTPUT_NAMES
#: Names by which each role is known: the harness's own first, then the source article's.
ALIASES: dict[str, tuple[str, ...]] = {
    "imgs": ("imgs", "in_imgs"),
    "proj_matrices": ("proj_matrices", "in_proj_matrices"),
    "inverse_proj_matrices": ("inverse_proj_matrices", "in_inverse_proj_matrices"),
    "depth_values": ("depth_values", "in_depth_values"),
    "depth": ("depth", "out_depth"),
    "photometric_confidence": ("photometric_confidence", "out_confidence"),
}
ARTICLE_INPUTS = tuple(ALIASES[r][1] for r in ("imgs", "proj_matrices", "inverse_proj_matrices", "depth_values"))
ARTICLE_OUTPUTS = tuple(ALIASES[r][1] for r in OUTPUT_ROLES)
#: Positional order by input count: MVSNet_pytorch's forward, and the article's four-input export.
POSITIONAL: dict[int, tuple[str, ...]] = {
    3: ("imgs", "proj_matrices", "depth_values"),
    4: ("imgs", "proj_matrices", "inverse_proj_matrices", "depth_values"),
}
RANKS = {"imgs": 5, "proj_matrices": 4, "inverse_proj_matrices": 4, "depth_values": 2,
         "depth": 3, "photometric_confidence": 3}
LAYOUTS = {"imgs": "[B, N, 3, H, W]", "proj_matrices": "[B, N, 4, 4]", "inverse_proj_matrices": "[B, N, 4, 4]",
           "depth_values": "[B, D]", "depth": "[B, H/4, W/4]", "photometric_confidence": "[B, H/4, W/4]"}
_BY_NAME = {alias: role for role, names in ALIASES.items() for alias in names}
#: Stages of MVSNet that are visible in any export of it, by the operator that computes them: the
#: GridSample nodes in graph order are the warped source volumes of views 1..N-1 (``warped_<v>``),
#: the last Softmax is the probability volume over D (``prob``). Used to localise a user graph.
STAGE_OPERATORS = (("warped", "GridSample"), ("prob", "Softmax"))

Dim = int | str  # a static size, or a symbolic dimension's name


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output as the graph declares it (``dtype`` like ``float32``)."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str

    def describe(self) -> str:
        return f"{self.name} [{', '.join(str(d) for d in self.shape)}] {self.dtype}"


class IoMappingError(InvalidArgument):
    """A graph's inputs or outputs cannot be bound to MVSNet's roles without guessing."""


@dataclass(frozen=True)
class IoBinding:
    """``(graph name, role)`` pairs in the graph's order, and how they were found."""

    inputs: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]
    how: str  # e.g. "names", "article names", "positional (MVSNet_pytorch order)", "--io-map", or a mix

    @property
    def with_inverse(self) -> bool:
        return any(role == "inverse_proj_matrices" for _, role in self.inputs)

    def graph_name(self, role: str) -> str:
        for name, r in (*self.inputs, *self.outputs):
            if r == role:
                return name
        raise KeyError(role)

    def input_roles(self) -> dict[str, str]:
        """role -> graph input name."""
        return {role: name for name, role in self.inputs}

    def output_roles(self) -> dict[str, str]:
        """graph output name -> role."""
        return dict(self.outputs)

    def io_map(self) -> str:
        """This binding written as an ``--io-map`` value."""
        return ",".join(f"{name}={role}" for name, role in (*self.inputs, *self.outputs))

    def as_dict(self) -> dict[str, Any]:
        return {"inputs": dict(self.inputs), "outputs": dict(self.outputs), "how": self.how,
                "with_inverse": self.with_inverse}


def parse_io_map(text: str | None) -> dict[str, str]:
    """``NAME=ROLE,...`` -> ``{graph name: role}``; roles checked, nothing else assumed."""
    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, role = item.partition("=")
        name, role = name.strip(), role.strip()
        if not sep or not name or not role:
            raise IoMappingError("--io-map", "entry is not NAME=ROLE", observed=item, expected="e.g. in_imgs=imgs,out_depth=depth",
                                 fix="write each entry as <graph tensor name>=<role>")
        if role not in (*INPUT_ROLES, *OUTPUT_ROLES):
            raise IoMappingError("--io-map", "unknown role", observed=role, expected=f"one of {', '.join((*INPUT_ROLES, *OUTPUT_ROLES))}",
                                 fix="use the harness's role names on the right of '='")
        if name in mapping:
            raise IoMappingError("--io-map", "graph name mapped twice", observed=name, expected="each graph name once")
        mapping[name] = role
    return mapping


def _suggest(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str:
    """An ``--io-map`` that fits every tensor's rank, in graph order (for the user to confirm)."""
    parts = []
    four_by_four = [r for r in ("proj_matrices", "inverse_proj_matrices")]
    for spec in inputs:
        known = _BY_NAME.get(spec.name)
        if known in INPUT_ROLES:
            parts.append(f"{spec.name}={known}")
        elif len(spec.shape) == 5:
            parts.append(f"{spec.name}=imgs")
        elif len(spec.shape) == 2:
            parts.append(f"{spec.name}=depth_values")
        elif len(spec.shape) == 4 and four_by_four:
            parts.append(f"{spec.name}={four_by_four.pop(0)}")
        else:
            parts.append(f"{spec.name}=<role>")
    for spec, role in zip(outputs, OUTPUT_ROLES):
        parts.append(f"{spec.name}={_BY_NAME.get(spec.name, role)}")
    return ",".join(parts)


def _refuse(subject: str, problem: str, detail: str, inputs: Sequence[TensorSpec],
            outputs: Sequence[TensorSpec], fix: str | None = None) -> IoMappingError:
    """The refusal naming the graph's tensors; ``fix`` by default: the ``--io-map`` that binds them."""
    observed = (f"{detail}; graph inputs: {'; '.join(s.describe() for s in inputs)}; "
                f"graph outputs: {'; '.join(s.describe() for s in outputs)}")
    return IoMappingError(
        subject, problem, observed=observed,
        expected=f"inputs named {', '.join(INPUT_ROLES)} (the harness) or {', '.join(ARTICLE_INPUTS)} (the source article), "
        f"or 3/4 unnamed inputs in MVSNet_pytorch's order; outputs {', '.join(OUTPUT_ROLES)} or "
        f"{', '.join(ARTICLE_OUTPUTS)}",
        fix=fix or f"say which is which with --io-map {_suggest(inputs, outputs)} (check the 4x4 inputs: "
        "proj_matrices first, then its inverse)",
    )


def _bind(specs: Sequence[TensorSpec], io_map: Mapping[str, str], roles: tuple[str, ...],
          positional: tuple[str, ...] | None) -> tuple[dict[str, str], list[str], str]:
    """({graph name: role}, unresolved names, how) for one side (inputs or outputs)."""
    bound: dict[str, str] = {}
    hows: list[str] = []
    for spec in specs:
        if spec.name in io_map and io_map[spec.name] in roles:
            bound[spec.name] = io_map[spec.name]
            hows.append("--io-map")
        elif spec.name in _BY_NAME and _BY_NAME[spec.name] in roles:
            bound[spec.name] = _BY_NAME[spec.name]
            hows.append("names" if spec.name in roles else "article names")
    unresolved = [s.name for s in specs if s.name not in bound]
    if unresolved and not bound and positional is not None:
        bound = {spec.name: role for spec, role in zip(specs, positional)}
        return bound, [], "positional (MVSNet_pytorch order)"
    return bound, unresolved, "+".join(dict.fromkeys(hows)) or "none"


def bind_io(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], io_map: Mapping[str, str] | None = None,
            subject: str = "graph") -> IoBinding:
    """Bind a graph's tensors to MVSNet's roles (see the module docstring); raise
    ``IoMappingError`` naming the graph's tensors and the ``--io-map`` that would fix it."""
    io_map = dict(io_map or {})
    known = {s.name for s in (*inputs, *outputs)}
    stray = [n for n in io_map if n not in known]
    if stray:
        raise _refuse(subject, "--io-map names tensors the graph does not have", ", ".join(stray), inputs, outputs)
    if len(inputs) not in POSITIONAL:
        # no --io-map helps: it names roles of the inputs a graph has, it cannot add or drop inputs
        raise _refuse(subject, "the graph's inputs cannot be MVSNet's", f"{len(inputs)} input"
                      f"{'' if len(inputs) == 1 else 's'} (MVSNet takes 3, or 4 with the inverse projections)",
                      inputs, outputs, fix="gate a graph exported from MVSNet (another model's graph cannot be "
                      "compared with MVSNet's reference; --io-map only says which input is which)")
    in_bound, in_left, in_how = _bind(inputs, io_map, INPUT_ROLES, POSITIONAL[len(inputs)])
    out_positional = OUTPUT_ROLES if len(outputs) == len(OUTPUT_ROLES) else None
    out_bound, out_left, out_how = _bind(outputs, io_map, OUTPUT_ROLES, out_positional)
    if in_left:
        raise _refuse(subject, "graph inputs not recognised", f"unresolved {', '.join(in_left)}", inputs, outputs)
    for side, bound in (("input", in_bound), ("output", out_bound)):
        roles = list(bound.values())
        twice = sorted({r for r in roles if roles.count(r) > 1})
        if twice:
            raise _refuse(subject, f"ambiguous graph {side}s", f"role(s) {', '.join(twice)} claimed by more than "
                          f"one {side}", inputs, outputs)
    missing_in = [r for r in REQUIRED_INPUTS if r not in in_bound.values()]
    missing_out = [r for r in OUTPUT_ROLES if r not in out_bound.values()]
    if missing_in or missing_out:
        raise _refuse(subject, "the graph lacks some of MVSNet's tensors",
                      f"no {', '.join(missing_in + missing_out)}" + (f" (unresolved outputs {', '.join(out_left)})"
                                                                       if out_left else ""), inputs, outputs)
    specs = {s.name: s for s in (*inputs, *outputs)}
    for name, role in (*in_bound.items(), *out_bound.items()):
        if len(specs[name].shape) != RANKS[role]:
            raise _refuse(subject, f"'{name}' cannot be {role} ({in_how if role in INPUT_ROLES else out_how})",
                          f"rank {len(specs[name].shape)}, while {role} is {LAYOUTS[role]}", inputs, outputs)
    how = f"by {in_how}" if in_how == out_how else f"inputs by {in_how}, outputs by {out_how}"
    return IoBinding(tuple((s.name, in_bound[s.name]) for s in inputs),
                     tuple((s.name, out_bound[s.name]) for s in outputs if s.name in out_bound), how)


def static_case_shape(binding: IoBinding, inputs: Sequence[TensorSpec]) -> tuple[int, int, int, int] | None:
    """``(views, H, W, D)`` when the graph's ``imgs`` and ``depth_values`` are fully static."""
    specs = {s.name: s for s in inputs}
    imgs = specs[binding.graph_name("imgs")].shape
    depth = specs[binding.graph_name("depth_values")].shape
    dims = (imgs[1], imgs[3], imgs[4], depth[1])
    if not all(isinstance(d, int) and d > 0 for d in dims):
        return None
    return int(dims[0]), int(dims[1]), int(dims[2]), int(dims[3])


def check_against(binding: IoBinding, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                  expected: Mapping[str, tuple[int, ...]], subject: str, case: str, fix: str) -> None:
    """Every bound tensor float32 and every static dimension equal to the case's; symbolic
    dimensions pass (a dynamic-shape graph). ``expected`` maps input roles to the case's shapes
    (outputs follow: ``[B, H/4, W/4]``)."""
    specs = {s.name: s for s in (*inputs, *outputs)}
    b, _, _, h, w = expected["imgs"]
    wanted = dict(expected)
    wanted.update({role: (b, h // 4, w // 4) for role in OUTPUT_ROLES})
    for name, role in (*binding.inputs, *binding.outputs):
        spec = specs[name]
        if spec.dtype != "float32":
            raise IoMappingError(f"{subject}: {name} ({role})", "wrong dtype", observed=spec.dtype, expected="float32",
                                 fix="export the FP32 graph (inputs and outputs float32; cast inside the graph if needed)")
        shape = wanted[role]
        bad = [i for i, (got, want) in enumerate(zip(spec.shape, shape)) if isinstance(got, int) and got != want]
        if bad or len(spec.shape) != len(shape):
            raise ShapeError(
                f"{subject}: {name} ({role})", f"the graph was exported for another shape than case {case}",
                observed=f"[{', '.join(str(d) for d in spec.shape)}] (dimension {', '.join(str(i) for i in bad)} differs)",
                expected=f"[{', '.join(str(d) for d in shape)}] {LAYOUTS[role]}", fix=fix)
