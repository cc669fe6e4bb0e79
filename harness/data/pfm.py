"""PFM depth maps: ``Pf`` (1 channel) or ``PF`` (3 channels), rows stored bottom-up.

The scale line's sign gives the byte order (negative: little-endian). Malformed files raise
``DataFormatError`` naming the file and the header field; nothing else escapes the reader.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from harness.errors import DataFormatError, MissingFile
from harness.fileio import atomic_write_bytes

_DIMS = re.compile(rb"^(\d{1,9})\s+(\d{1,9})\s*$")
_MAX_SIDE = 1 << 16


def _bad(path: Path, problem: str, observed: object, expected: str) -> DataFormatError:
    return DataFormatError(
        str(path), problem, observed=observed, expected=expected,
        fix="re-export the depth map with harness.data.write_pfm or check that the file is complete",
    )


def read_pfm(path: str | Path) -> np.ndarray:
    """``[H, W]`` (or ``[H, W, 3]``) float32, top row first."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(str(path), "PFM file not found", observed="no such file", expected="an existing .pfm file", fix="check the path")
    data = path.read_bytes()
    stream = io.BytesIO(data)
    header = stream.readline().rstrip()
    if header not in (b"PF", b"Pf"):
        raise _bad(path, "not a PFM file", header[:16], "first line 'Pf' (grey) or 'PF' (colour)")
    channels = 3 if header == b"PF" else 1
    dims = _DIMS.match(stream.readline())
    if not dims:
        raise _bad(path, "malformed size line", "unparsable", "'<width> <height>'")
    width, height = int(dims.group(1)), int(dims.group(2))
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        raise _bad(path, "implausible size", f"{width}x{height}", f"1..{_MAX_SIDE} pixels a side")
    scale_line = stream.readline().strip()
    try:
        scale = float(scale_line)
    except ValueError:
        raise _bad(path, "malformed scale line", scale_line[:32], "a non-zero number") from None
    if scale == 0 or not np.isfinite(scale):
        raise _bad(path, "malformed scale line", scale, "a finite non-zero number (sign = byte order)")
    dtype = np.dtype("<f4" if scale < 0 else ">f4")
    count = width * height * channels
    payload = data[stream.tell():]
    if len(payload) < count * 4:
        raise _bad(path, "truncated pixel data", f"{len(payload)} bytes", f"{count * 4} bytes for {width}x{height}x{channels}")
    array = np.frombuffer(payload, dtype=dtype, count=count).astype(np.float32)
    shape = (height, width, 3) if channels == 3 else (height, width)
    return np.ascontiguousarray(np.flipud(array.reshape(shape)))


def write_pfm(path: str | Path, image: np.ndarray) -> Path:
    """Write ``[H, W]`` or ``[H, W, 3]`` float32 as little-endian PFM, atomically."""
    image = np.asarray(image)
    if image.dtype != np.float32:
        raise DataFormatError(str(path), "PFM data must be float32", observed=str(image.dtype), expected="float32", fix="cast with .astype(np.float32)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise DataFormatError(str(path), "PFM data has the wrong shape", observed=image.shape, expected="[H, W] or [H, W, 3]", fix="pass one depth map")
    header = b"PF\n" if image.ndim == 3 else b"Pf\n"
    height, width = image.shape[:2]
    body = np.flipud(image).astype("<f4").tobytes()
    return atomic_write_bytes(Path(path), header + f"{width} {height}\n-1.000000\n".encode() + body)
