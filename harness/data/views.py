"""A reference view with its source views, loaded from a DTU-format folder or a synthetic scene,
and turned into MVSNet's input tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from harness.data.dtu import Camera, find_image, read_cam_file, read_image, read_pair_file, view_file
from harness.data.pfm import read_pfm
from harness.errors import DataFormatError, InvalidArgument, InvalidInput, MissingFile
from harness.model.geometry import inverse_precomputed
from harness.model.inputs import SIZE_MULTIPLE, check_image_size, check_num_depth


@dataclass(frozen=True)
class Views:
    """Images and cameras of one reference view (index 0) and its source views.

    ``intrinsics`` are for the full image; ``depth``/``mask`` (optional ground truth) are at 1/4
    resolution, sampled at the feature pixels ``(4x, 4y)``.
    """

    images: torch.Tensor  # [N, 3, H, W] float32 in [0, 1]
    intrinsics: torch.Tensor  # [N, 3, 3] float64
    extrinsics: torch.Tensor  # [N, 4, 4] float64
    depth_min: float
    depth_interval: float
    view_ids: tuple[int, ...]
    depth: torch.Tensor | None = None  # [H/4, W/4] float32
    mask: torch.Tensor | None = None  # [H/4, W/4] bool
    source: str = ""

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])


def depth_hypotheses(depth_min: float, interval: float, num_depth: int) -> torch.Tensor:
    """``[D]`` float32: ``depth_min + interval * k`` for k = 0..D-1 (computed in float64)."""
    return (depth_min + interval * torch.arange(num_depth, dtype=torch.float64)).to(torch.float32)


def projection_matrices(intrinsics: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """``[N, 4, 4]`` float32 ``P = [[K/4 @ E[:3, :4]], [0 0 0 1]]`` (feature resolution)."""
    k = intrinsics.to(torch.float64).clone()
    k[:, :2, :] /= 4.0
    proj = extrinsics.to(torch.float64).clone()
    proj[:, :3, :4] = k @ extrinsics.to(torch.float64)[:, :3, :4]
    return proj.to(torch.float32)


def make_feed(
    views: Views,
    num_depth: int,
    interval_scale: float,
    with_inverse: bool = False,
) -> dict[str, torch.Tensor]:
    """MVSNet's inputs with a batch of one: ``imgs [1,N,3,H,W]``, ``proj_matrices [1,N,4,4]``,
    ``depth_values [1,D]`` and, when asked, ``inverse_proj_matrices [1,N,4,4]`` (float64 inverse,
    stored as float32: the precomputed workaround)."""
    check_num_depth(num_depth)
    proj = projection_matrices(views.intrinsics, views.extrinsics).unsqueeze(0)
    condition = torch.linalg.cond(proj[0].to(torch.float64))
    for index, value in enumerate(condition.tolist()):
        if not value < 1e12:  # also catches inf/nan
            view = views.view_ids[index] if index < len(views.view_ids) else index
            raise InvalidInput(
                f"{views.source or 'views'} view {view}", "projection matrix is singular", observed=f"condition number {value:.3g}",
                expected="an invertible P = [[K/4 @ E[:3, :4]], [0, 0, 0, 1]]",
                fix=f"check cams/{view:08d}_cam.txt (focal lengths, rotation rows)" if isinstance(view, int)
                else "check that view's camera",
            )
    feed = {
        "imgs": views.images.unsqueeze(0).contiguous(),
        "proj_matrices": proj,
        "depth_values": depth_hypotheses(views.depth_min, views.depth_interval * interval_scale, num_depth).unsqueeze(0),
    }
    if with_inverse:
        feed["inverse_proj_matrices"] = inverse_precomputed(proj)
    return feed


def _blur_kernel(factor: int) -> torch.Tensor:
    # Gaussian with sigma = factor / 2, centred on the kept pixel (corner-aligned sampling).
    radius = factor
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (x / (factor / 2.0)) ** 2)
    return g / g.sum()


def downscale(views: Views, factor: int) -> Views:
    """Reduce the images by an integer ``factor``, keeping MVSNet's pixel convention.

    Pixel ``k`` of the result is pixel ``factor*k`` of the original (x_new = x_old / factor, so
    the intrinsics' first two rows are divided by ``factor``); a centred Gaussian blur before the
    subsampling prevents aliasing. Ground truth at 1/4 resolution is subsampled the same way.
    """
    if factor == 1:
        return views
    if factor < 1:
        raise InvalidArgument("downscale factor", "must be a positive integer", observed=factor, expected=">= 1")
    kernel = _blur_kernel(factor)
    n = views.images.shape[0]
    x = views.images.reshape(n * 3, 1, *views.images.shape[2:])
    pad = len(kernel) // 2
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="replicate"), kernel.view(1, 1, -1, 1))
    images = x[:, :, ::factor, ::factor].reshape(n, 3, *x[:, :, ::factor, ::factor].shape[2:]).contiguous()
    k = views.intrinsics.clone()
    k[:, :2, :] /= factor
    depth = views.depth[::factor, ::factor].contiguous() if views.depth is not None else None
    mask = views.mask[::factor, ::factor].contiguous() if views.mask is not None else None
    return replace(views, images=images, intrinsics=k, depth=depth, mask=mask)


def crop_to_valid(views: Views) -> Views:
    """Crop bottom rows / right columns to the next smaller multiple of 32 (as MVSNet_pytorch
    crops DTU's 1200x1600 to 1184x1600): the intrinsics stay valid."""
    h, w = views.size
    hh, ww = h - h % SIZE_MULTIPLE, w - w % SIZE_MULTIPLE
    if (hh, ww) == (h, w):
        return views
    if hh == 0 or ww == 0:
        check_image_size(h, w, views.source or "images")
    depth = views.depth[: hh // 4, : ww // 4] if views.depth is not None else None
    mask = views.mask[: hh // 4, : ww // 4] if views.mask is not None else None
    return replace(views, images=views.images[:, :, :hh, :ww].contiguous(), depth=depth, mask=mask)


def fit_to_size(views: Views, height: int, width: int) -> Views:
    """Bring ``views`` to ``height x width`` by an integer downscale and a bottom/right crop."""
    check_image_size(height, width)
    h, w = views.size
    factor = min(h // height, w // width)
    if factor < 1:
        raise InvalidArgument(
            views.source or "views", "images are smaller than the requested size", observed=f"{h}x{w}",
            expected=f"at least {height}x{width}", fix="choose a smaller case or a scene with larger images",
        )
    scaled = downscale(views, factor)
    h2, w2 = scaled.size
    depth = scaled.depth[: height // 4, : width // 4] if scaled.depth is not None else None
    mask = scaled.mask[: height // 4, : width // 4] if scaled.mask is not None else None
    return replace(scaled, images=scaled.images[:, :, :height, :width].contiguous(), depth=depth, mask=mask)


def load_views(scene: str | Path, ref_view: int | None = None, num_views: int = 3) -> Views:
    """Read a reference view and its ``num_views - 1`` best source views (pair.txt order)."""
    if num_views < 2:
        raise InvalidArgument("num_views", "too few views", observed=num_views, expected=">= 2 (a reference and at least one source)",
                              fix="use 3 or 5 views")
    scene = Path(scene)
    if not scene.is_dir():
        raise MissingFile(str(scene), "scene folder not found", observed="no such folder",
                          expected="a DTU-format folder with pair.txt, cams/ and images/",
                          fix="pass --scene PATH, or omit it to use the bundled scene")
    pairs = read_pair_file(scene / "pair.txt")
    ref = next(iter(pairs)) if ref_view is None else ref_view
    if ref not in pairs:
        raise InvalidArgument(f"{scene}/pair.txt", "reference view not listed", observed=ref, expected=f"one of {sorted(pairs)[:10]}",
                              fix="pick a view id that pair.txt lists")
    sources = [view for view, _ in pairs[ref]][: num_views - 1]
    if len(sources) < num_views - 1:
        raise InvalidArgument(f"{scene}/pair.txt", "too few source views for the reference", observed=len(sources),
                              expected=f"{num_views - 1} for {num_views} views",
                              fix="pick a case with fewer views (--cases / --harness-cases small or seed: 3 views) or a "
                              "scene whose pair.txt lists enough source views")
    ids = (ref, *sources)
    images, cams, files = [], [], []
    for view in ids:
        files.append(find_image(scene, view))
        images.append(read_image(files[-1]))
        cams.append(read_cam_file(view_file(scene, "cams", view, "_cam.txt")))
    shapes = {img.shape for img in images}
    if len(shapes) != 1:
        reference_shape = images[0].shape
        odd = [f"{path.name} {img.shape[0]}x{img.shape[1]}" for path, img in zip(files, images)
               if img.shape != reference_shape]
        raise DataFormatError(str(scene / "images"), "images differ in size",
                              observed=f"{', '.join(odd)} vs the reference view {files[0].name} "
                              f"{reference_shape[0]}x{reference_shape[1]}", expected="one size for all views",
                              fix="resize the images (and scale the intrinsics) to a common size")
    depth = mask = None
    depth_file = view_file(scene, "depths", ref, ".pfm")
    if depth_file.is_file():
        depth = torch.from_numpy(read_pfm(depth_file))
        quarter = (images[0].shape[0] // 4, images[0].shape[1] // 4)
        if tuple(depth.shape) != quarter:
            raise DataFormatError(str(depth_file), "ground-truth depth has the wrong size", observed=tuple(depth.shape),
                                  expected=f"1/4 of the images: {quarter}", fix="store depth at feature resolution (H/4 x W/4)")
        mask_file = view_file(scene, "masks", ref, ".png")
        if mask_file.is_file():
            mask = torch.from_numpy(read_image(mask_file)[:, :, 0] > 0.5)
            if mask.shape != depth.shape:
                raise DataFormatError(str(mask_file), "mask size differs from the depth map", observed=tuple(mask.shape),
                                      expected=f"{tuple(depth.shape)} like {depth_file.name}", fix="write the mask at depth resolution")
        else:
            mask = depth > 0
    ref_cam: Camera = cams[0]
    views = Views(
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        intrinsics=torch.from_numpy(np.stack([c.intrinsics for c in cams])),
        extrinsics=torch.from_numpy(np.stack([c.extrinsics for c in cams])),
        depth_min=ref_cam.depth_min,
        depth_interval=ref_cam.depth_interval,
        view_ids=ids,
        depth=depth,
        mask=mask,
        source=str(scene),
    )
    return views
