"""DTU-format scene folders as preprocessed for MVSNet.

Layout::

    <scene>/pair.txt                      viewpoint count, then per view: id, then
                                          "count id score id score ..." (best first)
    <scene>/cams/NNNNNNNN_cam.txt         extrinsic (4x4), intrinsic (3x3, full image),
                                          "depth_min depth_interval [more numbers]"
    <scene>/images/NNNNNNNN.jpg           RGB images (.png accepted too)
    <scene>/depths/NNNNNNNN.pfm           optional ground-truth depth at 1/4 resolution
    <scene>/masks/NNNNNNNN.png            optional validity mask for that depth

Readers raise ``DataFormatError`` with the file and line for anything malformed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import DataFormatError, MissingFile
from harness.fileio import atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class Camera:
    """One view's calibration. ``intrinsics`` are for the full image (not divided by 4)."""

    intrinsics: np.ndarray  # [3, 3] float64
    extrinsics: np.ndarray  # [4, 4] float64, world -> camera
    depth_min: float
    depth_interval: float
    extra: tuple[float, ...] = ()  # e.g. "num_depth depth_max" on some DTU files


def _cam_error(path: Path, line: int | None, problem: str, observed: object, expected: str) -> DataFormatError:
    where = f"{path}:{line + 1}" if line is not None else str(path)
    return DataFormatError(
        where, problem, observed=observed, expected=expected,
        fix="compare the file with the MVSNet cam format: 'extrinsic', 4 rows, blank, 'intrinsic', 3 rows, blank, 'depth_min depth_interval'",
    )


def _numbers(path: Path, lines: list[str], index: int, count: int | None, what: str) -> list[float]:
    if index >= len(lines):
        raise _cam_error(path, None, f"file ends before the {what}", f"{len(lines)} lines", f"at least {index + 1} lines")
    fields = lines[index].split()
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise _cam_error(path, index, f"non-numeric {what}", lines[index][:80], "numbers separated by spaces") from None
    if count is not None and len(values) != count:
        raise _cam_error(path, index, f"wrong number of values in the {what}", len(values), f"{count} numbers")
    if not all(math.isfinite(v) for v in values):
        raise _cam_error(path, index, f"non-finite {what}", lines[index][:80], "finite numbers")
    return values


def parse_cam_text(text: str, path: Path = Path("<cam>")) -> Camera:
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0].lower() != "extrinsic":
        raise _cam_error(path, 0, "first line is not 'extrinsic'", (lines[0][:40] if lines else ""), "'extrinsic'")
    extrinsics = np.array([_numbers(path, lines, 1 + r, 4, f"extrinsic row {r}") for r in range(4)])
    if len(lines) <= 6 or lines[6].lower() != "intrinsic":
        raise _cam_error(path, 6, "line 7 is not 'intrinsic'", (lines[6][:40] if len(lines) > 6 else "missing"), "'intrinsic'")
    intrinsics = np.array([_numbers(path, lines, 7 + r, 3, f"intrinsic row {r}") for r in range(3)])
    depth = _numbers(path, lines, 11, None, "depth line")
    if len(depth) < 2:
        raise _cam_error(path, 11, "depth line needs depth_min and depth_interval", len(depth), "at least 2 numbers")
    if depth[1] == 0:
        raise _cam_error(path, 11, "depth_interval is zero", depth[1], "a non-zero step (scene units, mm on DTU)")
    if not np.allclose(extrinsics[3], [0, 0, 0, 1]):
        raise _cam_error(path, 4, "extrinsic last row is not 0 0 0 1", extrinsics[3].tolist(), "0 0 0 1")
    if not np.allclose(intrinsics[2], [0, 0, 1]):
        raise _cam_error(path, 9, "intrinsic last row is not 0 0 1", intrinsics[2].tolist(), "0 0 1")
    # a camera must be invertible: the plane sweep maps reference pixels through P_ref^-1
    if not abs(intrinsics[0, 0] * intrinsics[1, 1]) > 0:
        raise _cam_error(path, 7, "intrinsic matrix is singular", f"fx={intrinsics[0, 0]:g}, fy={intrinsics[1, 1]:g}",
                         "non-zero focal lengths fx and fy")
    if not np.linalg.cond(extrinsics[:3, :3]) < 1e6:
        raise _cam_error(path, 1, "extrinsic rotation is singular", f"condition number {np.linalg.cond(extrinsics[:3, :3]):.3g}",
                         "a rotation matrix (orthonormal rows)")
    return Camera(intrinsics, extrinsics, depth[0], depth[1], tuple(depth[2:]))


def read_cam_file(path: str | Path) -> Camera:
    path = Path(path)
    if not path.is_file():
        raise MissingFile(str(path), "camera file not found", observed="no such file", expected="cams/NNNNNNNN_cam.txt", fix="check the scene folder")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _cam_error(path, None, "not a text file", f"byte {exc.start}", "UTF-8/ASCII text") from None
    return parse_cam_text(text, path)


def format_cam(camera: Camera) -> str:
    rows = ["extrinsic"]
    rows += [" ".join(f"{v:.10g}" for v in row) for row in camera.extrinsics]
    rows += ["", "intrinsic"]
    rows += [" ".join(f"{v:.10g}" for v in row) for row in camera.intrinsics]
    rows += ["", " ".join(f"{v:.10g}" for v in (camera.depth_min, camera.depth_interval, *camera.extra))]
    return "\n".join(rows) + "\n"


def write_cam_file(path: str | Path, camera: Camera) -> Path:
    return atomic_write_text(Path(path), format_cam(camera))


def parse_pair_text(text: str, path: Path = Path("pair.txt")) -> dict[int, list[tuple[int, float]]]:
    """``{reference id: [(source id, score), ...]}`` in file order (best first)."""

    def bad(line: int | None, problem: str, observed: object, expected: str) -> DataFormatError:
        where = f"{path}:{line + 1}" if line is not None else str(path)
        return DataFormatError(where, problem, observed=observed, expected=expected,
                               fix="pair.txt: count line, then per view an id line and a 'n id score ...' line")

    # (file line index, text) of the non-empty lines, so errors name the line in the file
    numbered = [(i, line.strip()) for i, line in enumerate(text.splitlines()) if line.strip()]
    lines = [line for _, line in numbered]

    def at(k: int) -> int:
        return numbered[k][0]

    if not lines:
        raise bad(None, "empty pair file", "0 lines", "a viewpoint count on the first line")
    try:
        count = int(lines[0])
    except ValueError:
        raise bad(at(0), "viewpoint count is not an integer", lines[0][:40], "an integer") from None
    if count < 1 or count > 100_000:
        raise bad(at(0), "implausible viewpoint count", count, "1..100000")
    if len(lines) < 1 + 2 * count:
        raise bad(None, "file ends early", f"{len(lines)} non-empty lines", f"{1 + 2 * count} for {count} viewpoints")
    pairs: dict[int, list[tuple[int, float]]] = {}
    for k in range(count):
        ref_line, src_line = 1 + 2 * k, 2 + 2 * k
        try:
            ref = int(lines[ref_line])
        except ValueError:
            raise bad(at(ref_line), "reference id is not an integer", lines[ref_line][:40], "an integer") from None
        if ref < 0:
            raise bad(at(ref_line), "negative view id", ref, "ids >= 0")
        fields = lines[src_line].split()
        try:
            n = int(fields[0])
            ids = [int(x) for x in fields[1::2]]
            scores = [float(x) for x in fields[2::2]]
        except (ValueError, IndexError):
            raise bad(at(src_line), "malformed source list", lines[src_line][:60], "'n id score id score ...'") from None
        if n < 0 or len(ids) != n or len(scores) != n:
            raise bad(at(src_line), "source count disagrees with the list", f"n={n}, {len(ids)} ids, {len(scores)} scores",
                      "n pairs of 'id score'")
        if ref in pairs:
            raise bad(at(ref_line), "reference id listed twice", ref, "each viewpoint once")
        if ids and min(ids) < 0:
            raise bad(at(src_line), "negative view id", min(ids), "ids >= 0")
        pairs[ref] = list(zip(ids, scores))
    return pairs


def read_pair_file(path: str | Path) -> dict[int, list[tuple[int, float]]]:
    path = Path(path)
    if not path.is_file():
        raise MissingFile(str(path), "pair file not found", observed="no such file", expected="<scene>/pair.txt", fix="check the scene folder")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(str(path), "not a text file", observed=f"byte {exc.start}", expected="UTF-8/ASCII text", fix="check the file") from None
    return parse_pair_text(text, path)


def format_pair(pairs: dict[int, list[tuple[int, float]]]) -> str:
    rows = [str(len(pairs))]
    for ref, sources in pairs.items():
        rows.append(str(ref))
        rows.append(" ".join([str(len(sources))] + [f"{i} {s:g}" for i, s in sources]))
    return "\n".join(rows) + "\n"


def write_pair_file(path: str | Path, pairs: dict[int, list[tuple[int, float]]]) -> Path:
    return atomic_write_text(Path(path), format_pair(pairs))


def read_image(path: str | Path) -> np.ndarray:
    """``[H, W, 3]`` float32 in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MissingFile(str(path), "image not found", observed="no such file", expected="images/NNNNNNNN.jpg", fix="check the scene folder")
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise DataFormatError(str(path), "unreadable image", observed=f"{type(exc).__name__}: {exc}", expected="a JPEG or PNG file",
                              fix="re-encode the image") from None
    return array


def write_image(path: str | Path, image: np.ndarray, quality: int = 95) -> Path:
    """Write ``[H, W, 3]`` float in [0, 1] as JPEG (by suffix .jpg) or PNG, atomically."""
    from PIL import Image

    path = Path(path)
    data = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    if path.suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(data).save(buffer, format="JPEG", quality=quality, subsampling=0)
    else:
        Image.fromarray(data).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def view_file(scene: Path, folder: str, view: int, suffix: str) -> Path:
    return Path(scene) / folder / f"{view:08d}{suffix}"


def find_image(scene: Path, view: int) -> Path:
    for suffix in (".jpg", ".jpeg", ".png"):
        candidate = view_file(scene, "images", view, suffix)
        if candidate.is_file():
            return candidate
    raise MissingFile(str(view_file(scene, "images", view, ".jpg")), "image not found", observed="no .jpg/.jpeg/.png",
                      expected=f"images/{view:08d}.jpg", fix="check the scene folder and pair.txt's view ids")
