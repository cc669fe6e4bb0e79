"""What a serialized TensorRT engine (plan file) says about itself, read without deserialising it.

Layout (only what is confirmed in public code): NVIDIA/TensorRT ``samples/common/sampleEngines.cpp``,
``printPlanVersion()`` (what ``trtexec --getPlanVersionOnly --loadEngine=FILE`` runs) reads the
first 28 bytes of the plan:

* bytes 0-3, a little-endian uint32: the plan tag ``0x74727466`` (the bytes ``f t r t``);
* bytes 4-7, a uint32: the serialization version; trtexec knows only ``0``, and for it:
* bytes 24-27: the TensorRT version that built the plan, one byte each: major, minor, patch, build.

Bytes 8-23, the hardware-compatibility level, version compatibility and the optimisation
profile's shapes are **not** at any confirmed place in the header, so they are not read here: the
header facts say so (``unconfirmed``), and those properties are taken from the deserialised engine
when a TensorRT that can run it is present. By default TensorRT loads a plan only with the
TensorRT version that built it (and on the same GPU model); a plan built version-compatible is
the exception, which the header does not tell (not confirmed), so a refusal says so.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ArtifactError, MissingFile

PLAN_TAG = 0x74727466
HEADER_BYTES = 28
VERSION_OFFSET = 24
KNOWN_SERIALIZATION = (0,)
UNCONFIRMED = ("hardware_compatibility", "version_compatible", "profile_shapes")


@dataclass(frozen=True)
class PlanHeader:
    path: str
    size_bytes: int
    serialization: int
    trt_version: tuple[int, int, int, int]

    @property
    def version_text(self) -> str:
        return ".".join(str(v) for v in self.trt_version)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size_bytes": self.size_bytes, "serialization": self.serialization,
                "built_with_tensorrt": self.version_text,
                "unconfirmed": {k: "not in the confirmed header layout; read from the deserialised engine"
                                for k in UNCONFIRMED}}


def parse_plan_header(data: bytes, source: str = "plan") -> PlanHeader:
    """Parse the first bytes of a plan; raise ``ArtifactError`` for anything but a TensorRT plan
    whose serialization version is known."""
    if len(data) < HEADER_BYTES:
        raise ArtifactError(source, "too short for a TensorRT plan", observed=f"{len(data)} bytes",
                            expected=f"at least {HEADER_BYTES} bytes (a serialized engine)",
                            fix="pass the file trtexec --saveEngine wrote")
    tag, serialization = struct.unpack_from("<II", data, 0)
    if tag != PLAN_TAG:
        raise ArtifactError(source, "not a TensorRT plan", observed=f"first bytes {data[:4].hex()}",
                            expected=f"the plan tag {struct.pack('<I', PLAN_TAG).hex()} ('ftrt')",
                            fix="pass the serialized engine (trtexec --saveEngine), not an ONNX or timing-cache file")
    if serialization not in KNOWN_SERIALIZATION:
        raise ArtifactError(source, "unknown plan serialization version", observed=serialization,
                            expected=f"{', '.join(map(str, KNOWN_SERIALIZATION))} (what trtexec --getPlanVersionOnly reads)",
                            fix="check the plan with the trtexec of the TensorRT that built it")
    version = tuple(data[VERSION_OFFSET:VERSION_OFFSET + 4])
    return PlanHeader(source, len(data), serialization, (version[0], version[1], version[2], version[3]))


def read_plan_header(path: str | Path) -> PlanHeader:
    path = Path(path)
    if not path.is_file():
        raise MissingFile(str(path), "engine file not found", observed="no such file", expected="a serialized TensorRT engine",
                          fix="pass the file trtexec --saveEngine wrote")
    with path.open("rb") as handle:
        head = handle.read(HEADER_BYTES)
    header = parse_plan_header(head, str(path))
    return PlanHeader(header.path, path.stat().st_size, header.serialization, header.trt_version)


def require_runtime_match(header: PlanHeader, runtime_label: str, runtime_version: str) -> None:
    """Refuse a plan built by another TensorRT version than ``runtime_version`` before any
    deserialisation (TensorRT's default: same version only)."""
    try:
        wanted = tuple(int(p) for p in runtime_version.split(".")[:3])
    except ValueError:
        return  # an unparseable runtime version: let deserialisation decide
    if header.trt_version[:len(wanted)] != wanted:
        raise ArtifactError(
            header.path, "engine built by another TensorRT version",
            observed=f"built by TensorRT {header.version_text}, this runtime is {runtime_label}",
            expected="the TensorRT version that built it (a plan loads only there, unless built version-compatible, "
            "which the header does not say)",
            fix=f"rebuild it here (trtexec --onnx=<your.onnx> --saveEngine={Path(header.path).name}) or install "
            f"TensorRT {'.'.join(map(str, header.trt_version[:3]))}",
        )
