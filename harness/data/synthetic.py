"""Synthetic multi-view scenes with exact ground truth.

A scene is a set of textured planes: one slanted background plane and a few slanted rectangles
in front of it, seen by N calibrated pinhole cameras in a DTU-like rig (about 650 mm from the
scene, intrinsics of DTU's 1600x1200 cameras scaled to the image size, depths 425-935 mm).
Images are rendered by analytic ray-plane intersection; textures are defined on the plane
surfaces (multi-octave value noise), so every view sees the same surface point with the same
colour. The reference view's ground-truth depth is rendered the same way at feature resolution
(1/4, the intrinsics' first two rows divided by 4), with a validity mask.

Everything is drawn from one ``torch.Generator`` seeded by ``seed``, so a scene is a pure
function of its ``SceneSpec``; rendering runs on any torch device. The options added for the scene
families (``harness.data.families``: rig kinds, tilt and occluder ranges, texture styles, sensor
noise) leave every spec that keeps their defaults rendering exactly as before: a range changes only
the bounds of a draw, and whatever an option draws on top comes from a generator of its own
(tests/data/test_generator_unchanged.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch.nn import functional as F

from harness.errors import InvalidArgument
from harness.model.inputs import check_image_size

#: DTU's preprocessed camera (1600x1200): fx, fy, cx, cy.
DTU_INTRINSICS = (2892.33, 2883.18, 823.205, 619.071)
DTU_SIZE = (1200, 1600)  # H, W
DTU_DEPTH_MIN = 425.0
DTU_DEPTH_INTERVAL = 2.5
#: "ring": sources toed in on a ring around the reference; "line": parallel cameras on a horizontal
#: line; "ring-parallel": the ring's camera centres with the reference's optical axis;
#: "line-toe-in": the line's centres, every camera aimed at the rig's look-at point.
RIGS = ("ring", "line", "ring-parallel", "line-toe-in")
#: "blobs": value noise through a steep contrast curve (crisp-edged blobs); "smooth": the same noise
#: with a linear contrast (soft gradients); "cells": the noise posterised into four flat levels.
TEXTURES = ("blobs", "smooth", "cells")


@dataclass(frozen=True)
class SceneSpec:
    """Everything that decides a synthetic scene. Lengths in mm, angles in degrees."""

    seed: int = 0
    num_views: int = 5
    height: int = 512
    width: int = 640
    num_rectangles: int = 4
    distance: float = 650.0  # rig radius: camera centre to look-at point
    view_spread_deg: tuple[float, float] = (6.0, 12.0)  # source views' angle from the reference
    depth_min: float = DTU_DEPTH_MIN
    depth_interval: float = DTU_DEPTH_INTERVAL
    photometric_jitter: float = 0.0  # per-view gain/offset spread (0 = identical exposure)
    supersample: int = 2
    rig: str = "ring"  # one of RIGS
    textureless: float = 0.0  # chance that a plane is one flat colour (no texture to match)
    texture_scale: float = 1.0  # multiplies the texture's cell sizes (larger: coarser blobs)
    texture: str = "blobs"  # one of TEXTURES
    tilt_deg: tuple[float, float] = (20.0, 50.0)  # largest tilt of the background, of the rectangles
    rectangle_depth: tuple[float, float] = (520.0, 780.0)  # rectangles' centre depth range (mm, reference camera)
    rectangle_size: tuple[float, float] = (0.08, 0.2)  # rectangles' half-extent range, fraction of the image footprint
    roll_deg: float = 4.0  # largest roll of a toed-in camera about its optical axis
    noise: float = 0.0  # largest per-view sensor noise (Gaussian standard deviation, image units)

    def __post_init__(self) -> None:
        if self.num_views < 2:
            raise InvalidArgument("SceneSpec.num_views", "too few views", observed=self.num_views, expected=">= 2", fix="use 3 or 5 views")
        check_image_size(self.height, self.width, "SceneSpec")
        if not 0 <= self.num_rectangles <= 16:
            raise InvalidArgument("SceneSpec.num_rectangles", "out of range", observed=self.num_rectangles, expected="0..16")
        if self.rig not in RIGS:
            raise InvalidArgument("SceneSpec.rig", "unknown rig", observed=self.rig, expected=" or ".join(RIGS))
        if not 0.0 <= self.textureless <= 1.0 or self.texture_scale <= 0:
            raise InvalidArgument("SceneSpec", "textureless must be a chance in [0, 1] and texture_scale > 0",
                                  observed=(self.textureless, self.texture_scale), expected="e.g. 0.3 and 1.0")
        if self.texture not in TEXTURES:
            raise InvalidArgument("SceneSpec.texture", "unknown texture style", observed=self.texture,
                                  expected=" or ".join(TEXTURES))
        if len(self.tilt_deg) != 2 or not all(0.0 <= t < 90.0 for t in self.tilt_deg):
            raise InvalidArgument("SceneSpec.tilt_deg", "tilts must be two angles in [0, 90) degrees",
                                  observed=self.tilt_deg, expected="(background, rectangles), e.g. (20.0, 50.0)")
        near, far = self.rectangle_depth
        if not self.depth_min <= near <= far:
            raise InvalidArgument("SceneSpec.rectangle_depth", "the rectangles' depth range must be ordered and "
                                  "start inside the depth range", observed=self.rectangle_depth,
                                  expected=f"(near, far) with {self.depth_min} <= near <= far, e.g. (520.0, 780.0)")
        small, large = self.rectangle_size
        if not 0.0 < small <= large <= 1.0:
            raise InvalidArgument("SceneSpec.rectangle_size", "half-extents must be ordered fractions in (0, 1]",
                                  observed=self.rectangle_size, expected="(smallest, largest), e.g. (0.08, 0.2)")
        if not 0.0 <= self.roll_deg <= 45.0 or not 0.0 <= self.noise <= 0.5:
            raise InvalidArgument("SceneSpec", "roll_deg must be in [0, 45] and noise in [0, 0.5]",
                                  observed=(self.roll_deg, self.noise), expected="e.g. 4.0 and 0.02")


@dataclass
class Scene:
    """A rendered scene. Tensors on the device they were rendered on."""

    spec: SceneSpec
    images: torch.Tensor  # [N, 3, H, W] float32 in [0, 1]
    intrinsics: torch.Tensor  # [N, 3, 3] float64, full image resolution
    extrinsics: torch.Tensor  # [N, 4, 4] float64, world -> camera
    depth: torch.Tensor  # [H/4, W/4] float32, reference view z-depth (0 where invalid)
    mask: torch.Tensor  # [H/4, W/4] bool: a surface is hit inside the depth range
    pairs: dict[int, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def depth_min(self) -> float:
        return self.spec.depth_min

    @property
    def depth_interval(self) -> float:
        return self.spec.depth_interval


@dataclass(frozen=True)
class _Plane:
    origin: torch.Tensor  # [3] world
    normal: torch.Tensor  # [3]
    axis_u: torch.Tensor  # [3] in-plane
    axis_v: torch.Tensor  # [3]
    half_extent: tuple[float, float] | None  # None: unbounded
    textures: tuple[torch.Tensor, ...]  # per octave [1, 3, L, L]
    texture_span: float  # mm covered by the texture lattice (centred on origin)
    base_colour: torch.Tensor  # [3]


def intrinsics_for(height: int, width: int) -> torch.Tensor:
    """DTU's intrinsics scaled to an image of ``height x width`` pixels, ``[3, 3]`` float64."""
    fx, fy, cx, cy = DTU_INTRINSICS
    sx, sy = width / DTU_SIZE[1], height / DTU_SIZE[0]
    return torch.tensor([[fx * sx, 0, cx * sx], [0, fy * sy, cy * sy], [0, 0, 1]], dtype=torch.float64)


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.norm(v)


def _look_at(centre: torch.Tensor, target: torch.Tensor, roll: float) -> torch.Tensor:
    """World->camera 4x4 for a camera at ``centre`` looking at ``target`` (x right, y down)."""
    z = _unit(target - centre)
    down = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    x = _unit(torch.linalg.cross(down, z))
    y = torch.linalg.cross(z, x)
    c, s = math.cos(roll), math.sin(roll)
    x, y = c * x + s * y, -s * x + c * y
    rot = torch.stack([x, y, z])
    ext = torch.eye(4, dtype=torch.float64)
    ext[:3, :3] = rot
    ext[:3, 3] = -rot @ centre
    return ext


def _rig(spec: SceneSpec, gen: torch.Generator) -> torch.Tensor:
    """``[N, 4, 4]`` extrinsics; view 0 is the reference, sources on a ring around it."""
    target = torch.tensor([_uniform(gen, -40, 40), _uniform(gen, -40, 40), 0.0], dtype=torch.float64)
    views: list[tuple[float, float]] = []
    phase = _uniform(gen, 0, 2 * math.pi)
    for i in range(spec.num_views):
        if i == 0:
            azim, elev = _uniform(gen, -5, 5), _uniform(gen, -5, 5)
        else:
            angle = phase + 2 * math.pi * (i - 1) / (spec.num_views - 1) + _uniform(gen, -0.3, 0.3)
            spread = _uniform(gen, *spec.view_spread_deg)
            azim = views[0][0] + spread * math.cos(angle)
            elev = views[0][1] + spread * math.sin(angle)
        views.append((azim, elev))
    extrinsics = []
    if spec.rig in ("line", "line-toe-in"):
        # cameras on a horizontal line through the reference (baseline from the spread): parallel,
        # or each aimed at the look-at point
        a, e = math.radians(views[0][0]), math.radians(views[0][1])
        direction = torch.tensor([math.sin(a) * math.cos(e), math.sin(e), -math.cos(a) * math.cos(e)], dtype=torch.float64)
        ref_centre = target + spec.distance * direction
        right = _unit(torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), -direction))
        step = spec.distance * math.tan(math.radians(spec.view_spread_deg[0]))
        for i in range(spec.num_views):
            offset = 0.0 if i == 0 else step * ((i + 1) // 2) * (1 if i % 2 else -1)
            centre = ref_centre + offset * right
            aim = target if spec.rig == "line-toe-in" else centre - spec.distance * direction
            extrinsics.append(_look_at(centre, aim, 0.0))
        return torch.stack(extrinsics)
    if spec.rig == "ring-parallel":
        a, e = math.radians(views[0][0]), math.radians(views[0][1])
        axis = -torch.tensor([math.sin(a) * math.cos(e), math.sin(e), -math.cos(a) * math.cos(e)], dtype=torch.float64)
        for azim, elev in views:
            a, e = math.radians(azim), math.radians(elev)
            direction = torch.tensor([math.sin(a) * math.cos(e), math.sin(e), -math.cos(a) * math.cos(e)], dtype=torch.float64)
            centre = target + spec.distance * direction
            extrinsics.append(_look_at(centre, centre + spec.distance * axis, 0.0))
        return torch.stack(extrinsics)
    for azim, elev in views:
        a, e = math.radians(azim), math.radians(elev)
        direction = torch.tensor([math.sin(a) * math.cos(e), math.sin(e), -math.cos(a) * math.cos(e)], dtype=torch.float64)
        centre = target + spec.distance * direction
        aim = target + torch.tensor([_uniform(gen, -15, 15), _uniform(gen, -15, 15), 0.0], dtype=torch.float64)
        extrinsics.append(_look_at(centre, aim, math.radians(_uniform(gen, -spec.roll_deg, spec.roll_deg))))
    return torch.stack(extrinsics)


def _texture(gen: torch.Generator, span: float, cell_sizes: tuple[float, ...]) -> tuple[torch.Tensor, ...]:
    octaves = []
    for cell in cell_sizes:
        n = max(4, min(1024, int(math.ceil(span / cell)) + 3))
        octaves.append(torch.rand((1, 3, n, n), generator=gen, dtype=torch.float32))
    return tuple(octaves)


def _planes(spec: SceneSpec, gen: torch.Generator, k_ref: torch.Tensor, ext_ref: torch.Tensor) -> list[_Plane]:
    """Planes drawn in the reference camera frame, returned in world coordinates."""
    cam_to_world = torch.linalg.inv(ext_ref)
    rot, centre = cam_to_world[:3, :3], cam_to_world[:3, 3]
    fx, cx, cy = float(k_ref[0, 0]), float(k_ref[0, 2]), float(k_ref[1, 2])
    planes = []
    extra = torch.Generator().manual_seed(spec.seed + 7919)  # draws for the options below only

    def tilted(max_deg: float) -> torch.Tensor:
        theta, phi = math.radians(_uniform(gen, 0, max_deg)), _uniform(gen, 0, 2 * math.pi)
        return torch.tensor([math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), -math.cos(theta)],
                            dtype=torch.float64)

    def make(origin_cam: torch.Tensor, normal_cam: torch.Tensor, half: tuple[float, float] | None, span: float) -> _Plane:
        helper = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        if abs(float(normal_cam @ helper)) > 0.9:
            helper = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
        u = _unit(torch.linalg.cross(normal_cam, helper))
        v = torch.linalg.cross(normal_cam, u)
        spin = _uniform(gen, 0, 2 * math.pi)
        u, v = math.cos(spin) * u + math.sin(spin) * v, -math.sin(spin) * u + math.cos(spin) * v
        cells = tuple(spec.texture_scale * c for c in
                      (_uniform(gen, 3.0, 5.0), _uniform(gen, 8.0, 14.0), _uniform(gen, 24.0, 48.0)))
        textures = _texture(gen, span, cells)
        if spec.textureless > 0 and _uniform(extra, 0, 1) < spec.textureless:
            textures = tuple(torch.full_like(t, 0.5) for t in textures)  # one flat colour: nothing to match
        return _Plane(
            origin=rot @ origin_cam + centre, normal=rot @ normal_cam, axis_u=rot @ u, axis_v=rot @ v,
            half_extent=half, textures=textures, texture_span=span,
            base_colour=torch.rand(3, generator=gen, dtype=torch.float32),
        )

    z_bg = _uniform(gen, 820.0, 880.0)
    planes.append(make(torch.tensor([0.0, 0.0, z_bg], dtype=torch.float64), tilted(spec.tilt_deg[0]), None,
                       span=2.6 * z_bg * spec.width / fx))
    for _ in range(spec.num_rectangles):
        z = _uniform(gen, *spec.rectangle_depth)
        u_px, v_px = _uniform(gen, 0.15, 0.85) * spec.width, _uniform(gen, 0.15, 0.85) * spec.height
        origin = torch.tensor([(u_px - cx) / fx * z, (v_px - cy) / fx * z, z], dtype=torch.float64)
        footprint = z * spec.width / fx  # mm across the image at this depth
        half = (_uniform(gen, *spec.rectangle_size) * footprint, _uniform(gen, *spec.rectangle_size) * footprint)
        planes.append(make(origin, tilted(spec.tilt_deg[1]), half, span=2.2 * max(half)))
    return planes


def _intersect(planes: list[_Plane], centre: torch.Tensor, rays: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest hit along ``rays`` ([M, 3], camera z-component 1) -> (t [M], plane index [M], -1 = none)."""
    best_t = torch.full(rays.shape[:1], math.inf, dtype=rays.dtype, device=rays.device)
    best_i = torch.full(rays.shape[:1], -1, dtype=torch.long, device=rays.device)
    for index, plane in enumerate(planes):
        normal = plane.normal.to(rays)
        denom = rays @ normal
        t = ((plane.origin.to(rays) - centre) @ normal) / denom
        ok = (t > 0) & (denom.abs() > 1e-9)
        if plane.half_extent is not None:
            hit = centre + t.unsqueeze(1) * rays - plane.origin.to(rays)
            ok &= ((hit @ plane.axis_u.to(rays)).abs() <= plane.half_extent[0])
            ok &= ((hit @ plane.axis_v.to(rays)).abs() <= plane.half_extent[1])
        closer = ok & (t < best_t)
        best_t = torch.where(closer, t, best_t)
        best_i = torch.where(closer, torch.full_like(best_i, index), best_i)
    return best_t, best_i


def _shade(planes: list[_Plane], centre: torch.Tensor, rays: torch.Tensor, t: torch.Tensor, index: torch.Tensor,
           texture: str = "blobs") -> torch.Tensor:
    colour = torch.zeros((rays.shape[0], 3), dtype=torch.float32, device=rays.device)
    for k, plane in enumerate(planes):
        sel = index == k
        if not bool(sel.any()):
            continue
        hit = centre + t[sel].unsqueeze(1) * rays[sel] - plane.origin.to(rays)
        coords = torch.stack([hit @ plane.axis_u.to(rays), hit @ plane.axis_v.to(rays)], dim=1)
        grid = (coords / (plane.texture_span / 2)).to(torch.float32).view(1, 1, -1, 2)
        value = torch.zeros((3, grid.shape[2]), dtype=torch.float32, device=rays.device)
        for weight, lattice in zip((0.5, 0.3, 0.2), plane.textures):
            value += weight * F.grid_sample(lattice.to(rays.device), grid, mode="bicubic",
                                            padding_mode="reflection", align_corners=False)[0, :, 0]
        if texture == "smooth":  # soft gradients: a linear stretch of the noise
            contrast = ((value - 0.5) * 2.5 + 0.5).clamp(0, 1)
        elif texture == "cells":  # flat patches with sharp edges: the noise in four levels
            contrast = torch.floor(((value - 0.5) * 3.0 + 0.5).clamp(0, 0.999) * 4) / 3
        else:  # a steep contrast curve turns smooth noise into blobs with crisp edges (good to match)
            contrast = torch.sigmoid((value - 0.5) * 10.0)
        colour[sel] = (0.25 + 0.75 * plane.base_colour.to(rays.device)) * (0.2 + 0.8 * contrast.T)
    return colour


def _pixel_rays(k: torch.Tensor, ext: torch.Tensor, us: torch.Tensor, vs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixel coordinates; scaled so their camera z-component is 1."""
    k_inv = torch.linalg.inv(k).to(us)
    rot = ext[:3, :3].to(us)
    pix = torch.stack([us, vs, torch.ones_like(us)], dim=1)
    rays_cam = pix @ k_inv.T
    centre = (-rot.T @ ext[:3, 3].to(us))
    return centre, rays_cam @ rot


def render_scene(spec: SceneSpec, device: str | torch.device = "cpu") -> Scene:
    """Render ``spec`` (deterministic for a given seed)."""
    gen = torch.Generator().manual_seed(spec.seed)
    device = torch.device(device)
    k = intrinsics_for(spec.height, spec.width)
    extrinsics = _rig(spec, gen)
    planes = _planes(spec, gen, k, extrinsics[0])
    if device.type != "cpu":  # the texture lattices cross to the device once, not once per view
        planes = [replace(p, textures=tuple(t.to(device) for t in p.textures)) for p in planes]
    gains = [(1.0, 0.0)] + [
        (1.0 + spec.photometric_jitter * _uniform(gen, -1, 1), 0.5 * spec.photometric_jitter * _uniform(gen, -1, 1))
        for _ in range(spec.num_views - 1)
    ]

    h, w, s = spec.height, spec.width, spec.supersample
    offsets = (torch.arange(s, dtype=torch.float64, device=device) + 0.5) / s - 0.5
    ys = torch.arange(h, dtype=torch.float64, device=device)
    xs = torch.arange(w, dtype=torch.float64, device=device)
    vv = (ys.view(h, 1, 1, 1) + offsets.view(1, 1, s, 1)).expand(h, w, s, s).reshape(-1)
    uu = (xs.view(1, w, 1, 1) + offsets.view(1, 1, 1, s)).expand(h, w, s, s).reshape(-1)
    images = []
    for view in range(spec.num_views):
        centre, rays = _pixel_rays(k, extrinsics[view], uu, vv)
        t, index = _intersect(planes, centre, rays)
        colour = _shade(planes, centre, rays, t, index, spec.texture).view(h, w, s * s, 3).mean(dim=2)
        gain, offset = gains[view]
        image = colour * gain + offset
        if spec.noise > 0:  # per-view sensor noise, from a generator of its own (the scene's draws stay put)
            image = image + _sensor_noise(spec, view).to(image)
        images.append(image.clamp(0, 1).permute(2, 0, 1).contiguous())

    hq, wq = h // 4, w // 4
    yq, xq = torch.meshgrid(torch.arange(hq, dtype=torch.float64, device=device),
                            torch.arange(wq, dtype=torch.float64, device=device), indexing="ij")
    centre, rays = _pixel_rays(k, extrinsics[0], 4 * xq.reshape(-1), 4 * yq.reshape(-1))
    t, index = _intersect(planes, centre, rays)
    depth_max = spec.depth_min + spec.depth_interval * 1.06 * 191  # DTU's 192 hypotheses
    mask = (index >= 0) & (t >= spec.depth_min) & (t <= depth_max)
    depth = torch.where(mask, t, torch.zeros_like(t)).to(torch.float32).view(hq, wq)

    intrinsics = k.unsqueeze(0).repeat(spec.num_views, 1, 1)
    pairs = _pairs(extrinsics)
    return Scene(spec, torch.stack(images), intrinsics, extrinsics, depth, mask.view(hq, wq), pairs)


def _sensor_noise(spec: SceneSpec, view: int) -> torch.Tensor:
    """``[H, W, 3]`` Gaussian noise of view ``view``: its level drawn up to ``spec.noise``, the same on any device."""
    gen = torch.Generator().manual_seed(spec.seed * 1009 + 104_729 + view)
    sigma = spec.noise * _uniform(gen, 0.25, 1.0)
    return sigma * torch.randn((spec.height, spec.width, 3), generator=gen, dtype=torch.float32)


def _pairs(extrinsics: torch.Tensor) -> dict[int, list[tuple[int, float]]]:
    """Source views per reference, by the angle between optical axes (smaller is better)."""
    axes = extrinsics[:, 2, :3]
    pairs = {}
    for ref in range(len(axes)):
        scored = []
        for src in range(len(axes)):
            if src != ref:
                angle = math.degrees(math.acos(max(-1.0, min(1.0, float(axes[ref] @ axes[src])))))
                scored.append((src, round(100.0 / (1.0 + angle), 3)))
        pairs[ref] = sorted(scored, key=lambda p: -p[1])
    return pairs
