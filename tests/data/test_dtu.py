"""harness.data.dtu: MVSNet cam files, pair.txt, images."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from harness.data.dtu import (
    Camera,
    find_image,
    format_cam,
    format_pair,
    parse_cam_text,
    parse_pair_text,
    read_cam_file,
    read_image,
    read_pair_file,
    view_file,
    write_cam_file,
    write_image,
    write_pair_file,
)
from harness.errors import DataFormatError, HarnessError, MissingFile

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CAM_PATH = Path("scan1/cams/00000000_cam.txt")

# DTU scan's view 0 as preprocessed for MVSNet (line numbers in comments are 1-based)
VALID_CAM = """\
extrinsic
0.970263 0.00747983 0.241939 -191.02
-0.0147429 0.999493 0.0282234 3.28832
-0.241605 -0.030951 0.969881 22.5401
0.0 0.0 0.0 1.0

intrinsic
2892.33 0 823.205
0 2883.18 619.071
0 0 1

425.0 2.5
"""
VALID_EXTRINSICS = np.array([
    [0.970263, 0.00747983, 0.241939, -191.02],
    [-0.0147429, 0.999493, 0.0282234, 3.28832],
    [-0.241605, -0.030951, 0.969881, 22.5401],
    [0.0, 0.0, 0.0, 1.0],
])
VALID_INTRINSICS = np.array([[2892.33, 0, 823.205], [0, 2883.18, 619.071], [0, 0, 1]])

VALID_PAIR = """\
3
0
2 1 13.5 2 9.25
1
2 0 13.5 2 4
2
2 0 9.25 1 4
"""


def _replace_line(text: str, index: int, new: str) -> str:
    lines = text.splitlines()
    lines[index] = new
    return "\n".join(lines) + "\n"


def _keep_lines(text: str, count: int) -> str:
    return "\n".join(text.splitlines()[:count]) + "\n"


def _camera(extra: tuple[float, ...] = ()) -> Camera:
    rng = np.random.default_rng(7)
    extrinsics = np.eye(4)
    extrinsics[:3, :4] = rng.normal(size=(3, 4)) * [1, 1, 1, 300]
    intrinsics = np.array([[1156.932123456, 0, 329.28271], [0, 1230.15681, 264.136961], [0, 0, 1]])
    return Camera(intrinsics, extrinsics, 425.123456789, 2.5e-3, extra)


def _assert_cameras_close(a: Camera, b: Camera) -> None:
    np.testing.assert_allclose(a.intrinsics, b.intrinsics, rtol=1e-9, atol=0)
    np.testing.assert_allclose(a.extrinsics, b.extrinsics, rtol=1e-9, atol=0)
    assert a.depth_min == pytest.approx(b.depth_min, rel=1e-9)
    assert a.depth_interval == pytest.approx(b.depth_interval, rel=1e-9)
    assert a.extra == pytest.approx(b.extra, rel=1e-9)


# --- cam files ------------------------------------------------------------------------------------


def test_parse_cam_text_reads_extrinsic_intrinsic_and_depth_line() -> None:
    camera = parse_cam_text(VALID_CAM)
    np.testing.assert_array_equal(camera.extrinsics, VALID_EXTRINSICS)
    np.testing.assert_array_equal(camera.intrinsics, VALID_INTRINSICS)
    assert camera.extrinsics.dtype == np.float64 and camera.intrinsics.dtype == np.float64
    assert camera.extrinsics.shape == (4, 4) and camera.intrinsics.shape == (3, 3)
    assert (camera.depth_min, camera.depth_interval, camera.extra) == (425.0, 2.5, ())


def test_parse_cam_text_keeps_the_intrinsics_at_full_resolution() -> None:
    # dividing by 4 for the feature maps is projection_matrices' job, not the reader's
    assert parse_cam_text(VALID_CAM).intrinsics[0, 0] == 2892.33


def test_extra_numbers_on_the_depth_line_are_kept_in_extra() -> None:
    camera = parse_cam_text(_replace_line(VALID_CAM, 11, "425.0 2.5 192 935.0"))
    assert (camera.depth_min, camera.depth_interval) == (425.0, 2.5)
    assert camera.extra == (192.0, 935.0)


def test_parse_cam_text_accepts_crlf_tabs_and_padding() -> None:
    text = VALID_CAM.replace("\n", "\r\n").replace(" ", " \t ").replace("extrinsic", "  EXTRINSIC  ")
    camera = parse_cam_text(text)
    np.testing.assert_array_equal(camera.extrinsics, VALID_EXTRINSICS)
    np.testing.assert_array_equal(camera.intrinsics, VALID_INTRINSICS)


def test_parse_cam_text_accepts_a_file_without_trailing_newline_or_with_trailing_lines() -> None:
    assert parse_cam_text(VALID_CAM.rstrip("\n")).depth_interval == 2.5
    assert parse_cam_text(VALID_CAM + "\n\n").depth_interval == 2.5


def test_negative_depth_interval_is_accepted_as_a_step_direction() -> None:
    assert parse_cam_text(_replace_line(VALID_CAM, 11, "935 -2.5")).depth_interval == -2.5


def test_read_cam_file_reads_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "00000000_cam.txt"
    path.write_text(VALID_CAM)
    camera = read_cam_file(path)
    np.testing.assert_array_equal(camera.extrinsics, VALID_EXTRINSICS)
    assert camera.depth_min == 425.0


@pytest.mark.parametrize("extra", [(), (192.0,), (192.0, 935.5)], ids=["plain", "one-extra", "two-extra"])
def test_format_cam_then_parse_round_trips(extra: tuple[float, ...]) -> None:
    camera = _camera(extra)
    _assert_cameras_close(parse_cam_text(format_cam(camera)), camera)


def test_format_cam_follows_the_mvsnet_line_layout() -> None:
    lines = format_cam(_camera((192.0,))).splitlines()
    assert len(lines) == 12
    assert lines[0] == "extrinsic" and lines[6] == "intrinsic"
    assert lines[5] == "" and lines[10] == ""
    assert [len(lines[i].split()) for i in range(1, 5)] == [4, 4, 4, 4]
    assert [len(lines[i].split()) for i in range(7, 10)] == [3, 3, 3]
    assert lines[11].split() == ["425.1234568", "0.0025", "192"]


def test_write_cam_file_then_read_round_trips(tmp_path: Path) -> None:
    camera = _camera((192.0, 935.0))
    path = write_cam_file(tmp_path / "cams" / "00000007_cam.txt", camera)
    assert path == tmp_path / "cams" / "00000007_cam.txt"
    _assert_cameras_close(read_cam_file(path), camera)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).filter(lambda v: v == 0 or abs(v) > 1e-200)


@FUZZ
@given(
    extrinsic_rows=st.lists(finite, min_size=12, max_size=12),
    intrinsic_rows=st.lists(finite, min_size=6, max_size=6),
    depth_min=finite,
    depth_interval=finite.filter(lambda v: v != 0),
    extra=st.lists(finite, max_size=3),
)
def test_fuzz_format_cam_round_trips_any_finite_camera(extrinsic_rows: list[float], intrinsic_rows: list[float],
                                                       depth_min: float, depth_interval: float,
                                                       extra: list[float]) -> None:
    extrinsics = np.eye(4)
    extrinsics[:3, :] = np.reshape(extrinsic_rows, (3, 4))
    intrinsics = np.eye(3)
    intrinsics[:2, :] = np.reshape(intrinsic_rows, (2, 3))
    camera = Camera(intrinsics, extrinsics, depth_min, depth_interval, tuple(extra))
    singular = intrinsics[0, 0] * intrinsics[1, 1] == 0 or not np.linalg.cond(extrinsics[:3, :3]) < 1e6
    if singular:  # a camera the plane sweep cannot invert is refused, naming the problem
        with pytest.raises(DataFormatError, match="singular"):
            parse_cam_text(format_cam(camera))
        return
    _assert_cameras_close(parse_cam_text(format_cam(camera)), camera)


CAM_ERRORS = {
    # name: (text, 1-based line in the message, problem)
    "empty": ("", 1, "first line is not 'extrinsic'"),
    "first-line-misspelt": (_replace_line(VALID_CAM, 0, "extrinsics"), 1, "first line is not 'extrinsic'"),
    "first-line-intrinsic": (_replace_line(VALID_CAM, 0, "intrinsic"), 1, "first line is not 'extrinsic'"),
    "extrinsic-row-three-numbers": (_replace_line(VALID_CAM, 2, "1 2 3"), 3, "wrong number of values"),
    "extrinsic-row-five-numbers": (_replace_line(VALID_CAM, 3, "1 2 3 4 5"), 4, "wrong number of values"),
    "extrinsic-row-blank": (_replace_line(VALID_CAM, 1, ""), 2, "wrong number of values"),
    "extrinsic-non-numeric": (_replace_line(VALID_CAM, 1, "1 0 0 x"), 2, "non-numeric extrinsic row 0"),
    "extrinsic-comma-separated": (_replace_line(VALID_CAM, 2, "0,1,0,0"), 3, "non-numeric"),
    "extrinsic-nan": (_replace_line(VALID_CAM, 1, "nan 0 0 0"), 2, "non-finite"),
    "extrinsic-inf": (_replace_line(VALID_CAM, 3, "0 0 1 inf"), 4, "non-finite"),
    "extrinsic-overflow": (_replace_line(VALID_CAM, 3, "0 0 1 1e999"), 4, "non-finite"),
    "intrinsic-missing": (_replace_line(VALID_CAM, 6, "intrinsics"), 7, "line 7 is not 'intrinsic'"),
    "intrinsic-row-two-numbers": (_replace_line(VALID_CAM, 8, "0 2883.18"), 9, "wrong number of values"),
    "intrinsic-non-numeric": (_replace_line(VALID_CAM, 7, "fx 0 823.205"), 8, "non-numeric intrinsic row 0"),
    "intrinsic-nan": (_replace_line(VALID_CAM, 8, "0 nan 619.071"), 9, "non-finite"),
    "depth-line-one-number": (_replace_line(VALID_CAM, 11, "425.0"), 12, "depth_min and depth_interval"),
    "depth-line-blank": (_replace_line(VALID_CAM, 11, ""), 12, "depth_min and depth_interval"),
    "depth-line-non-numeric": (_replace_line(VALID_CAM, 11, "425 mm"), 12, "non-numeric depth line"),
    "depth-line-nan": (_replace_line(VALID_CAM, 11, "425 nan"), 12, "non-finite depth line"),
    "zero-interval": (_replace_line(VALID_CAM, 11, "425 0"), 12, "depth_interval is zero"),
    "zero-interval-negative": (_replace_line(VALID_CAM, 11, "425 -0.0 192"), 12, "depth_interval is zero"),
    "extrinsic-last-row": (_replace_line(VALID_CAM, 4, "0 0 1 1"), 5, "extrinsic last row is not 0 0 0 1"),
    "intrinsic-last-row": (_replace_line(VALID_CAM, 9, "0 0 2"), 10, "intrinsic last row is not 0 0 1"),
    "intrinsic-last-row-skew": (_replace_line(VALID_CAM, 9, "0.1 0 1"), 10, "intrinsic last row is not 0 0 1"),
}


@pytest.mark.parametrize(("text", "line", "problem"), list(CAM_ERRORS.values()), ids=list(CAM_ERRORS))
def test_malformed_cam_text_raises_data_format_error_with_file_and_line(text: str, line: int, problem: str) -> None:
    with pytest.raises(DataFormatError) as info:
        parse_cam_text(text, CAM_PATH)
    message = str(info.value)
    assert isinstance(info.value, HarnessError) and isinstance(info.value, ValueError)
    assert message.startswith(f"{CAM_PATH}:{line} |"), message
    assert problem in message
    assert "Fix:" in message


@pytest.mark.parametrize("keep", [1, 3, 6, 9, 10, 11], ids=lambda n: f"{n}-lines")
def test_cam_file_that_ends_early_names_the_file_and_the_missing_part(keep: int) -> None:
    with pytest.raises(DataFormatError) as info:
        parse_cam_text(_keep_lines(VALID_CAM, keep), CAM_PATH)
    assert str(info.value).startswith(str(CAM_PATH))


def test_cam_file_without_the_depth_line_says_so() -> None:
    with pytest.raises(DataFormatError, match="depth line"):
        parse_cam_text(_keep_lines(VALID_CAM, 11), CAM_PATH)


def test_read_cam_file_errors_name_the_real_path(tmp_path: Path) -> None:
    path = tmp_path / "00000003_cam.txt"
    path.write_text(_replace_line(VALID_CAM, 8, "0 2883.18 oops"))
    with pytest.raises(DataFormatError) as info:
        read_cam_file(path)
    assert str(info.value).startswith(f"{path}:9 |")


def test_read_cam_file_refuses_binary_files(tmp_path: Path) -> None:
    path = tmp_path / "00000000_cam.txt"
    path.write_bytes(b"extrinsic\n\xff\xfe\x00garbage")
    with pytest.raises(DataFormatError, match="not a text file"):
        read_cam_file(path)


def test_read_cam_file_missing_raises_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFile) as info:
        read_cam_file(tmp_path / "cams" / "00000009_cam.txt")
    assert isinstance(info.value, FileNotFoundError)
    assert "00000009_cam.txt" in str(info.value)


def _mutated(text: str, data: st.DataObject) -> str:
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        kind = data.draw(st.sampled_from(["delete", "duplicate", "replace", "token", "insert"]), label="kind")
        if not lines:
            lines = [data.draw(st.text(max_size=20), label="line")]
            continue
        index = data.draw(st.integers(0, len(lines) - 1), label="index")
        if kind == "delete":
            del lines[index]
        elif kind == "duplicate":
            lines.insert(index, lines[index])
        elif kind == "replace":
            lines[index] = data.draw(st.text(max_size=30), label="line")
        elif kind == "insert":
            lines.insert(index, data.draw(st.text(max_size=30), label="line"))
        else:
            tokens = lines[index].split() or [""]
            position = data.draw(st.integers(0, len(tokens) - 1), label="token")
            tokens[position] = data.draw(
                st.sampled_from(["nan", "inf", "-inf", "0", "-0", "1e999", "x", "", "1,5", "0x10", "1_0", "٣"])
                | st.text(max_size=8), label="value")
            lines[index] = " ".join(tokens)
    return "\n".join(lines) + data.draw(st.sampled_from(["", "\n", "\r\n"]), label="end")


def _parse_cam_or_format_error(text: str) -> None:
    try:
        camera = parse_cam_text(text, CAM_PATH)
    except DataFormatError as exc:
        assert str(exc).startswith(str(CAM_PATH))
        return
    assert camera.extrinsics.shape == (4, 4) and camera.intrinsics.shape == (3, 3)
    assert np.isfinite(camera.extrinsics).all() and np.isfinite(camera.intrinsics).all()
    assert camera.depth_interval != 0


@FUZZ
@given(text=st.text(max_size=400))
def test_fuzz_cam_parser_on_arbitrary_text_gives_a_camera_or_data_format_error(text: str) -> None:
    _parse_cam_or_format_error(text)


@FUZZ
@given(data=st.data())
def test_fuzz_cam_parser_on_mutated_valid_files_gives_a_camera_or_data_format_error(data: st.DataObject) -> None:
    _parse_cam_or_format_error(_mutated(VALID_CAM, data))


# --- pair.txt -------------------------------------------------------------------------------------


def test_parse_pair_text_reads_sources_in_file_order_with_scores() -> None:
    pairs = parse_pair_text(VALID_PAIR)
    assert list(pairs) == [0, 1, 2]
    assert pairs[0] == [(1, 13.5), (2, 9.25)]
    assert pairs[1] == [(0, 13.5), (2, 4.0)]
    assert pairs[2] == [(0, 9.25), (1, 4.0)]
    assert all(isinstance(i, int) and isinstance(s, float) for sources in pairs.values() for i, s in sources)


def test_parse_pair_text_keeps_the_file_order_of_references_and_sources() -> None:
    pairs = parse_pair_text("2\n7\n2 3 1.0 5 9.0\n3\n1 7 2.0\n")
    assert list(pairs) == [7, 3]
    assert [i for i, _ in pairs[7]] == [3, 5]  # file order, even when scores are not descending


def test_parse_pair_text_accepts_a_view_without_sources_and_blank_lines() -> None:
    pairs = parse_pair_text("\n2\n\n0\n0\n1\n1 0 5\n\n")
    assert pairs == {0: [], 1: [(0, 5.0)]}


def test_format_pair_then_parse_round_trips() -> None:
    pairs = {0: [(1, 13.147), (4, 11.168), (2, 10.012)], 1: [(0, 13.147)], 4: [], 2: [(0, 1e-3), (1, 2500.5)]}
    assert parse_pair_text(format_pair(pairs)) == pairs


def test_format_pair_writes_the_mvsnet_layout() -> None:
    assert format_pair({0: [(1, 13.5), (2, 9.25)], 1: [(0, 13.5)]}) == "2\n0\n2 1 13.5 2 9.25\n1\n1 0 13.5\n"


def test_write_pair_file_then_read_round_trips(tmp_path: Path) -> None:
    pairs = parse_pair_text(VALID_PAIR)
    path = write_pair_file(tmp_path / "pair.txt", pairs)
    assert path.read_text() == VALID_PAIR
    assert read_pair_file(path) == pairs


@FUZZ
@given(pairs=st.dictionaries(
    st.integers(0, 10_000),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10**6).map(lambda v: v / 1000)), max_size=6),
    min_size=1, max_size=8))
def test_fuzz_format_pair_round_trips_scores_with_up_to_six_digits(pairs: dict[int, list[tuple[int, float]]]) -> None:
    parsed = parse_pair_text(format_pair(pairs))
    assert list(parsed) == list(pairs)
    for ref, sources in pairs.items():
        assert [i for i, _ in parsed[ref]] == [i for i, _ in sources]
        assert [s for _, s in parsed[ref]] == pytest.approx([s for _, s in sources], rel=1e-5)


PAIR_ERRORS = {
    # name: (text, where the message points, problem)
    "empty": ("", "pair.txt |", "empty pair file"),
    "only-blank-lines": ("\n \n\t\n", "pair.txt |", "empty pair file"),
    "count-not-integer": ("three\n0\n0\n", "pair.txt:1 |", "viewpoint count is not an integer"),
    "count-float": ("1.0\n0\n0\n", "pair.txt:1 |", "viewpoint count is not an integer"),
    "count-zero": ("0\n", "pair.txt:1 |", "implausible viewpoint count"),
    "count-negative": ("-2\n0\n0\n", "pair.txt:1 |", "implausible viewpoint count"),
    "count-absurd": ("1000000\n0\n0\n", "pair.txt:1 |", "implausible viewpoint count"),
    "too-few-lines": ("2\n0\n1 1 5.0\n", "pair.txt |", "file ends early"),
    "source-line-missing": ("1\n0\n", "pair.txt |", "file ends early"),
    "reference-not-integer": ("1\nzero\n1 1 5.0\n", "pair.txt:2 |", "reference id is not an integer"),
    "count-larger-than-list": ("1\n0\n3 1 5.0 2 4.0\n", "pair.txt:3 |", "source count disagrees"),
    "count-smaller-than-list": ("1\n0\n1 1 5.0 2 4.0\n", "pair.txt:3 |", "source count disagrees"),
    "score-missing": ("1\n0\n2 1 5.0 2\n", "pair.txt:3 |", "source count disagrees"),
    "negative-source-count": ("1\n0\n-1\n", "pair.txt:3 |", "source count disagrees"),
    "source-id-not-integer": ("1\n0\n1 one 5.0\n", "pair.txt:3 |", "malformed source list"),
    "source-count-not-integer": ("1\n0\nn 1 5.0\n", "pair.txt:3 |", "malformed source list"),
    "score-not-numeric": ("1\n0\n1 1 high\n", "pair.txt:3 |", "malformed source list"),
    "duplicated-reference": ("2\n0\n1 1 5.0\n0\n1 2 4.0\n", "pair.txt:4 |", "reference id listed twice"),
    "negative-reference": ("1\n-1\n1 1 5.0\n", "pair.txt:2 |", "negative view id"),
    "negative-source": ("1\n0\n2 1 5.0 -3 4.0\n", "pair.txt:3 |", "negative view id"),
}


@pytest.mark.parametrize(("text", "where", "problem"), list(PAIR_ERRORS.values()), ids=list(PAIR_ERRORS))
def test_malformed_pair_text_raises_data_format_error(text: str, where: str, problem: str) -> None:
    with pytest.raises(DataFormatError) as info:
        parse_pair_text(text, Path("pair.txt"))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert message.startswith(where), message
    assert problem in message
    assert "Fix:" in message


def test_pair_error_line_numbers_count_blank_lines_of_the_file() -> None:
    # A user opens the file at the reported line: blank lines must count.
    text = "2\n\n0\n1 1 5.0\n\n1\n1 zero 5.0\n"  # the bad source list is on line 7
    with pytest.raises(DataFormatError) as info:
        parse_pair_text(text, Path("pair.txt"))
    assert str(info.value).startswith("pair.txt:7 |"), str(info.value)


def test_read_pair_file_missing_raises_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFile) as info:
        read_pair_file(tmp_path / "pair.txt")
    assert isinstance(info.value, FileNotFoundError)


def test_read_pair_file_refuses_binary_files(tmp_path: Path) -> None:
    path = tmp_path / "pair.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff")
    with pytest.raises(DataFormatError, match="not a text file"):
        read_pair_file(path)


def test_read_pair_file_errors_name_the_real_path(tmp_path: Path) -> None:
    path = tmp_path / "pair.txt"
    path.write_text("x\n")
    with pytest.raises(DataFormatError) as info:
        read_pair_file(path)
    assert str(info.value).startswith(f"{path}:1 |")


def _parse_pair_or_format_error(text: str) -> None:
    try:
        pairs = parse_pair_text(text, Path("pair.txt"))
    except DataFormatError as exc:
        assert str(exc).startswith("pair.txt")
        return
    assert pairs and all(isinstance(ref, int) and ref >= 0 for ref in pairs)
    assert all(i >= 0 for sources in pairs.values() for i, _ in sources)


@FUZZ
@given(text=st.text(max_size=200) | st.text(alphabet="0123456789 .-\n\te+", max_size=200))
def test_fuzz_pair_parser_on_arbitrary_text_gives_pairs_or_data_format_error(text: str) -> None:
    _parse_pair_or_format_error(text)


@FUZZ
@given(data=st.data())
def test_fuzz_pair_parser_on_mutated_valid_files_gives_pairs_or_data_format_error(data: st.DataObject) -> None:
    _parse_pair_or_format_error(_mutated(VALID_PAIR, data))


# --- images ---------------------------------------------------------------------------------------


def test_png_round_trip_is_exact_for_8_bit_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(9, 13, 3)).astype(np.float32) / 255.0
    path = write_image(tmp_path / "images" / "00000000.png", image)
    result = read_image(path)
    assert result.dtype == np.float32 and result.shape == (9, 13, 3)
    np.testing.assert_array_equal(result, image)


def test_jpeg_round_trip_is_close(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float32)
    image = np.stack([xx / 63, yy / 47, 0.5 + 0.4 * np.sin(xx / 5) * np.cos(yy / 7)], axis=2).astype(np.float32)
    path = write_image(tmp_path / "00000000.jpg", image)
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG by suffix
    result = read_image(path)
    assert result.shape == image.shape and result.dtype == np.float32
    assert np.abs(result - image).mean() < 0.01
    assert np.abs(result - image).max() < 0.1


def test_write_image_picks_png_for_other_suffixes_and_clips_values(tmp_path: Path) -> None:
    image = np.array([[[-0.5, 0.5, 1.5]]], dtype=np.float32)
    path = write_image(tmp_path / "x.png", image)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_allclose(read_image(path), np.array([[[0.0, 128 / 255, 1.0]]]), rtol=1e-6)


def test_read_image_converts_grey_and_rgba_to_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 5), 51, dtype=np.uint8), mode="L").save(tmp_path / "grey.png")
    Image.fromarray(np.full((4, 5, 4), 102, dtype=np.uint8), mode="RGBA").save(tmp_path / "rgba.png")
    grey, rgba = read_image(tmp_path / "grey.png"), read_image(tmp_path / "rgba.png")
    assert grey.shape == rgba.shape == (4, 5, 3)
    np.testing.assert_allclose(grey, 0.2)
    np.testing.assert_allclose(rgba, 0.4)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("text.jpg", b"this is not an image"),
        ("empty.png", b""),
        ("truncated.png", None),
        ("truncated.jpg", None),
    ],
)
def test_unreadable_image_raises_data_format_error(tmp_path: Path, name: str, content: bytes | None) -> None:
    path = tmp_path / name
    if content is None:  # a valid file cut in half
        write_image(path, np.full((32, 32, 3), 0.5, dtype=np.float32))
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match="unreadable image") as info:
        read_image(path)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(str(path))


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_image_too_large_to_decode_raises_data_format_error(tmp_path: Path) -> None:
    # A 200-megapixel header makes Pillow raise DecompressionBombError (an Exception, not an
    # OSError): the reader must still answer with DataFormatError.
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(20000, 10000))
    with pytest.raises(DataFormatError):
        read_image(path)


def test_read_image_missing_raises_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFile):
        read_image(tmp_path / "00000000.jpg")


def test_view_file_names_views_with_eight_digits(tmp_path: Path) -> None:
    assert view_file(tmp_path, "cams", 7, "_cam.txt") == tmp_path / "cams" / "00000007_cam.txt"
    assert view_file(tmp_path, "images", 123, ".jpg") == tmp_path / "images" / "00000123.jpg"


def test_find_image_prefers_jpg_and_accepts_png(tmp_path: Path) -> None:
    pixel = np.zeros((1, 1, 3), dtype=np.float32)
    write_image(tmp_path / "images" / "00000001.png", pixel)
    assert find_image(tmp_path, 1) == tmp_path / "images" / "00000001.png"
    write_image(tmp_path / "images" / "00000001.jpg", pixel)
    assert find_image(tmp_path, 1) == tmp_path / "images" / "00000001.jpg"


def test_find_image_missing_names_the_expected_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFile, match="00000004.jpg"):
        find_image(tmp_path, 4)
