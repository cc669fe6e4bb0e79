"""Unit tests of harness/fileio.py: atomic writes and never-reused run folders."""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import datetime, timezone

import pytest

from harness import fileio
from harness.errors import HarnessError
from harness.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, new_run_dir, utc_stamp


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_bytes_writes_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "deep" / "folder" / "artifact.bin"
    assert atomic_write_bytes(target, b"payload") == target
    assert target.read_bytes() == b"payload"
    assert [p.name for p in target.parent.iterdir()] == ["artifact.bin"]


def test_atomic_write_bytes_replaces_an_existing_file(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_failed_rename_leaves_no_temp_file_and_the_old_content(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_failure_during_the_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def fail_fsync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(fileio.os, "fsync", fail_fsync)
    with pytest.raises(OSError, match="I/O error"):
        atomic_write_bytes(tmp_path / "a.bin", b"data")
    assert list(tmp_path.iterdir()) == []


def test_interrupt_during_the_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "a.bin", b"data")
    assert list(tmp_path.iterdir()) == []


def test_file_mode_respects_the_umask_not_0600(tmp_path):
    path = atomic_write_bytes(tmp_path / "a.bin", b"x")
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o666 & ~_current_umask()
    if not _current_umask() & 0o044:  # group/other may read: mkstemp's 0600 must not leak through
        assert mode != 0o600


def test_file_mode_matches_a_plain_open(tmp_path):
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    atomic = atomic_write_bytes(tmp_path / "atomic.bin", b"x")
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_atomic_write_text_and_json(tmp_path):
    text = atomic_write_text(tmp_path / "a.txt", "héllo\n")
    assert text.read_bytes() == "héllo\n".encode()
    obj = {"b": 1, "a": [1.5, None], "path": tmp_path}
    data = json.loads(atomic_write_json(tmp_path / "a.json", obj).read_text())
    assert data == {"b": 1, "a": [1.5, None], "path": str(tmp_path)}
    assert list(data) == ["b", "a", "path"]  # insertion order kept
    assert (tmp_path / "a.json").read_text().endswith("\n")


def test_utc_stamp_format():
    assert utc_stamp(datetime(2026, 11, 23, 23, 59, 59, tzinfo=timezone.utc)) == "20261123T235959Z"
    assert re.fullmatch(r"\d{8}T\d{6}Z", utc_stamp())


def test_new_run_dir_never_reuses_a_folder(tmp_path):
    root = tmp_path / "reports"
    first = new_run_dir(root, "20260101T000000Z")
    second = new_run_dir(root, "20260101T000000Z")
    third = new_run_dir(root, "20260101T000000Z")
    assert [first.name, second.name, third.name] == ["20260101T000000Z", "20260101T000000Z-2", "20260101T000000Z-3"]
    assert all(p.is_dir() and p.parent == root for p in (first, second, third))


def test_new_run_dir_skips_a_folder_that_already_has_content(tmp_path):
    (tmp_path / "S").mkdir()
    (tmp_path / "S" / "run.json").write_text("{}")
    assert new_run_dir(tmp_path, "S").name == "S-2"
    assert (tmp_path / "S" / "run.json").read_text() == "{}"


def test_new_run_dir_defaults_to_a_utc_stamp(tmp_path):
    assert re.fullmatch(r"\d{8}T\d{6}Z(-\d+)?", new_run_dir(tmp_path).name)


def test_new_run_dir_under_a_file_is_a_harness_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(HarnessError, match="cannot create the reports folder") as info:
        new_run_dir(blocker / "reports")
    assert "--harness-report-dir" in str(info.value)
