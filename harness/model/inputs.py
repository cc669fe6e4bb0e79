"""Checks of MVSNet's inputs, with messages that say what to change.

``check_shapes`` runs in the model's eager forward and in every runner; ``check_values`` runs in
every runner before inference (it reads the tensors, so it costs a device sync on the GPU).
"""

from __future__ import annotations

import torch

from harness.errors import InvalidInput, ShapeError

#: Feature maps are 1/4 of the image and the 3D U-Net halves them three times.
SIZE_MULTIPLE = 32
DEPTH_MULTIPLE = 8


def nearest_valid_size(size: int) -> int:
    """The closest image size (pixels) that MVSNet accepts."""
    # ties round down: DTU's 1200 rows -> 1184 (the crop MVSNet_pytorch uses), not 1216
    return max(SIZE_MULTIPLE, ((size + SIZE_MULTIPLE // 2 - 1) // SIZE_MULTIPLE) * SIZE_MULTIPLE)


def check_image_size(height: int, width: int, subject: str = "imgs") -> None:
    """Refuse image sizes whose quarter-resolution feature map is not divisible by 8."""
    bad = [(name, v) for name, v in (("H", height), ("W", width)) if v % SIZE_MULTIPLE]
    if bad:
        observed = ", ".join(f"{n}={v} (so {n}/4={v / 4:g})" for n, v in bad)
        suggestion = f"{nearest_valid_size(height)}x{nearest_valid_size(width)}"
        raise ShapeError(
            subject,
            "image size does not fit MVSNet's 3D U-Net",
            observed=observed,
            expected="H and W multiples of 32, so that H/4 and W/4 are divisible by 8 (e.g. 512x640, 1184x1600)",
            fix=f"crop or resize the images to {suggestion} (HxW) and scale the intrinsics to match",
        )


def check_num_depth(num_depth: int, subject: str = "depth_values") -> None:
    if num_depth < DEPTH_MULTIPLE or num_depth % DEPTH_MULTIPLE:
        raise ShapeError(
            subject,
            "number of depth hypotheses does not fit MVSNet's 3D U-Net",
            observed=f"D={num_depth}",
            expected="D a positive multiple of 8 (e.g. 48, 192)",
            fix=f"use D={max(DEPTH_MULTIPLE, round(num_depth / DEPTH_MULTIPLE) * DEPTH_MULTIPLE)}",
        )


def check_shapes(
    imgs: torch.Tensor,
    proj_matrices: torch.Tensor,
    depth_values: torch.Tensor,
    inverse_proj_matrices: torch.Tensor | None = None,
) -> None:
    """Refuse inputs whose shapes cannot go through MVSNet, before any kernel runs."""
    if imgs.dim() != 5 or imgs.shape[2] != 3:
        raise ShapeError(
            "imgs", "wrong shape", observed=tuple(imgs.shape), expected="[B, N, 3, H, W] (RGB, view 0 = reference)",
            fix="stack the views on dim 1 and put channels before height and width",
        )
    batch, views, _, height, width = imgs.shape
    if views < 2:
        raise ShapeError(
            "imgs", "too few views", observed=f"N={views}", expected="N >= 2 (one reference view and at least one source view)",
            fix="pass source views as well (pair.txt lists them)",
        )
    matrices = [("proj_matrices", proj_matrices)]
    if inverse_proj_matrices is not None:
        matrices.append(("inverse_proj_matrices", inverse_proj_matrices))
    for name, mat in matrices:
        if tuple(mat.shape) != (batch, views, 4, 4):
            raise ShapeError(
                name, "shape disagrees with imgs", observed=tuple(mat.shape), expected=f"[B, N, 4, 4] = {[batch, views, 4, 4]}",
                fix="give one 4x4 matrix per view and batch item, in the order of imgs",
            )
    if depth_values.dim() != 2 or depth_values.shape[0] != batch:
        raise ShapeError(
            "depth_values", "wrong shape", observed=tuple(depth_values.shape), expected=f"[B, D] with B={batch}",
            fix="pass one row of depth hypotheses per batch item",
        )
    check_image_size(height, width)
    check_num_depth(depth_values.shape[1])


def check_values(
    imgs: torch.Tensor,
    proj_matrices: torch.Tensor,
    depth_values: torch.Tensor,
    inverse_proj_matrices: torch.Tensor | None = None,
) -> None:
    """Refuse non-finite values, singular reference projections and unordered hypotheses."""
    named = {"imgs": imgs, "proj_matrices": proj_matrices, "depth_values": depth_values}
    if inverse_proj_matrices is not None:
        named["inverse_proj_matrices"] = inverse_proj_matrices
    for name, tensor in named.items():
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise InvalidInput(
                name, "holds NaN or Inf", observed=f"{bad} of {tensor.numel()} values", expected="finite values only",
                fix="check the data preparation (image decoding, camera files) for this case",
            )
    ref = proj_matrices[:, 0].detach().to(torch.float64)
    cond = torch.linalg.cond(ref)
    if not bool(torch.all(cond < 1e12)):
        raise InvalidInput(
            "proj_matrices", "reference projection is singular", observed=f"condition number {float(cond.max()):.3g}",
            expected="an invertible P = [[K @ E[:3, :4]], [0, 0, 0, 1]]",
            fix="check the reference view's camera file (intrinsics rows, extrinsic rotation)",
        )
    if inverse_proj_matrices is not None:
        given = inverse_proj_matrices[:, 0].detach().to(torch.float64)
        exact = torch.linalg.inv(ref)
        relative = float(torch.linalg.matrix_norm(given - exact).max() / torch.linalg.matrix_norm(exact).max())
        if not relative < 1e-4:  # float32 storage of a float64 inverse is ~1e-7
            raise InvalidInput(
                "inverse_proj_matrices", "is not the inverse of proj_matrices for the reference view",
                observed=f"relative error {relative:.3g}", expected="below 1e-4",
                fix="compute it with harness.model.inverse_precomputed(proj_matrices)",
            )
    steps = depth_values[:, 1:] - depth_values[:, :-1]
    if not bool(((steps > 0).all(dim=1) | (steps < 0).all(dim=1)).all()):
        raise InvalidInput(
            "depth_values", "hypotheses are not strictly monotonic", observed=depth_values[0, :6].tolist(),
            expected="depth_min + interval * k for k = 0..D-1",
            fix="build them with harness.data.depth_hypotheses(depth_min, interval, D)",
        )
    if not bool((depth_values > 0).all()):
        raise InvalidInput(
            "depth_values", "hypotheses must lie in front of the camera", observed=f"min {float(depth_values.min()):g}",
            expected="all > 0 (scene units)", fix="check depth_min in the reference camera file",
        )
