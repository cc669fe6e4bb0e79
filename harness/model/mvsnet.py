"""MVSNet (Yao et al., ECCV 2018) as in MVSNet_pytorch with ``refine=False``.

Same function and state-dict keys as the original; the differences are waste removed:
the reference volume is broadcast instead of repeated D times, and the photometric confidence
gathers four probabilities instead of pooling the whole probability volume.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from harness.model.geometry import inverse_closed_form, warp_source_volume
from harness.model.inputs import check_shapes
from harness.model.layers import CostRegNet, FeatureNet

OUTPUT_NAMES = ("depth", "photometric_confidence")
#: Intermediate tensors a probe build exposes, in the order data flows (see ``probing``).
STAGE_NAMES = ("ref_feature", "warped", "variance", "cost", "prob")
InverseMethod = Literal["torch", "closed_form"]


def _eager() -> bool:
    """True outside tracing/compilation: Python-side checks are only meaningful there."""
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling())


def depth_regression(prob_volume: torch.Tensor, depth_values: torch.Tensor) -> torch.Tensor:
    """Expected depth: ``[B, D, h, w]`` probabilities x ``[B, D]`` (or ``[D]``) -> ``[B, h, w]``."""
    return torch.sum(prob_volume * depth_values.view(*depth_values.shape, 1, 1), 1)


def photometric_confidence(prob_volume: torch.Tensor) -> torch.Tensor:
    """Probability mass of the four hypotheses around the expected index, ``[B, h, w]``.

    The original pads the probability volume along D by (1, 2), average-pools with a window of
    4 and multiplies by 4, then gathers at ``trunc(sum_d prob_d * d)``. That is the sum of
    ``prob[i-1] + prob[i] + prob[i+1] + prob[i+2]`` (out-of-range terms zero), which is what is
    computed here from four gathers instead of a pass over the whole volume.
    """
    num_depth = prob_volume.shape[1]
    index_values = torch.arange(num_depth, device=prob_volume.device, dtype=torch.float32)
    index = depth_regression(prob_volume, index_values).long().unsqueeze(1)  # trunc, [B, 1, h, w]
    offsets = torch.arange(-1, 3, device=prob_volume.device).view(1, 4, 1, 1)
    window = index + offsets  # [B, 4, h, w]
    inside = (window >= 0) & (window < num_depth)
    taken = torch.gather(prob_volume, 1, window.clamp(0, num_depth - 1))
    return torch.sum(taken * inside.to(taken.dtype), 1)


class MVSNet(nn.Module):
    """Depth of the reference view from N calibrated views.

    Args:
        inverse: how the reference projection is inverted when ``forward`` gets no
            ``inverse_proj_matrices``: ``"torch"`` (``torch.inverse``, as the original; does not
            export to ONNX) or ``"closed_form"`` (elementwise cofactors; exports).
        align_corners: the bilinear sampling convention of the homography warp (see
            ``harness.model.geometry.warp_source_volume``); ``True`` is what the published
            checkpoints were trained with. Not a weight: the state dict is the same either way.
    """

    def __init__(self, inverse: InverseMethod = "torch", align_corners: bool = True) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.feature = FeatureNet()
        self.cost_regularization = CostRegNet()
        self.inverse: InverseMethod = inverse
        # None: everything in float32. float16: the convolutions (FeatureNet, CostRegNet) run in
        # half precision while the projection math, sampling, variance, softmax and regression
        # stay float32 (see ``to_mixed_precision``).
        self.low_precision: torch.dtype | None = None
        # set by ``probing``: intermediate tensors are copied into it while it is not None
        self.probes: dict[str, torch.Tensor] | None = None

    def _probe(self, name: str, tensor: torch.Tensor) -> None:
        if self.probes is not None:
            # a copy: later in-place accumulation must not change what was recorded
            self.probes[name] = tensor.detach().float().clone()

    def _features(self, img: torch.Tensor) -> torch.Tensor:
        if self.low_precision is None:
            return self.feature(img)
        return self.feature(img.to(self.low_precision)).float()

    def _regularize(self, variance: torch.Tensor) -> torch.Tensor:
        if self.low_precision is None:
            return self.cost_regularization(variance)
        return self.cost_regularization(variance.to(self.low_precision)).float()

    def forward(
        self,
        imgs: torch.Tensor,
        proj_matrices: torch.Tensor,
        depth_values: torch.Tensor,
        inverse_proj_matrices: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Args:
            imgs: ``[B, N, 3, H, W]`` float32 in [0, 1]; view 0 is the reference.
            proj_matrices: ``[B, N, 4, 4]`` with intrinsics at 1/4 resolution.
            depth_values: ``[B, D]`` reference-view depth hypotheses.
            inverse_proj_matrices: optional ``[B, N, 4, 4]`` inverses of ``proj_matrices``
                (only view 0 is read); when given, no matrix inverse runs in the network.

        Returns:
            ``{"depth": [B, H/4, W/4], "photometric_confidence": [B, H/4, W/4]}``.
        """
        if _eager():
            check_shapes(imgs, proj_matrices, depth_values, inverse_proj_matrices)
        num_views = imgs.shape[1]
        ref_proj = proj_matrices[:, 0]
        if inverse_proj_matrices is not None:
            inv_ref_proj = inverse_proj_matrices[:, 0]
        elif self.inverse == "closed_form":
            inv_ref_proj = inverse_closed_form(ref_proj)
        else:
            inv_ref_proj = torch.inverse(ref_proj)

        if self.training:
            # per view, as the original: batch-norm statistics are then per view
            features = torch.stack([self._features(imgs[:, v]) for v in range(num_views)], dim=1)
        else:
            # one FeatureNet call for every view (views folded into the batch): fewer, larger
            # kernels, and with frozen batch-norm statistics the same function
            features = self._features(imgs.flatten(0, 1))
            features = features.view(imgs.shape[0], num_views, *features.shape[1:])  # [B, N, C, h, w]
        ref_feature = features[:, 0].unsqueeze(2)  # [B, C, 1, h, w], broadcast over D
        self._probe("ref_feature", features[:, 0])
        # The first source volume starts the sums; in-place accumulation after that (when no
        # gradient is needed) keeps peak memory at three volumes, as in the original.
        inplace = not torch.is_grad_enabled()
        volume_sum = volume_sq_sum = None
        for view in range(1, num_views):
            warped = warp_source_volume(features[:, view], proj_matrices[:, view], inv_ref_proj, depth_values,
                                        self.align_corners)
            self._probe(f"warped_{view}", warped)
            if volume_sum is None or volume_sq_sum is None:
                volume_sum = ref_feature + warped
                volume_sq_sum = ref_feature**2 + warped**2
            elif inplace:
                volume_sum += warped
                volume_sq_sum += warped.pow_(2)
            else:
                volume_sum = volume_sum + warped
                volume_sq_sum = volume_sq_sum + warped**2
        assert volume_sum is not None and volume_sq_sum is not None  # num_views >= 2
        if inplace:
            variance = volume_sq_sum.div_(num_views).sub_(volume_sum.div_(num_views).pow_(2))
        else:
            variance = volume_sq_sum / num_views - (volume_sum / num_views) ** 2

        self._probe("variance", variance)
        cost = self._regularize(variance).squeeze(1)  # [B, D, h, w]
        self._probe("cost", cost)
        prob_volume = torch.softmax(cost, dim=1)
        self._probe("prob", prob_volume)
        depth = depth_regression(prob_volume, depth_values)
        with torch.no_grad():
            confidence = photometric_confidence(prob_volume)
        return {"depth": depth, "photometric_confidence": confidence}


def to_mixed_precision(model: MVSNet, dtype: torch.dtype = torch.float16) -> MVSNet:
    """A copy of ``model`` whose convolutions run in ``dtype`` and whose precision-sensitive
    parts stay float32: projection and sampling coordinates (FP16 loses sub-pixel precision),
    the variance E[x^2] - E[x]^2 (cancellation), the softmax over D and the depth regression
    (long reductions). Exported, this is the FP16 graph that strongly typed TensorRT builds as is.
    """
    import copy

    mixed = copy.deepcopy(model)
    mixed.feature.to(dtype)
    mixed.cost_regularization.to(dtype)
    mixed.low_precision = dtype
    return mixed.eval()


class probing:
    """``with probing(model) as probes: model(...)`` fills ``probes`` with the intermediate
    tensors (``ref_feature``, ``warped_<view>``, ``variance``, ``cost``, ``prob``), float32
    copies. Only probe runs pay for the copies; the timed paths never enter this context."""

    def __init__(self, model: MVSNet) -> None:
        self.model = model
        self.probes: dict[str, torch.Tensor] = {}

    def __enter__(self) -> dict[str, torch.Tensor]:
        self.model.probes = self.probes
        return self.probes

    def __exit__(self, *exc: object) -> None:
        self.model.probes = None
