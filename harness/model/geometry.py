"""Projective geometry of the plane sweep: 4x4 inverses and the differentiable homography.

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


def warp_source_volume(
    src_feature: torch.Tensor,
    src_proj: torch.Tensor,
    inv_ref_proj: torch.Tensor,
    depth_values: torch.Tensor,
    align_corners: bool = True,
) -> torch.Tensor:
    """Sample a source view's features on the reference view's depth planes.

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

    The arithmetic order follows MVSNet_pytorch step by step (the repeat over D is a broadcast
    here), so the sampling grid is bit-identical to the original's.
    """
    batch, channels, height, width = src_feature.shape
    num_depth = depth_values.shape[1]
    with torch.no_grad():
        proj = torch.matmul(src_proj, inv_ref_proj)
        rot = proj[:, :3, :3]
        trans = proj[:, :3, 3:4]
        ys = torch.arange(height, dtype=torch.float32, device=src_feature.device)
        xs = torch.arange(width, dtype=torch.float32, device=src_feature.device)
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        x, y = x.reshape(-1), y.reshape(-1)
        xyz = torch.stack((x, y, torch.ones_like(x)))  # [3, H*W]
        rot_xyz = torch.matmul(rot, xyz)  # [B, 3, H*W]
        rot_depth_xyz = rot_xyz.unsqueeze(2) * depth_values.view(batch, 1, num_depth, 1)
        proj_xyz = rot_depth_xyz + trans.view(batch, 3, 1, 1)  # [B, 3, D, H*W]
        proj_xy = proj_xyz[:, :2, :, :] / proj_xyz[:, 2:3, :, :]
        # (W-1)/2 taken from the coordinate vectors rather than Python ints, so that an export
        # with dynamic H and W keeps it symbolic; the value is identical in float32
        grid_x = proj_xy[:, 0, :, :] / (xs[-1] / 2) - 1
        grid_y = proj_xy[:, 1, :, :] / (ys[-1] / 2) - 1
        grid = torch.stack((grid_x, grid_y), dim=3)  # [B, D, H*W, 2]
    warped = F.grid_sample(
        src_feature,
        grid.view(batch, num_depth * height, width, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=align_corners,
    )
    return warped.view(batch, channels, num_depth, height, width)
