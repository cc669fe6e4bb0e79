"""Unit tests of harness/convert/plan_header.py on synthetic plan headers (the layout trtexec's
--getPlanVersionOnly reads: tag, serialization version, TensorRT version in bytes 24-27)."""

from __future__ import annotations

import struct

import pytest

from harness.convert.plan_header import (
    PLAN_TAG,
    parse_plan_header,
    read_plan_header,
    require_runtime_match,
)
from harness.errors import ArtifactError, MissingFile


def plan(version=(10, 3, 0, 26), serialization=0, tag=PLAN_TAG, tail=b"\x00" * 64) -> bytes:
    return struct.pack("<II", tag, serialization) + b"\x11" * 16 + bytes(version) + tail


def test_version_is_read_from_bytes_24_to_27(tmp_path):
    path = tmp_path / "mvsnet.trt"
    path.write_bytes(plan((10, 13, 3, 9)))
    header = read_plan_header(path)
    assert header.trt_version == (10, 13, 3, 9) and header.version_text == "10.13.3.9"
    assert header.size_bytes == 28 + 64 and header.serialization == 0
    facts = header.as_dict()
    assert facts["built_with_tensorrt"] == "10.13.3.9"
    assert set(facts["unconfirmed"]) == {"hardware_compatibility", "version_compatible", "profile_shapes"}


def test_the_tag_is_the_bytes_ftrt():
    assert struct.pack("<I", PLAN_TAG) == b"ftrt"


def test_foreign_truncated_and_unknown_serialization_files_are_refused(tmp_path):
    with pytest.raises(ArtifactError, match="not a TensorRT plan.*0801"):
        parse_plan_header(b"\x08\x01" + b"\x00" * 40, "model.onnx")  # an ONNX protobuf starts like this
    with pytest.raises(ArtifactError, match="too short.*10 bytes"):
        parse_plan_header(plan()[:10])
    with pytest.raises(ArtifactError, match="unknown plan serialization version: 7"):
        parse_plan_header(plan(serialization=7))
    with pytest.raises(MissingFile):
        read_plan_header(tmp_path / "absent.trt")


def test_a_plan_from_another_tensorrt_is_refused_before_deserialising():
    header = parse_plan_header(plan((10, 3, 0, 26)), "mvsnet.trt")
    require_runtime_match(header, "tensorrt 10.3.0", "10.3.0")  # the same version: fine
    with pytest.raises(ArtifactError) as info:
        require_runtime_match(header, "tensorrt 10.13.3", "10.13.3")
    text = str(info.value)
    assert "built by TensorRT 10.3.0.26, this runtime is tensorrt 10.13.3" in text
    assert "version-compatible" in text and "trtexec --onnx" in text
