"""Projective geometry of the plane sweep: 4x4 inverses and the differentiable homography.

Exported graphs compute the projection and the sampling grid from Mul/Add/Div only (no MatMul,
Gemm or Einsum), so TF32 cannot round them; ``harness.convert.precision.tf32_exposed_nodes``
names the nodes of a graph that does not.

Conventions (MVSNet_pytorch): a projection matrix is ``P = [[K @ E[:3, :4]], [0, 0, 0, 1]]``
with ``K`` already scaled to feature resolution (first two rows divided by 4). A feature pixel
``(x, y)`` at depth ``d`` of the reference view is the homogeneous point ``(x*d, y*d, d, 1)``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def inverse_closed_form(m: torch.Tensor) -> torch.Tensor:
    """Inverse of ``[..., 4, 4]`` matrices from elementwise operations only.

    Cofactor expansion through the six 2x2 minors of the top two rows and of the bottom two rows;
    exports to plain Mul/Sub/Div nodes, so no ``aten::linalg_inv`` reaches the ONNX exporter.
    The caller guarantees invertibility (``harness.model.inputs`` refuses singular projections).
    """
    a = [[m[..., i, j] for j in range(4)] for i in range(4)]
    s0 = a[0][0] * a[1][1] - a[1][0] * a[0][1]
    s1 = a[0][0] * a[1][2] - a[1][0] * a[0][2]
    s2 = a[0][0] * a[1][3] - a[1][0] * a[0][3]
    s3 = a[0][1] * a[1][2] - a[1][1] * a[0][2]
    s4 = a[0][1] * a[1][3] - a[1][1] * a[0][3]
    s5 = a[0][2] * a[1][3] - a[1][2] * a[0][3]
    c5 = a[2][2] * a[3][3] - a[3][2] * a[2][3]
    c4 = a[2][1] * a[3][3] - a[3][1] * a[2][3]
    c3 = a[2][1] * a[3][2] - a[3][1] * a[2][2]
    c2 = a[2][0] * a[3][3] - a[3][0] * a[2][3]
    c1 = a[2][0] * a[3][2] - a[3][0] * a[2][2]
    c0 = a[2][0] * a[3][1] - a[3][0] * a[2][1]
    det = s0 * c5 - s1 * c4 + s2 * c3 + s3 * c2 - s4 * c1 + s5 * c0
    rows = [
        [
            a[1][1] * c5 - a[1][2] * c4 + a[1][3] * c3,
            -a[0][1] * c5 + a[0][2] * c4 - a[0][3] * c3,
            a[3][1] * s5 - a[3][2] * s4 + a[3][3] * s3,
            -a[2][1] * s5 + a[2][2] * s4 - a[2][3] * s3,
        ],
        [
            -a[1][0] * c5 + a[1][2] * c2 - a[1][3] * c1,
            a[0][0] * c5 - a[0][2] * c2 + a[0][3] * c1,
            -a[3][0] * s5 + a[3][2] * s2 - a[3][3] * s1,
            a[2][0] * s5 - a[2][2] * s2 + a[2][3] * s1,
        ],
        [
            a[1][0] * c4 - a[1][1] * c2 + a[1][3] * c0,
            -a[0][0] * c4 + a[0][1] * c2 - a[0][3] * c0,
            a[3][0] * s4 - a[3][1] * s2 + a[3][3] * s0,
            -a[2][0] * s4 + a[2][1] * s2 - a[2][3] * s0,
        ],
        [
            -a[1][0] * c3 + a[1][1] * c1 - a[1][2] * c0,
            a[0][0] * c3 - a[0][1] * c1 + a[0][2] * c0,
            -a[3][0] * s3 + a[3][1] * s1 - a[3][2] * s0,
            a[2][0] * s3 - a[2][1] * s1 + a[2][2] * s0,
        ],
    ]
    adjugate = torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)
    return adjugate / det[..., None, None]


def inverse_precomputed(proj_matrices: torch.Tensor) -> torch.Tensor:
    """Data-preparation inverse of ``[..., 4, 4]``: computed in float64, returned as float32.

    This is the source article's workaround: the inverse never enters the network graph.
    """
    return torch.linalg.inv(proj_matrices.detach().to(torch.float64)).to(torch.float32)


def projection_rows(src_proj: torch.Tensor, inv_ref_proj: torch.Tensor) -> torch.Tensor:
    """The top three rows of ``src_proj @ inv_ref_proj`` (``[B, 4, 4]`` each), ``[B, 3, 4]``.

    Written as the sum of four broadcast products (column k of ``src_proj`` times row k of
    ``inv_ref_proj``), summed in order k = 0..3, so that an exported graph holds Mul and Add nodes
    and no MatMul (which TF32 would round; see ``warp_source_volume``). The bottom row
    ``[0, 0, 0, 1]`` of a projection is never read by the warp.
    """
    src = src_proj[:, :3, :]
    total = src[:, :, 0:1] * inv_ref_proj[:, 0:1, :]
    for k in range(1, 4):
        total = total + src[:, :, k:k + 1] * inv_ref_proj[:, k:k + 1, :]
    return total


def sampling_grid(src_proj: torch.Tensor, inv_ref_proj: torch.Tensor, depth_values: torch.Tensor,
                  height: int, width: int) -> torch.Tensor:
    """Where each reference pixel on each depth plane lands in the source view, normalised for
    ``grid_sample``: ``[B, D, H*W, 2]`` (x, y in [-1, 1] inside the image), no gradient.

    Args:
        src_proj, inv_ref_proj: ``[B, 4, 4]`` the source projection and the inverse of the
            reference projection.
        depth_values: ``[B, D]`` depth hypotheses of the reference view.
        height, width: the feature map's size in pixels.

    MVSNet_pytorch's ``homo_warping`` grid, with its two matrix products (``src_proj @
    inv_ref_proj`` and ``rot @ [x, y, 1]``) written as elementwise multiply-adds over their 4 and
    3 terms. TF32, on by default in ONNX Runtime's CUDA provider and in trtexec, rounds a MatMul's
    inputs to 10 mantissa bits: each projection and rotation coefficient changes by up to 2^-11 of
    its value, and multiplied by pixel coordinates in the hundreds that moves the samples by a
    tenth of a pixel or more (0.18 px at the seed case's 160-pixel-wide features), which the
    bilinear warp turns into millimetres of depth. Mul and Add never run in TF32, so the exported
    graph's grid is the same with TF32 on or off. Only the summation order differs from the
    original's MatMuls (float32 rounding; ``tests/model/test_geometry.py`` measures the grid
    against the original formula in pixels).
    """
    batch, num_depth = depth_values.shape
    with torch.no_grad():
        proj = projection_rows(src_proj, inv_ref_proj)  # [B, 3, 4]
        rot = proj[:, :, :3]
        trans = proj[:, :, 3:4]
        ys = torch.arange(height, dtype=torch.float32, device=depth_values.device)
        xs = torch.arange(width, dtype=torch.float32, device=depth_values.device)
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        x, y = x.reshape(-1), y.reshape(-1)
        # rot @ [x, y, 1] term by term: [B, 3, 1] coefficients times [H*W] pixel coordinates
        rot_xyz = rot[:, :, 0:1] * x + rot[:, :, 1:2] * y + rot[:, :, 2:3]  # [B, 3, H*W]
        rot_depth_xyz = rot_xyz.unsqueeze(2) * depth_values.view(batch, 1, num_depth, 1)
        proj_xyz = rot_depth_xyz + trans.view(batch, 3, 1, 1)  # [B, 3, D, H*W]
        proj_xy = proj_xyz[:, :2, :, :] / proj_xyz[:, 2:3, :, :]
        # (W-1)/2 taken from the coordinate vectors rather than Python ints, so that an export
        # with dynamic H and W keeps it symbolic; the value is identical in float32
        grid_x = proj_xy[:, 0, :, :] / (xs[-1] / 2) - 1
        grid_y = proj_xy[:, 1, :, :] / (ys[-1] / 2) - 1
        return torch.stack((grid_x, grid_y), dim=3)  # [B, D, H*W, 2]


def warp_source_volume(
    src_feature: torch.Tensor,
    src_proj: torch.Tensor,
    inv_ref_proj: torch.Tensor,
    depth_values: torch.Tensor,
    align_corners: bool = True,
) -> torch.Tensor:
    """Sample a source view's features on the reference view's depth planes (MVSNet_pytorch's
    ``homo_warping``; the grid is ``sampling_grid``'s, TF32-safe).

    Args:
        src_feature: ``[B, C, H, W]`` features of one source view.
        src_proj: ``[B, 4, 4]`` projection of that view.
        inv_ref_proj: ``[B, 4, 4]`` inverse of the reference projection.
        depth_values: ``[B, D]`` hypotheses of the reference view (scene units, mm on DTU).
        align_corners: the sampling convention. ``True`` (default): the published MVSNet_pytorch
            checkpoints were trained with it (the code predates PyTorch 1.3's default change).
            ``False``: what that same code computes on torch >= 1.3, where ``grid_sample``'s
            default became ``False`` (half a pixel off the convention it was trained with).

    Returns:
        ``[B, C, D, H, W]``: bilinear samples, zero outside the source image.
    """
    batch, channels, height, width = src_feature.shape
    num_depth = depth_values.shape[1]
    grid = sampling_grid(src_proj, inv_ref_proj, depth_values, height, width)
    warped = F.grid_sample(
        src_feature,
        grid.view(batch, num_depth * height, width, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=align_corners,
    )
    return warped.view(batch, channels, num_depth, height, width)
