"""Projective geometry: the closed-form 4x4 inverse, the precomputed inverse and the homography warp."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from harness.model.geometry import inverse_closed_form, inverse_precomputed, sampling_grid, warp_source_volume


def _well_conditioned(*batch_shape: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(*batch_shape, 4, 4, generator=gen, dtype=torch.float64) + 4.0 * torch.eye(4, dtype=torch.float64)
    assert float(torch.linalg.cond(m).max()) < 50  # precondition of the test, not a property under test
    return m


def _relative_error(candidate: torch.Tensor, exact: torch.Tensor) -> float:
    """Largest Frobenius-norm relative error over the batch."""
    return float((torch.linalg.matrix_norm(candidate - exact) / torch.linalg.matrix_norm(exact)).max())


# ---------------------------------------------------------------- inverse_closed_form


@pytest.mark.parametrize("seed", range(5))
def test_inverse_closed_form_matches_linalg_inv_in_float64(seed):
    m = _well_conditioned(seed=seed)
    torch.testing.assert_close(inverse_closed_form(m), torch.linalg.inv(m), rtol=1e-12, atol=1e-12)


def test_inverse_closed_form_inverts_every_matrix_of_a_batch_of_views():
    m = _well_conditioned(2, 5, seed=7)
    inv = inverse_closed_form(m)
    assert inv.shape == (2, 5, 4, 4)
    torch.testing.assert_close(inv, torch.linalg.inv(m), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m @ inv, torch.eye(4, dtype=torch.float64).expand(2, 5, 4, 4), rtol=0, atol=1e-12)


def test_inverse_closed_form_does_not_need_a_nonzero_leading_minor():
    # The top-left 2x2 minor is zero (rows 0 and 1 start proportionally) but the matrix is
    # invertible: a cofactor expansion must not divide by any minor.
    m = torch.tensor(
        [[1.0, 2.0, 1.0, 0.0], [2.0, 4.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.2, 0.0]], dtype=torch.float64
    )
    assert float(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]) == 0.0
    assert abs(float(torch.linalg.det(m))) > 0.1
    torch.testing.assert_close(inverse_closed_form(m), torch.linalg.inv(m), rtol=1e-12, atol=1e-12)


def test_inverse_closed_form_of_realistic_projections_is_accurate_in_float32(make_projections):
    proj = make_projections(4, 3, seed=11)  # K/4 @ [R|t], fx ~ 300, t ~ 500 mm
    exact = torch.linalg.inv(proj)
    closed = inverse_closed_form(proj.to(torch.float32))
    assert closed.dtype == torch.float32
    # float32 storage alone costs ~1e-7; measured 1.4e-7 for the cofactors.
    assert _relative_error(closed.double(), exact) < 2e-6


def test_inverse_closed_form_traces_to_elementwise_ops_only():
    # The reason it exists: no matrix-inverse (or solve) op may reach the ONNX exporter.
    graph = make_fx(inverse_closed_form)(_well_conditioned(1, 3, seed=1).float()).graph
    ops = {str(node.target) for node in graph.nodes if node.op == "call_function"}
    assert not {op for op in ops if any(bad in op for bad in ("inverse", "linalg", "solve", "aten.lu"))}
    assert {"aten.mul.Tensor", "aten.sub.Tensor", "aten.div.Tensor"} <= ops


# ---------------------------------------------------------------- inverse_precomputed


def test_inverse_precomputed_returns_float32_of_the_float64_inverse(make_projections):
    proj = make_projections(2, 3, seed=5).to(torch.float32)
    inv = inverse_precomputed(proj)
    assert inv.dtype == torch.float32
    assert inv.shape == (2, 3, 4, 4)
    expected = torch.linalg.inv(proj.to(torch.float64)).to(torch.float32)
    assert torch.equal(inv, expected)


def test_inverse_precomputed_is_at_least_as_accurate_as_a_float32_inverse(make_projections):
    proj = make_projections(16, seed=9).to(torch.float32)
    exact = torch.linalg.inv(proj.double())
    precomputed = _relative_error(inverse_precomputed(proj).double(), exact)
    single = _relative_error(torch.linalg.inv(proj).double(), exact)
    assert precomputed <= single
    assert precomputed < 1e-6


def test_inverse_precomputed_leaves_input_untouched_and_outside_autograd(make_projections):
    proj = make_projections(1, 2, seed=3).to(torch.float32).requires_grad_()
    before = proj.detach().clone()
    inv = inverse_precomputed(proj)
    assert not inv.requires_grad
    assert torch.equal(proj.detach(), before)


# ---------------------------------------------------------------- sampling_grid

#: the grid against MVSNet_pytorch's MatMul formula, in pixels: float32 summation order only.
#: Measured 0.0 px on CPU at the small and seed cases (torch 2.13 sums its 3- and 4-term products
#: in the same order); a GPU FP32 MatMul may fuse multiply-adds, worth ~1e-5 px. The same formula
#: with TF32 MatMuls: measured 0.016-0.044 px (small) and 0.066-0.18 px (seed).
GRID_ATOL_PX = 1e-3


def _tf32(t: torch.Tensor) -> torch.Tensor:
    """Round float32 values to TF32's 10 mantissa bits (Veltkamp split), as a TF32 MatMul reads them."""
    p = t * 8193.0
    return p - (p - t)


def _original_grid(src_proj, inv_ref_proj, depth_values, height, width, rounding=lambda t: t):
    """MVSNet_pytorch's ``homo_warping`` grid, MatMuls and all; ``rounding`` is applied to every
    MatMul input (``_tf32``: what ONNX Runtime's and trtexec's TF32 default does to them)."""
    batch, num_depth = depth_values.shape
    proj = torch.matmul(rounding(src_proj), rounding(inv_ref_proj))
    rot, trans = proj[:, :3, :3], proj[:, :3, 3:4]
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    xyz = torch.stack((x, y, torch.ones_like(x))).unsqueeze(0).repeat(batch, 1, 1)
    rot_xyz = torch.matmul(rounding(rot), rounding(xyz))
    proj_xyz = rot_xyz.unsqueeze(2) * depth_values.view(batch, 1, num_depth, 1) + trans.view(batch, 3, 1, 1)
    proj_xy = proj_xyz[:, :2] / proj_xyz[:, 2:3]
    return torch.stack((proj_xy[:, 0] / ((width - 1) / 2) - 1, proj_xy[:, 1] / ((height - 1) / 2) - 1), dim=3)


def _grid_difference_px(grid: torch.Tensor, exact: torch.Tensor, height: int, width: int) -> float:
    """Largest |difference| in pixels over the samples that land inside the image."""
    inside = (exact.abs() <= 1).all(-1)
    assert int(inside.sum()) > 1000  # precondition: the cameras overlap
    pixels = (grid - exact).abs() * torch.tensor([(width - 1) / 2, (height - 1) / 2])
    return float(pixels[inside].max())


@pytest.mark.parametrize("case_name", ["small", "seed"])
def test_sampling_grid_is_the_original_matmul_formula_within_float32_rounding(case_name):
    # the harness's own cases (bundled scene): every source view, every depth plane
    from harness.data.cases import case_feed, case_views, get_case

    case = get_case(case_name)
    feed = case_feed(case, case_views(case), with_inverse=True)
    height, width = case.height // 4, case.width // 4
    inv, depth = feed["inverse_proj_matrices"][:, 0], feed["depth_values"]
    for view in range(1, case.views):
        src = feed["proj_matrices"][:, view]
        grid = sampling_grid(src, inv, depth, height, width)
        assert grid.shape == (1, case.num_depth, height * width, 2)
        original = _original_grid(src, inv, depth, height, width)
        assert _grid_difference_px(grid, original, height, width) <= GRID_ATOL_PX
        # the control: the same formula with TF32 MatMuls is far outside that tolerance
        tf32 = _original_grid(src, inv, depth, height, width, rounding=_tf32)
        assert _grid_difference_px(tf32, original, height, width) > 10 * GRID_ATOL_PX


def test_sampling_grid_traces_to_elementwise_ops_only(make_projections):
    # The reason it is written term by term: no op TF32 rounds (mm, bmm, matmul, einsum, addmm)
    # may compute the projection or the grid of an exported graph.
    proj = make_projections(1, 2, seed=4).to(torch.float32)
    graph = make_fx(lambda p, i, d: sampling_grid(p, i, d, 8, 10))(proj[:, 1], proj[:, 0], torch.ones(1, 3)).graph
    ops = {str(node.target) for node in graph.nodes if node.op == "call_function"}
    assert not {op for op in ops if any(bad in op for bad in ("mm", "matmul", "einsum", "linear", "baddbmm"))}
    assert {"aten.mul.Tensor", "aten.add.Tensor", "aten.div.Tensor"} <= ops


# ---------------------------------------------------------------- warp_source_volume


def _features(batch: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


def _translation(tx: float, ty: float = 0.0) -> torch.Tensor:
    """A source 'projection' that, with an identity reference, moves pixel x to x + tx / d."""
    m = torch.eye(4)
    m[0, 3] = tx
    m[1, 3] = ty
    return m


def test_warp_with_identity_cameras_returns_the_features_on_every_plane():
    feats = _features(2, 4, 8, 12)
    eye = torch.eye(4).expand(2, 4, 4)
    depth = torch.tensor([[1.0, 2.0, 5.0], [3.0, 7.0, 11.0]])
    warped = warp_source_volume(feats, eye, eye, depth)
    assert warped.shape == (2, 4, 3, 8, 12)
    # align_corners=True: pixel x maps to x/((W-1)/2) - 1 and is sampled exactly; with
    # align_corners=False every sample would be half a pixel off and blend two features.
    torch.testing.assert_close(warped, feats.unsqueeze(2).expand_as(warped), rtol=0, atol=1e-5)


def test_warp_with_the_reference_camera_as_source_returns_the_reference_features(make_projections):
    # Same (realistic) camera for source and reference: every depth plane maps each pixel onto itself.
    height, width = 16, 20
    proj = make_projections(2, seed=21, height=height, width=width).to(torch.float32)
    inv = inverse_precomputed(proj)
    yy, xx = torch.meshgrid(torch.linspace(0, 3, height), torch.linspace(0, 4, width), indexing="ij")
    smooth = torch.stack([torch.sin(xx + yy), torch.cos(xx - 2 * yy), xx * 0.1 - yy * 0.2])
    feats = torch.stack([smooth, smooth.flip(-1)])  # [2, 3, H, W]
    depth = torch.linspace(425.0, 935.0, 8).expand(2, 8).contiguous()
    warped = warp_source_volume(feats, proj, inv, depth)
    assert warped.shape == (2, 3, 8, height, width)
    torch.testing.assert_close(warped, feats.unsqueeze(2).expand_as(warped), rtol=0, atol=1e-3)


def test_warp_shifts_by_the_disparity_of_each_depth_plane():
    # R = I, t = (6, 0, 0): a pixel x at depth d lands on x + 6/d, so planes 1, 2, 3, 6 shift by 6, 3, 2, 1.
    feats = _features(1, 2, 5, 16, seed=4)
    depth = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    warped = warp_source_volume(feats, _translation(6.0).unsqueeze(0), torch.eye(4).unsqueeze(0), depth)
    for plane, shift in enumerate((6, 3, 2, 1)):
        inside = warped[0, :, plane, :, : 16 - shift]
        torch.testing.assert_close(inside, feats[0, :, :, shift:], rtol=0, atol=1e-5)
        # Samples beyond the right edge read the zero padding.
        assert torch.equal(warped[0, :, plane, :, 16 - shift:], torch.zeros(2, 5, shift))


def test_warp_samples_bilinearly_between_pixels():
    feats = _features(1, 3, 6, 10, seed=5)
    depth = torch.tensor([[2.0]])  # shift 1/2 pixel down
    warped = warp_source_volume(feats, _translation(0.0, 1.0).unsqueeze(0), torch.eye(4).unsqueeze(0), depth)
    expected = 0.5 * (feats[0, :, :-1, :] + feats[0, :, 1:, :])
    torch.testing.assert_close(warped[0, :, 0, :-1, :], expected, rtol=0, atol=1e-5)


def test_warp_is_zero_where_the_source_view_sees_nothing():
    feats = _features(1, 4, 8, 12, seed=6) + 10.0  # no feature is zero
    depth = torch.tensor([[1.0, 2.0]])
    # Shift far beyond the image, to the left, and up.
    for tx, ty in ((100.0, 0.0), (-100.0, 0.0), (0.0, -100.0)):
        warped = warp_source_volume(feats, _translation(tx, ty).unsqueeze(0), torch.eye(4).unsqueeze(0), depth)
        assert torch.equal(warped, torch.zeros(1, 4, 2, 8, 12))


def test_warp_treats_each_batch_item_with_its_own_cameras():
    feats = _features(2, 3, 6, 12, seed=8)
    src = torch.stack([_translation(0.0), _translation(2.0)])
    depth = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    warped = warp_source_volume(feats, src, torch.eye(4).expand(2, 4, 4), depth)
    single = warp_source_volume(feats[1:], src[1:], torch.eye(4).unsqueeze(0), depth[1:])
    torch.testing.assert_close(warped[0], feats[0].unsqueeze(1).expand(3, 2, 6, 12), rtol=0, atol=1e-5)
    torch.testing.assert_close(warped[1:], single, rtol=0, atol=0)
    torch.testing.assert_close(warped[1, :, 0, :, :10], feats[1, :, :, 2:], rtol=0, atol=1e-5)


def test_warp_passes_gradients_to_the_source_features_only():
    feats = _features(1, 2, 6, 8, seed=9).requires_grad_()
    src = _translation(0.5).unsqueeze(0).requires_grad_()
    warped = warp_source_volume(feats, src, torch.eye(4).unsqueeze(0), torch.tensor([[1.0, 2.0]]))
    warped.sum().backward()
    assert feats.grad is not None and bool(feats.grad.abs().sum() > 0)
    assert src.grad is None  # the sampling grid is built under no_grad, as in the original
