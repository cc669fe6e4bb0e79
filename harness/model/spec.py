"""MVSNet's side of the model seam (``harness.modelspec``): its names, feed checks, output shapes,
metric kinds and report columns, as the model-neutral layers read them.

The checks themselves stay in ``harness.model.inputs``; this module binds them to the runner's
feed in the order the runners always applied them: the role names first (a graph with other
tensor names is bound, not indexed), then shapes, then values.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from harness.errors import InvalidInput, ShapeError
from harness.model.inputs import check_shapes, check_values
from harness.modelspec import ModelSpec, OutputSpec

#: MVSNet's feature maps, and so its outputs, are a quarter of the image in height and width.
FEATURE_STRIDE = 4
#: The roles every MVSNet feed has; ``inverse_proj_matrices`` is the precomputed workaround's fourth.
REQUIRED_INPUTS = ("imgs", "proj_matrices", "depth_values")
INPUTS = ("imgs", "proj_matrices", "inverse_proj_matrices", "depth_values")


def validate_feed(feed: Mapping[str, torch.Tensor], *, subject: str, input_names: tuple[str, ...],
                  values: bool) -> None:
    """Refuse a feed MVSNet cannot take: roles missing, shapes off MVSNet's rules, and (with
    ``values``) non-finite values, singular projections or unordered hypotheses."""
    roles = [n for n in REQUIRED_INPUTS if n not in feed]
    if roles:  # a graph with other names than the harness's: bind it instead of a bare KeyError
        raise InvalidInput(
            subject, "the model's inputs are not named by MVSNet's roles", observed=f"inputs {list(input_names)}",
            expected="imgs, proj_matrices, depth_values (and optionally inverse_proj_matrices)",
            fix="run a user graph through chain.user_onnx_runner() / `python -m harness check`, which bind its names",
        )
    check_shapes(feed["imgs"], feed["proj_matrices"], feed["depth_values"], feed.get("inverse_proj_matrices"))
    if values:
        check_values(feed["imgs"], feed["proj_matrices"], feed["depth_values"], feed.get("inverse_proj_matrices"))


def output_shape(feed: Mapping[str, torch.Tensor], name: str | None = None) -> tuple[int, ...]:
    """``(B, H/4, W/4)``: both outputs of MVSNet have the reference view's quarter-size shape."""
    imgs = feed["imgs"]
    if imgs.dim() != 5:
        raise ShapeError("imgs", "wrong rank", observed=imgs.dim(), expected=5)
    return int(imgs.shape[0]), int(imgs.shape[3]) // FEATURE_STRIDE, int(imgs.shape[4]) // FEATURE_STRIDE


PARITY_NOTE = (
    "The gate columns hold the metrics each verdict was decided by, with their limits from "
    "fixtures/tolerances.toml (depth gates in depth-hypothesis steps). Max squared error is the "
    "source article's metric (depth in mm²); the confidence's max over all pixels includes pixels "
    "whose truncated depth index flipped, which the gate counts instead (index flips)."
)

MVSNET = ModelSpec(
    name="mvsnet",
    title="MVSNet",
    inputs=INPUTS,
    outputs=(
        OutputSpec("depth", "depth", gate_column="depth gate (limit)", columns=(
            ("max_sq_err", "depth max sq err (mm²)"), ("max_abs", "depth max abs (mm)"),
            ("p99_abs", "depth p99 abs (mm)"), ("frac_over_1mm", "depth > 1 mm"), ("index_flips", "index flips"),
        )),
        OutputSpec("photometric_confidence", "confidence", gate_column="confidence gate (limit)", columns=(
            ("max_sq_err", "conf max sq err (all pixels)"), ("agreement", "conf agreement"),
        )),
    ),
    validate=validate_feed,
    output_shape=output_shape,
    feed_fix="prepare the feed with the workaround's prepare_feed()",
    parity_note=PARITY_NOTE,
    leg_fields=("workaround",),
)

__all__ = ["FEATURE_STRIDE", "INPUTS", "MVSNET", "REQUIRED_INPUTS", "output_shape", "validate_feed"]
