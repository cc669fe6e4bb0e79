"""Ways around ``torch.inverse``, which no ONNX exporter can translate (``aten::linalg_inv``).

Each strategy says which inputs the exported graph takes and how a feed is prepared for it:

* ``precomputed`` (the source article's method): the inverse projection matrices are computed in
  data preparation (float64, stored as float32) and fed as a fourth input,
  ``inverse_proj_matrices``; no inverse runs inside the graph.
* ``closed_form``: the 4x4 inverse is built inside the graph from elementwise operations
  (cofactors), so the graph keeps the original three inputs.
* ``custom_op``: ``torch.inverse`` exported as ONNX Runtime's ``com.microsoft::Inverse`` contrib
  operator through a TorchScript symbolic registered for the export only. ONNX Runtime runs it;
  TensorRT would need a plugin, so the operator audit refuses it before any engine build.
* ``none``: the original model, kept so that the failure stays demonstrable; exporting it raises
  ``UnsupportedOperator`` naming ``aten::linalg_inv`` and the strategies above.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import InvalidArgument
from harness.model.geometry import inverse_closed_form, inverse_precomputed
from harness.model.mvsnet import OUTPUT_NAMES, MVSNet, probing

INPUTS_WITH_INVERSE = ("imgs", "proj_matrices", "inverse_proj_matrices", "depth_values")
INPUTS_WITHOUT_INVERSE = ("imgs", "proj_matrices", "depth_values")


class _FedInverse(nn.Module):
    """``precomputed``: the inverse arrives as the graph's third input."""

    def __init__(self, model: MVSNet) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, imgs: torch.Tensor, proj_matrices: torch.Tensor, inverse_proj_matrices: torch.Tensor,
        depth_values: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(imgs, proj_matrices, depth_values, inverse_proj_matrices)
        return out["depth"], out["photometric_confidence"]


@torch.library.custom_op("harness::inverse_4x4", mutates_args=())
def contrib_inverse(matrices: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.inv`` as an operator of its own, so that only the custom_op workaround maps
    to ONNX Runtime's ``com.microsoft::Inverse`` (``aten::linalg_inv`` keeps failing to export)."""
    return torch.linalg.inv(matrices)


@contrib_inverse.register_fake
def _contrib_inverse_shape(matrices: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(matrices)


def _contrib_inverse_symbolic(g, matrices):  # type: ignore[no-untyped-def]
    return g.op("com.microsoft::Inverse", matrices).setType(matrices.type())


torch.onnx.register_custom_op_symbolic("harness::inverse_4x4", _contrib_inverse_symbolic, 9)


class _InGraphInverse(nn.Module):
    """The inverse inside the graph: ``closed_form`` (cofactors), ``custom_op`` (ONNX Runtime's
    contrib operator) or ``torch`` (``torch.inverse``: the ``none`` workaround, which does not
    export)."""

    def __init__(self, model: MVSNet, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(
        self, imgs: torch.Tensor, proj_matrices: torch.Tensor, depth_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.method == "closed_form":
            inverse = inverse_closed_form(proj_matrices)
        elif self.method == "custom_op":
            inverse = contrib_inverse(proj_matrices)
        else:
            inverse = torch.inverse(proj_matrices)
        out = self.model(imgs, proj_matrices, depth_values, inverse)
        return out["depth"], out["photometric_confidence"]


class _Probed(nn.Module):
    """A probe build: the graph's outputs followed by the intermediate stages (``probe_<name>``)."""

    def __init__(self, inner: nn.Module, model: MVSNet) -> None:
        super().__init__()
        self.inner = inner
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with probing(self.model) as probes:
            depth, confidence = self.inner(*inputs)
        return (depth, confidence, *probes.values())


def probe_output_names(num_views: int) -> tuple[str, ...]:
    """Output names of a probe build for ``num_views`` views (one warped volume per source)."""
    stages = ["ref_feature", *[f"warped_{v}" for v in range(1, num_views)], "variance", "cost", "prob"]
    return OUTPUT_NAMES + tuple(f"probe_{s}" for s in stages)


@dataclass(frozen=True)
class InverseWorkaround:
    name: str
    summary: str

    @property
    def input_names(self) -> tuple[str, ...]:
        return INPUTS_WITH_INVERSE if self.name == "precomputed" else INPUTS_WITHOUT_INVERSE

    @property
    def output_names(self) -> tuple[str, ...]:
        return OUTPUT_NAMES

    @property
    def feeds_inverse(self) -> bool:
        return self.name == "precomputed"

    def export_module(self, model: MVSNet, probes: bool = False) -> nn.Module:
        """MVSNet with positional inputs in the graph's order and a tuple of outputs (with the
        intermediate stages appended for a probe build)."""
        inner: nn.Module
        if self.name == "precomputed":
            inner = _FedInverse(model)
        else:
            inner = _InGraphInverse(model, {"closed_form": "closed_form", "custom_op": "custom_op"}.get(self.name, "torch"))
        return (_Probed(inner, model) if probes else inner).eval()

    def prepare_feed(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The graph's inputs from a model feed: adds or drops ``inverse_proj_matrices``."""
        out = {k: v for k, v in feed.items() if k != "inverse_proj_matrices"}
        if self.feeds_inverse:
            out["inverse_proj_matrices"] = feed.get("inverse_proj_matrices", inverse_precomputed(feed["proj_matrices"]))
        return {name: out[name] for name in self.input_names}


WORKAROUNDS: dict[str, InverseWorkaround] = {
    w.name: w
    for w in (
        InverseWorkaround("precomputed", "inverse projections computed in data preparation (float64) and fed as an input"),
        InverseWorkaround("closed_form", "4x4 inverse from elementwise cofactors inside the graph"),
        InverseWorkaround("custom_op", "torch.inverse as ONNX Runtime's com.microsoft::Inverse contrib operator "
                                       "(TensorRT would need a plugin)"),
        InverseWorkaround("none", "the original torch.inverse; does not export"),
    )
}
EXPORTABLE = tuple(name for name in WORKAROUNDS if name != "none")
#: Workarounds whose graph TensorRT's ONNX parser can take (custom_op needs a plugin).
TRT_EXPORTABLE = ("precomputed", "closed_form")
#: Exporters each workaround supports (custom_op registers a TorchScript symbolic).
EXPORTERS_FOR = {"custom_op": ("torchscript",)}


def get_workaround(name: str) -> InverseWorkaround:
    try:
        return WORKAROUNDS[name]
    except KeyError:
        raise InvalidArgument("inverse workaround", "unknown strategy", observed=name, expected=f"one of {', '.join(WORKAROUNDS)}",
                              fix="pass --harness-workarounds precomputed,closed_form") from None
