"""The contract every runtime implements.

``infer(feed)`` checks the feed (names, dtypes, ranks, MVSNet's shape rules and, unless
disabled, finite values) and then calls the subclass's ``_infer``. Outputs are dicts keyed by
name. Runners never time themselves (``harness.timing`` does) and never import each other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import torch

from harness.errors import InvalidInput, ShapeError
from harness.model.inputs import check_shapes, check_values


class Runner(ABC):
    """A prepared model on one runtime.

    Attributes:
        name: short label used in test ids and reports (``torch-fp32``, ``ort-cpu`` ...).
        input_names: the graph's inputs, in order.
        device: where ``infer`` expects inputs and leaves outputs.
    """

    name: str = "runner"
    input_names: tuple[str, ...] = ()
    device: torch.device = torch.device("cpu")

    def __init__(self, validate_values: bool = True) -> None:
        self.validate_values = validate_values
        self._prepared = False

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
        missing = [n for n in self.input_names if n not in feed]
        unexpected = [n for n in feed if n not in self.input_names]
        if missing or unexpected:
            raise InvalidInput(
                self.name, "feed names do not match the model's inputs",
                f"missing {missing}, unexpected {unexpected}", f"exactly {list(self.input_names)}",
                "prepare the feed with the workaround's prepare_feed()",
            )
        for name in self.input_names:
            tensor = feed[name]
            if not isinstance(tensor, torch.Tensor):
                raise InvalidInput(f"{self.name}: {name}", "is not a torch.Tensor", type(tensor).__name__,
                                   "torch.Tensor", "convert with torch.from_numpy")
            if tensor.dtype != torch.float32:
                raise InvalidInput(f"{self.name}: {name}", "wrong dtype", str(tensor.dtype), "torch.float32",
                                   "cast with .float()")
        roles = [n for n in ("imgs", "proj_matrices", "depth_values") if n not in feed]
        if roles:  # a graph with other names than the harness's: bind it instead of a bare KeyError
            raise InvalidInput(
                self.name, "the model's inputs are not named by MVSNet's roles", f"inputs {list(self.input_names)}",
                "imgs, proj_matrices, depth_values (and optionally inverse_proj_matrices)",
                "run a user graph through chain.user_onnx_runner() / `python -m harness check`, which bind its names",
            )
        check_shapes(feed["imgs"], feed["proj_matrices"], feed["depth_values"], feed.get("inverse_proj_matrices"))
        if self.validate_values:
            check_values(feed["imgs"], feed["proj_matrices"], feed["depth_values"], feed.get("inverse_proj_matrices"))

    def infer(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run once: ``{name: tensor}`` in, ``{"depth", "photometric_confidence"}`` out."""
        self.prepare()
        self.check_feed(feed)
        feed = {name: feed[name].to(self.device).contiguous() for name in self.input_names}
        return self._infer(feed)

    @abstractmethod
    def _infer(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inputs already checked, on ``self.device`` and contiguous."""

    def output_shape(self, feed: dict[str, torch.Tensor]) -> tuple[int, int, int]:
        imgs = feed["imgs"]
        if imgs.dim() != 5:
            raise ShapeError("imgs", "wrong rank", imgs.dim(), 5)
        return int(imgs.shape[0]), int(imgs.shape[3]) // 4, int(imgs.shape[4]) // 4

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
        context: what else its runner takes from the chain that makes it, by name: ``cache_dir``
            (the artifact cache's folder), ``model_digest`` (what identifies the model's
            function: weights and settings). A backend that caches its own artifact asks for both.
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
    fix: str | None = None
    context: tuple[str, ...] = ()
