"""A runner over a graph whose tensors have other names than the harness's roles.

The feed comes in by role (``imgs``, ``proj_matrices`` ...) and goes through the base checks
under those names; it is renamed to the graph's names for the wrapped runner, and the outputs are
renamed back to roles. Made by ``renamed()`` (the chain's user-artifact runners wrap a runner
from ``harness.backends.registry.make_runner`` in it).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.backends.base import Runner
from harness.errors import GraphRuntimeError, HarnessError


class RenamedRunner(Runner):
    """Args:
        inner: a runner over the graph (its ``input_names`` are the graph's).
        inputs: ``{role: graph input name}``.
        outputs: ``{graph output name: role}``.
    """

    def __init__(self, inner: Runner, inputs: dict[str, str], outputs: dict[str, str], name: str) -> None:
        super().__init__(inner.validate_values, inner.model_spec)  # the roles are the wrapped model's
        self.inner = inner
        self.roles_to_graph = dict(inputs)
        self.graph_to_roles = dict(outputs)
        self.name = name
        self.device = inner.device
        # the wrapped runner sizes its outputs from the feed it gets, which is under the graph's
        # names (ONNX Runtime on CUDA binds outputs it allocates): it asks by role through here
        by_graph = {g: r for r, g in self.roles_to_graph.items()}
        outer = self.output_shape

        def shape_by_role(feed: dict[str, torch.Tensor], output: str | None = None) -> tuple[int, ...]:
            return outer({by_graph.get(k, k): v for k, v in feed.items()},
                         None if output is None else self.graph_to_roles.get(output, output))

        inner.output_shape = shape_by_role  # type: ignore[method-assign, assignment]

    def _prepare(self) -> None:
        self.inner.prepare()
        graph_inputs = self.inner.input_names
        by_graph = {g: r for r, g in self.roles_to_graph.items()}
        self.input_names = tuple(by_graph[g] for g in graph_inputs)

    def _close(self) -> None:
        self.inner.close()

    def _infer(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # the roles were checked by ``infer``; the wrapped runner's own name check would look for
        # the harness's names, so its ``_infer`` is called with the graph's
        renamed = {self.roles_to_graph[role]: tensor for role, tensor in feed.items()}
        try:
            out = self.inner._infer(renamed)
        except HarnessError:
            raise
        except Exception as exc:  # noqa: BLE001 - a runtime's own error on the user's graph: reported, not swallowed
            raise GraphRuntimeError(
                self.name, "the runtime failed on the graph", observed=f"{type(exc).__name__}: {str(exc)[:300]}",
                expected=f"a graph that runs at these input shapes ({', '.join(f'{k} {tuple(v.shape)}' for k, v in feed.items())})",
                fix="run it at the shape it was exported for (harness check without --case), or re-export it",
            ) from exc
        return {self.graph_to_roles[name]: value for name, value in out.items() if name in self.graph_to_roles}

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "name": self.name, "io": dict(self.roles_to_graph),
                "outputs": dict(self.graph_to_roles)}


def renamed(inner: Runner, inputs: dict[str, str], outputs: dict[str, str], name: str) -> Runner:
    """``inner`` fed and read by role (the one way a front gets a ``RenamedRunner``, beside
    ``harness.backends.registry.make_runner`` for every other runner)."""
    return RenamedRunner(inner, inputs, outputs, name)
