"""The contract every runtime implements.

``infer(feed)`` checks the feed (names and dtypes here, then the model's own rules from its
``ModelSpec``: for MVSNet its shape rules and, unless disabled, finite values) and then calls the
subclass's ``_infer``. Outputs are dicts keyed by name. Runners never time themselves
(``harness.timing`` does) and never import each other, nor any model: the spec is injected
(``model_spec=``), MVSNet's when none is (``harness.default_model``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import torch

from harness.default_model import resolve
from harness.errors import InvalidArgument, InvalidInput
from harness.modelspec import ModelSpec


class Runner(ABC):
    """A prepared model on one runtime.

    Attributes:
        name: short label used in test ids and reports (``torch-fp32``, ``ort-cpu`` ...).
        input_names: the graph's inputs, in order.
        device: where ``infer`` expects inputs and leaves outputs.
        model_spec: the model the feeds and outputs belong to (``model_spec=`` at construction;
            MVSNet's when none is given).
    """

    name: str = "runner"
    input_names: tuple[str, ...] = ()
    device: torch.device = torch.device("cpu")

    def __init__(self, validate_values: bool = True, model_spec: ModelSpec | None = None) -> None:
        self.validate_values = validate_values
        self._spec = model_spec
        self._prepared = False

    @property
    def model_spec(self) -> ModelSpec:
        """The model's spec: the injected one, else the default (resolved on first use, so a
        runner given a spec never loads MVSNet's modules)."""
        if getattr(self, "_spec", None) is None:
            self._spec = resolve(None)
        assert self._spec is not None
        return self._spec

    # -- lifecycle -------------------------------------------------------------------------
    def prepare(self) -> Runner:
        if not self._prepared:
            self._prepare()
            self._prepared = True
        return self

    def close(self) -> None:
        if self._prepared:
            self._close()
            self._prepared = False

    def __enter__(self) -> Runner:
        return self.prepare()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _prepare(self) -> None:  # noqa: B027 - optional hook
        """Load sessions, engines, weights. Called once."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``_prepare`` took."""

    # -- inference -------------------------------------------------------------------------
    def check_feed(self, feed: dict[str, torch.Tensor]) -> None:
        """Names, then dtypes (float32), then the spec's own checks (values unless disabled)."""
        spec = self.model_spec
        missing = [n for n in self.input_names if n not in feed]
        unexpected = [n for n in feed if n not in self.input_names]
        if missing or unexpected:
            raise InvalidInput(
                self.name, "feed names do not match the model's inputs",
                observed=f"missing {missing}, unexpected {unexpected}", expected=f"exactly {list(self.input_names)}", fix=spec.feed_fix,
            )
        for name in self.input_names:
            tensor = feed[name]
            if not isinstance(tensor, torch.Tensor):
                raise InvalidInput(f"{self.name}: {name}", "is not a torch.Tensor", observed=type(tensor).__name__,
                                   expected="torch.Tensor", fix="convert with torch.from_numpy")
            if tensor.dtype != torch.float32:
                raise InvalidInput(f"{self.name}: {name}", "wrong dtype", observed=str(tensor.dtype), expected="torch.float32",
                                   fix="cast with .float()")
        spec.validate(feed, subject=self.name, input_names=tuple(self.input_names), values=self.validate_values)

    def infer(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run once: ``{name: tensor}`` in, ``{output name: tensor}`` out (the spec's outputs;
        MVSNet's ``depth`` and ``photometric_confidence``)."""
        self.prepare()
        self.check_feed(feed)
        feed = {name: feed[name].to(self.device).contiguous() for name in self.input_names}
        return self._infer(feed)

    @abstractmethod
    def _infer(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inputs already checked, on ``self.device`` and contiguous."""

    def output_shape(self, feed: dict[str, torch.Tensor], name: str | None = None) -> tuple[int, ...]:
        """The shape of output ``name`` (any output when None) for ``feed``, as the spec says
        (MVSNet: ``(B, H/4, W/4)``)."""
        shape = self.model_spec.output_shape
        if shape is None:
            raise InvalidArgument(
                f"{self.name}: {self.model_spec.name}", "the model spec gives no output shapes", observed="output_shape=None",
                expected="a ModelSpec with output_shape", fix="give the spec an output_shape(feed, name) function",
            )
        return shape(feed, name)

    def describe(self) -> dict[str, Any]:
        """Provenance of this runner for reports (runtime versions, providers, precision)."""
        return {"name": self.name, "device": str(self.device)}


Consumes = Literal["model", "onnx", "engine"]


@dataclass(frozen=True)
class BackendSpec:
    """One backend as its module declares it (``BACKENDS`` there; ``harness.backends.registry``
    collects them and is the one factory).

    Attributes:
        name: the name users pass (``--harness-backends``) and tolerances key by family (its first word).
        consumes: what its runner is made from: the torch ``model``, an ``onnx`` graph file or an
            ``engine`` plan file. Backends that consume the model are never crossed with graph
            variants, workarounds or exporters.
        precision: the precision its parity gate is looked up with (``fp32``, ``tf32``, ``fp16``).
        device: ``cpu`` or ``cuda``.
        graph: for ``onnx``/``engine`` consumers, the graph precision it needs (``fp32`` or ``fp16``).
        make: ``make(artifact, **settings) -> Runner`` (the artifact: the model or a file path).
        available: ``() -> None`` when it can run here, else the missing piece (a skip reason).
        candidate: compared with the reference in the parity gate and the main job.
        fix: what to do when ``available()`` names a missing piece.
        bench_settings: settings the benchmark adds over the gate's (e.g. a slower, faster compile).
        context: what else its runner takes from the chain that makes it, by name: ``cache_dir``
            (the artifact cache's folder), ``model_digest`` (what identifies the model's
            function: weights and settings). A backend that caches its own artifact asks for both.
        warm: ``warm(artifact, **settings) -> None``, optional: starts, in the background, work
            its first runner would otherwise do in the foreground (``torch-aoti``: the loader
            probe), for a front that knows ahead which backends it will run.
        gpu_default: in the main job's default set when its reference runs on a GPU. False for a
            CPU leg whose graph a GPU leg of the same precision already runs there (the main job
            must stay quick on a GPU runner; ``--backends all`` and the pytest gate still run it).
    """

    name: str
    consumes: Consumes
    precision: str
    device: str
    make: Callable[..., Runner] = field(repr=False, compare=False)
    available: Callable[[], str | None] = field(repr=False, compare=False)
    graph: str | None = None
    candidate: bool = True
    settings: Mapping[str, Any] = field(default_factory=dict)  # fixed constructor settings
    bench_settings: Mapping[str, Any] = field(default_factory=dict)  # added when the benchmark times it
    fix: str | None = None
    context: tuple[str, ...] = ()
    warm: Callable[..., None] | None = field(default=None, repr=False, compare=False)
    gpu_default: bool = True
