"""harness.data.pfm: PFM depth maps (``Pf``/``PF``, scale sign = byte order, rows bottom-up)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.data.pfm import read_pfm, write_pfm
from harness.errors import DataFormatError, HarnessError, MissingFile

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _ramp(shape: tuple[int, ...]) -> np.ndarray:
    return (np.arange(int(np.prod(shape)), dtype=np.float32) * 0.5 - 3.0).reshape(shape)


def _pfm_bytes(image: np.ndarray, scale: bytes = b"-1.0", dtype: str = "<f4") -> bytes:
    """A PFM file built by hand from the format's definition."""
    magic = b"PF" if image.ndim == 3 else b"Pf"
    height, width = image.shape[:2]
    body = image[::-1].astype(dtype).tobytes()  # bottom row first
    return magic + b"\n" + f"{width} {height}".encode() + b"\n" + scale + b"\n" + body


def _valid_file() -> bytes:
    return _pfm_bytes(_ramp((3, 4)))


def _assert_read_is_array_or_format_error(path: Path) -> None:
    try:
        result = read_pfm(path)
    except DataFormatError:
        return
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float32
    assert result.ndim == 2 or (result.ndim == 3 and result.shape[2] == 3)
    assert result.flags["C_CONTIGUOUS"]


# --- round trips and the byte layout ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 4), (5, 2, 3), (1, 1), (7, 1, 3)], ids=["grey", "colour", "1x1", "column"])
def test_write_then_read_returns_the_same_float32_array(tmp_path: Path, shape: tuple[int, ...]) -> None:
    image = _ramp(shape)
    path = write_pfm(tmp_path / "d.pfm", image)
    assert path == tmp_path / "d.pfm"
    result = read_pfm(path)
    assert result.dtype == np.float32
    assert result.shape == image.shape
    np.testing.assert_array_equal(result, image)


def test_read_and_write_accept_str_paths(tmp_path: Path) -> None:
    image = _ramp((2, 3))
    path = write_pfm(str(tmp_path / "s.pfm"), image)
    assert isinstance(path, Path)
    np.testing.assert_array_equal(read_pfm(str(path)), image)


def test_round_trip_keeps_special_values_bit_for_bit(tmp_path: Path) -> None:
    image = np.array([[np.nan, np.inf, -np.inf], [-0.0, 1e-45, 3.4e38]], dtype=np.float32)
    result = read_pfm(write_pfm(tmp_path / "d.pfm", image))
    assert result.tobytes() == image.tobytes()


def test_grey_file_layout_is_header_then_little_endian_rows_bottom_up(tmp_path: Path) -> None:
    image = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)  # H=2, W=3
    data = write_pfm(tmp_path / "d.pfm", image).read_bytes()
    magic, size, scale, body = data.split(b"\n", 3)
    assert magic == b"Pf"
    assert size.split() == [b"3", b"2"]  # width first
    assert float(scale) == -1.0  # negative: little-endian
    assert body == np.array([4.0, 5.0, 6.0, 1.0, 2.0, 3.0], dtype="<f4").tobytes()


def test_colour_file_layout_interleaves_rgb_per_pixel_bottom_row_first(tmp_path: Path) -> None:
    image = _ramp((2, 2, 3))
    data = write_pfm(tmp_path / "c.pfm", image).read_bytes()
    magic, size, scale, body = data.split(b"\n", 3)
    assert (magic, size.split(), float(scale)) == (b"PF", [b"2", b"2"], -1.0)
    expected = np.concatenate([image[1].reshape(-1), image[0].reshape(-1)]).astype("<f4").tobytes()
    assert body == expected


def test_reads_a_hand_built_little_endian_file_top_row_first(tmp_path: Path) -> None:
    image = _ramp((3, 5))
    path = tmp_path / "hand.pfm"
    path.write_bytes(_pfm_bytes(image, scale=b"-1.0"))
    np.testing.assert_array_equal(read_pfm(path), image)


@pytest.mark.parametrize("scale", [b"1.0", b"2.5", b"1"])
def test_reads_big_endian_files_when_the_scale_is_positive(tmp_path: Path, scale: bytes) -> None:
    image = _ramp((4, 3))
    path = tmp_path / "be.pfm"
    path.write_bytes(_pfm_bytes(image, scale=scale, dtype=">f4"))
    np.testing.assert_array_equal(read_pfm(path), image)


def test_reads_big_endian_colour_files(tmp_path: Path) -> None:
    image = _ramp((2, 3, 3))
    path = tmp_path / "be.pfm"
    path.write_bytes(_pfm_bytes(image, scale=b"1.0", dtype=">f4"))
    np.testing.assert_array_equal(read_pfm(path), image)


def test_scale_magnitude_is_ignored_only_its_sign_matters(tmp_path: Path) -> None:
    image = _ramp((2, 2))
    path = tmp_path / "s.pfm"
    path.write_bytes(_pfm_bytes(image, scale=b"-0.003921"))
    np.testing.assert_array_equal(read_pfm(path), image)


def test_trailing_bytes_after_the_pixels_are_ignored(tmp_path: Path) -> None:
    image = _ramp((2, 3))
    path = tmp_path / "t.pfm"
    path.write_bytes(_pfm_bytes(image) + b"\n")
    np.testing.assert_array_equal(read_pfm(path), image)


def test_read_array_is_writable_and_contiguous(tmp_path: Path) -> None:
    result = read_pfm(write_pfm(tmp_path / "d.pfm", _ramp((3, 4))))
    assert result.flags["C_CONTIGUOUS"]
    result[0, 0] = 42.0  # a view of the file's bytes would be read-only


def test_write_accepts_a_single_channel_third_axis_as_grey(tmp_path: Path) -> None:
    image = _ramp((3, 4, 1))
    path = write_pfm(tmp_path / "d.pfm", image)
    assert path.read_bytes().startswith(b"Pf\n4 3\n")
    np.testing.assert_array_equal(read_pfm(path), image[:, :, 0])


def test_write_creates_missing_parent_folders(tmp_path: Path) -> None:
    path = write_pfm(tmp_path / "depths" / "deeper" / "d.pfm", _ramp((2, 2)))
    assert path.is_file()


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_write_refuses_non_float32_data(tmp_path: Path, dtype: type) -> None:
    with pytest.raises(DataFormatError, match="float32"):
        write_pfm(tmp_path / "d.pfm", np.zeros((2, 2), dtype=dtype))
    assert not (tmp_path / "d.pfm").exists()


@pytest.mark.parametrize("shape", [(4,), (2, 2, 2), (2, 2, 4), (1, 2, 2, 3)])
def test_write_refuses_shapes_other_than_hw_or_hw3(tmp_path: Path, shape: tuple[int, ...]) -> None:
    with pytest.raises(DataFormatError, match="wrong shape"):
        write_pfm(tmp_path / "d.pfm", np.zeros(shape, dtype=np.float32))


# --- malformed files -------------------------------------------------------------------------------

MALFORMED = {
    "empty-file": (b"", "not a PFM file"),
    "bad-magic": (b"P6\n2 2\n-1.0\n" + bytes(16), "not a PFM file"),
    "lowercase-magic": (b"pf\n2 2\n-1.0\n" + bytes(16), "not a PFM file"),
    "size-one-number": (b"Pf\n2\n-1.0\n" + bytes(16), "malformed size line"),
    "size-three-numbers": (b"Pf\n2 2 2\n-1.0\n" + bytes(16), "malformed size line"),
    "size-negative": (b"Pf\n-2 2\n-1.0\n" + bytes(16), "malformed size line"),
    "size-words": (b"Pf\nwide tall\n-1.0\n" + bytes(16), "malformed size line"),
    "size-missing": (b"Pf\n", "malformed size line"),
    "size-zero-width": (b"Pf\n0 2\n-1.0\n", "implausible size"),
    "size-zero-height": (b"Pf\n2 0\n-1.0\n", "implausible size"),
    "size-absurd": (b"Pf\n100000 100000\n-1.0\n" + bytes(16), "implausible size"),
    "scale-zero": (b"Pf\n2 2\n0\n" + bytes(16), "malformed scale line"),
    "scale-negative-zero": (b"Pf\n2 2\n-0.0\n" + bytes(16), "malformed scale line"),
    "scale-word": (b"Pf\n2 2\nlittle\n" + bytes(16), "malformed scale line"),
    "scale-nan": (b"Pf\n2 2\nnan\n" + bytes(16), "malformed scale line"),
    "scale-inf": (b"Pf\n2 2\n-inf\n" + bytes(16), "malformed scale line"),
    "scale-missing": (b"Pf\n2 2\n", "malformed scale line"),
    "no-pixels": (b"Pf\n2 2\n-1.0\n", "truncated pixel data"),
    "one-byte-short": (b"Pf\n2 2\n-1.0\n" + bytes(15), "truncated pixel data"),
    "colour-with-grey-payload": (b"PF\n2 2\n-1.0\n" + bytes(16), "truncated pixel data"),
    # the largest plausible size: must be refused by length, without allocating 16 GiB
    "huge-but-plausible-size": (b"Pf\n65536 65536\n-1.0\n" + bytes(16), "truncated pixel data"),
}


@pytest.mark.parametrize(("content", "problem"), list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_file_raises_data_format_error_naming_file_and_problem(tmp_path: Path, content: bytes,
                                                                         problem: str) -> None:
    path = tmp_path / "bad.pfm"
    path.write_bytes(content)
    with pytest.raises(DataFormatError) as info:
        read_pfm(path)
    assert isinstance(info.value, HarnessError)
    assert isinstance(info.value, ValueError)
    assert problem in str(info.value)
    assert str(info.value).startswith(f"{path} |")
    assert "Fix:" in str(info.value)


def test_size_line_with_thousands_of_digits_is_a_data_format_error(tmp_path: Path) -> None:
    # int() refuses strings over 4300 digits with a plain ValueError (Python >= 3.11): the reader
    # must still answer with its own error, not leak that one.
    path = tmp_path / "long.pfm"
    path.write_bytes(b"Pf\n" + b"9" * 5000 + b" 2\n-1.0\n" + bytes(16))
    with pytest.raises(DataFormatError):
        read_pfm(path)


def test_truncated_error_reports_the_expected_byte_count(tmp_path: Path) -> None:
    path = tmp_path / "short.pfm"
    path.write_bytes(b"PF\n3 2\n-1.0\n" + bytes(10))
    with pytest.raises(DataFormatError, match=r"10 bytes.*72 bytes for 3x2x3"):
        read_pfm(path)


def test_missing_file_raises_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFile) as info:
        read_pfm(tmp_path / "nope.pfm")
    assert isinstance(info.value, FileNotFoundError)
    assert "nope.pfm" in str(info.value)


def test_a_folder_is_not_a_pfm_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFile):
        read_pfm(tmp_path)


# --- fuzzing: only a valid array or DataFormatError ---------------------------------------------------


@FUZZ
@given(content=st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_give_an_array_or_data_format_error(tmp_path_factory: pytest.TempPathFactory,
                                                                  content: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-arbitrary.pfm"
    path.write_bytes(content)
    _assert_read_is_array_or_format_error(path)


def _mostly(valid: st.SearchStrategy[bytes], invalid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """``valid`` about three times in four, so the fuzzing reaches every check and the success path."""
    return st.integers(0, 3).flatmap(lambda i: invalid if i == 3 else valid)


_HEADER_PIECES = st.tuples(
    _mostly(st.sampled_from([b"Pf", b"PF", b"Pf\r"]),
            st.sampled_from([b"pf", b"P", b"Pf ", b"", b"PFf"]) | st.binary(max_size=4)),
    _mostly(st.tuples(st.integers(1, 4), st.integers(1, 4)).map(lambda wh: f"{wh[0]} {wh[1]}".encode()),
            st.sampled_from([b"0 1", b"65536 1", b"65537 1", b" 3 2", b"3  2 ", b"3\t2", b"+3 2", b"3 2 1"])
            | st.binary(max_size=12)
            | st.tuples(st.integers(-5, 70000), st.integers(-5, 70000)).map(lambda wh: f"{wh[0]} {wh[1]}".encode())),
    _mostly(st.sampled_from([b"-1.0", b"1.0", b"-1", b"0.5", b"-1e-300", b" -1.0 "]),
            st.sampled_from([b"0", b"-0", b"nan", b"inf", b"1e999", b"", b"--1", b"1_0"]) | st.binary(max_size=8)),
    st.binary(max_size=200),
)


@FUZZ
@given(pieces=_HEADER_PIECES, separator=_mostly(st.just(b"\n"), st.sampled_from([b"\r\n", b" ", b"\n\n"])))
def test_fuzz_nearly_valid_headers_give_an_array_or_data_format_error(tmp_path_factory: pytest.TempPathFactory,
                                                                      pieces: tuple[bytes, bytes, bytes, bytes],
                                                                      separator: bytes) -> None:
    magic, size, scale, body = pieces
    path = tmp_path_factory.getbasetemp() / "fuzz-header.pfm"
    path.write_bytes(magic + separator + size + separator + scale + b"\n" + body)
    _assert_read_is_array_or_format_error(path)


@FUZZ
@given(data=st.data())
def test_fuzz_truncated_or_header_flipped_valid_files(tmp_path_factory: pytest.TempPathFactory,
                                                      data: st.DataObject) -> None:
    content = bytearray(_valid_file())
    header_length = content.index(b"\n", content.index(b"\n", 3) + 1) + 1
    if data.draw(st.booleans(), label="truncate"):
        content = content[: data.draw(st.integers(0, len(content)), label="cut")]
    flips = data.draw(st.lists(st.tuples(st.integers(0, header_length - 1), st.integers(0, 255)), max_size=4),
                      label="flips")
    for index, value in flips:
        if index < len(content):
            content[index] = value
    path = tmp_path_factory.getbasetemp() / "fuzz-mutated.pfm"
    path.write_bytes(bytes(content))
    _assert_read_is_array_or_format_error(path)


@FUZZ
@given(
    image=st.integers(1, 6).flatmap(
        lambda h: st.integers(1, 6).flatmap(
            lambda w: st.sampled_from([(h, w), (h, w, 3)]).flatmap(
                lambda shape: st.lists(st.floats(width=32, allow_nan=False), min_size=int(np.prod(shape)),
                                       max_size=int(np.prod(shape))).map(
                    lambda values: np.array(values, dtype=np.float32).reshape(shape))))))
def test_fuzz_round_trip_of_arbitrary_small_arrays(tmp_path_factory: pytest.TempPathFactory,
                                                   image: np.ndarray) -> None:
    path = write_pfm(tmp_path_factory.getbasetemp() / "fuzz-round-trip.pfm", image)
    result = read_pfm(path)
    assert result.shape == image.shape
    assert result.tobytes() == image.tobytes()
