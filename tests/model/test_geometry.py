"""Projective geometry: the closed-form 4x4 inverse, the precomputed inverse and the homography warp."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from harness.model.geometry import inverse_closed_form, inverse_precomputed, warp_source_volume


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
