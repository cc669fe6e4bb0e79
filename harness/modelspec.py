"""The model seam: what the model-neutral layers need to know about a model, as data.

Runners (``harness/backends/``), ``harness.compare`` and the report take a ``ModelSpec`` and read
the model's names, checks and metric kinds from it instead of naming them. MVSNet's instance is
``harness.model.spec.MVSNET``; a caller that injects no spec gets it (``harness.default_model``),
so code written before the seam behaves as it did. Another model brings its own spec (the test
suite's second model, tests/toymodel.py, does) and never loads MVSNet's modules.

This module imports nothing of any model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

from harness.errors import InvalidArgument

#: How ``harness.compare`` measures an output, beyond the absolute statistics every output gets:
#:
#: * ``depth``: a depth map in scene units (mm on DTU): shares of pixels off by more than 1, 2 and
#:   4 units, the errors in depth-hypothesis steps and the hypothesis-index flips (both need the
#:   hypotheses, ``compare(..., depth_values=)``);
#: * ``confidence``: a probability map: agreement on the side of ``CONFIDENCE_THRESHOLD`` and the
#:   maximum squared error away from the depth output's index boundaries;
#: * ``plain``: the absolute statistics only.
MetricKind = Literal["depth", "confidence", "plain"]
METRIC_KINDS: tuple[MetricKind, ...] = ("depth", "confidence", "plain")


class FeedValidator(Protocol):
    """A model's own checks of a feed, after the runner checked names and dtypes.

    ``subject`` is the runner's name (for messages), ``input_names`` the inputs the runner's graph
    takes, ``values`` whether value checks (finite, ordered ...) run or only shape checks. Raises
    ``InvalidInput`` / ``ShapeError`` in the harness's message format."""

    def __call__(self, feed: Mapping[str, torch.Tensor], *, subject: str, input_names: tuple[str, ...],
                 values: bool) -> None: ...


#: ``(feed, output name or None) -> shape`` of that output (any output when None) for the feed.
OutputShape = Callable[[Mapping[str, torch.Tensor], str | None], tuple[int, ...]]


def no_checks(feed: Mapping[str, torch.Tensor], *, subject: str, input_names: tuple[str, ...], values: bool) -> None:
    """The validator of a model with no rules beyond names and dtypes."""


@dataclass(frozen=True)
class OutputSpec:
    """One output of a model.

    Attributes:
        name: the output's name (outputs are dicts keyed by it).
        kind: which metrics ``harness.compare`` computes for it (see ``MetricKind``).
        gate_column: its column of gated metrics in report.md's parity table
            (default ``<name> gate (limit)``).
        columns: ``(metric, column title)`` pairs shown in the parity table after the gates
            (default: ``max_abs`` and ``max_sq_err`` under the output's name).
    """

    name: str
    kind: MetricKind = "plain"
    gate_column: str = ""
    columns: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in METRIC_KINDS:
            raise InvalidArgument(f"output {self.name}", "unknown metric kind", observed=self.kind, expected=" / ".join(METRIC_KINDS))

    @property
    def gate_title(self) -> str:
        return self.gate_column or f"{self.name} gate (limit)"

    @property
    def table_columns(self) -> tuple[tuple[str, str], ...]:
        return self.columns or (("max_abs", f"{self.name} max abs"), ("max_sq_err", f"{self.name} max sq err"))


@dataclass(frozen=True)
class ModelSpec:
    """What is one model's, for the layers that must not import it.

    Attributes:
        name: short identifier (``mvsnet``), for records.
        title: how reports name the model (``# <title> conversion report``).
        inputs: every input the model can take, in its canonical order.
        outputs: the outputs, in order, with their metric kinds and report columns.
        validate: the model's feed checks (shapes, values) after names and dtypes.
        output_shape: the shape of an output for a feed (runners that allocate outputs, such as
            ONNX Runtime on CUDA, need it); None when the model cannot say without running.
        feed_fix: the Fix of the message for a feed whose names do not match the runner's inputs.
        parity_note: the paragraph report.md prints under its parity heading.
        leg_fields: fields of a parity row that are the model's own leg settings (MVSNet: its
            ``workaround``), shown as columns after the reference.
    """

    name: str
    title: str
    inputs: tuple[str, ...]
    outputs: tuple[OutputSpec, ...]
    validate: FeedValidator = field(default=no_checks, repr=False, compare=False)
    output_shape: OutputShape | None = field(default=None, repr=False, compare=False)
    feed_fix: str = "feed exactly the model's inputs, by name"
    parity_note: str = ""
    leg_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names) or not names:
            raise InvalidArgument(f"model spec {self.name}", "output names empty or repeated", observed=names,
                                  expected="one OutputSpec per distinct output")

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def kinds(self) -> dict[str, MetricKind]:
        """``{output name: metric kind}``."""
        return {o.name: o.kind for o in self.outputs}

    def output(self, name: str) -> OutputSpec | None:
        return next((o for o in self.outputs if o.name == name), None)


__all__ = ["FeedValidator", "METRIC_KINDS", "MetricKind", "ModelSpec", "OutputShape", "OutputSpec", "no_checks"]
