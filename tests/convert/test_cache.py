"""Unit tests of harness/convert/cache.py: keys, hits, rebuilds after damage, locking."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from harness.convert.cache import ArtifactCache, canonical_key, default_cache_dir, sha256_file
from harness.errors import CacheError, HarnessError

FIELDS = {"weights": "abc", "opset": 17, "exporter": "torchscript", "inputs": {"imgs": [1, 3, 3, 128, 160]}}


class CountingBuilder:
    """A build callable that writes ``payload`` and counts its calls."""

    def __init__(self, payload: bytes = b"artifact-bytes", extra: dict | None = None) -> None:
        self.payload = payload
        self.extra = extra
        self.calls = 0

    def __call__(self, path: Path):
        self.calls += 1
        path.write_bytes(self.payload)
        return self.extra


# -- keys ------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("weights", "abd"), ("opset", 18), ("exporter", "dynamo"), ("inputs", {"imgs": [1, 3, 3, 256, 320]}),
])
def test_canonical_key_changes_when_any_field_changes(field, value):
    changed = {**FIELDS, field: value}
    assert canonical_key(changed) != canonical_key(FIELDS)


def test_canonical_key_changes_when_a_field_is_added():
    assert canonical_key({**FIELDS, "precision": "fp16"}) != canonical_key(FIELDS)


def test_canonical_key_is_stable_under_dict_ordering():
    reordered = {"inputs": {"imgs": [1, 3, 3, 128, 160]}, "exporter": "torchscript", "opset": 17, "weights": "abc"}
    assert list(reordered) != list(FIELDS)
    assert canonical_key(reordered) == canonical_key(FIELDS)
    nested_a = {"outer": {"b": 2, "a": 1}}
    nested_b = {"outer": {"a": 1, "b": 2}}
    assert canonical_key(nested_a) == canonical_key(nested_b)


def test_canonical_key_is_a_sha256_hex_digest():
    key = canonical_key(FIELDS)
    assert len(key) == 64
    int(key, 16)


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "blob"
    data = b"x" * (3 << 20) + b"tail"  # more than one read chunk
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


# -- get_or_build ----------------------------------------------------------------------------

def test_get_or_build_builds_once_then_hits(tmp_path):
    cache = ArtifactCache(tmp_path)
    build = CountingBuilder()
    first = cache.get_or_build("onnx", FIELDS, "model.onnx", build)
    second = cache.get_or_build("onnx", FIELDS, "model.onnx", build)
    assert (first.status, second.status) == ("miss", "hit")
    assert build.calls == 1
    assert first.path == second.path
    assert first.path.read_bytes() == b"artifact-bytes"
    assert first.key == second.key == canonical_key(FIELDS)
    assert first.sha256 == second.sha256 == sha256_file(first.path)


def test_entry_lives_under_root_kind_and_key(tmp_path):
    cache = ArtifactCache(tmp_path)
    entry = cache.get_or_build("engine", FIELDS, "model.plan", CountingBuilder())
    assert entry.path.parent == cache.entry_dir("engine", entry.key)
    assert entry.path.parent.parent == tmp_path / "engine"
    assert (entry.path.parent / "meta.json").is_file()


def test_extra_metadata_is_returned_on_miss_and_on_hit(tmp_path):
    cache = ArtifactCache(tmp_path)
    build = CountingBuilder(extra={"node_count": 315, "audit": {"opset": 17}})
    first = cache.get_or_build("onnx", FIELDS, "model.onnx", build)
    second = cache.get_or_build("onnx", FIELDS, "model.onnx", build)
    for entry in (first, second):
        assert entry.meta["node_count"] == 315
        assert entry.meta["audit"] == {"opset": 17}
        assert entry.meta["fields"] == json.loads(json.dumps(FIELDS))
        assert entry.meta["bytes"] == len(b"artifact-bytes")
    assert second.status == "hit"


def test_different_fields_get_different_entries(tmp_path):
    cache = ArtifactCache(tmp_path)
    build = CountingBuilder()
    a = cache.get_or_build("onnx", FIELDS, "model.onnx", build)
    b = cache.get_or_build("onnx", {**FIELDS, "opset": 18}, "model.onnx", build)
    assert a.path != b.path
    assert (a.status, b.status) == ("miss", "miss")
    assert build.calls == 2


def test_truncated_artifact_is_detected_and_rebuilt_with_a_warning(tmp_path):
    cache = ArtifactCache(tmp_path)
    build = CountingBuilder(payload=b"0123456789" * 100)
    first = cache.get_or_build("onnx", FIELDS, "model.onnx", build)
    first.path.write_bytes(first.path.read_bytes()[:37])  # truncated, meta.json intact
    with pytest.warns(UserWarning, match="truncated or modified"):
        again = cache.get_or_build("onnx", FIELDS, "model.onnx", build)
    assert again.status == "rebuilt"
    assert build.calls == 2
    assert again.path.read_bytes() == b"0123456789" * 100
    assert again.sha256 == first.sha256
    assert cache.get_or_build("onnx", FIELDS, "model.onnx", build).status == "hit"


def test_meta_naming_another_key_is_rebuilt(tmp_path):
    cache = ArtifactCache(tmp_path)
    build = CountingBuilder()
    first = cache.get_or_build("onnx", FIELDS, "model.onnx", build)
    meta_path = first.path.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["key"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="another key"):
        again = cache.get_or_build("onnx", FIELDS, "model.onnx", build)
    assert again.status == "rebuilt"
    assert build.calls == 2


def test_unreadable_meta_is_rebuilt(tmp_path):
    cache = ArtifactCache(tmp_path)
    build = CountingBuilder()
    first = cache.get_or_build("onnx", FIELDS, "model.onnx", build)
    (first.path.parent / "meta.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable meta.json"):
        assert cache.get_or_build("onnx", FIELDS, "model.onnx", build).status == "rebuilt"


def test_build_killed_midway_leaves_no_meta_and_is_rebuilt(tmp_path):
    cache = ArtifactCache(tmp_path)

    def dies_after_partial_write(path: Path):
        path.write_bytes(b"half an onn")
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError, match="killed mid-way"):
        cache.get_or_build("onnx", FIELDS, "model.onnx", dies_after_partial_write)
    folder = cache.entry_dir("onnx", canonical_key(FIELDS))
    assert (folder / "model.onnx").is_file()  # the partial file is there ...
    assert not (folder / "meta.json").exists()  # ... but the entry was never completed

    build = CountingBuilder()
    with pytest.warns(UserWarning, match="no meta.json"):
        entry = cache.get_or_build("onnx", FIELDS, "model.onnx", build)
    assert entry.status == "rebuilt"
    assert build.calls == 1
    assert entry.path.read_bytes() == b"artifact-bytes"
    assert (folder / "meta.json").is_file()


def test_builder_that_writes_nothing_raises_cache_error(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(CacheError) as info:
        cache.get_or_build("onnx", FIELDS, "model.onnx", lambda path: None)
    assert isinstance(info.value, HarnessError)
    assert "builder wrote no artifact" in str(info.value)
    assert "model.onnx" in str(info.value)
    assert not (cache.entry_dir("onnx", canonical_key(FIELDS)) / "meta.json").exists()


def test_waiting_for_a_held_lock_times_out_with_cache_error(tmp_path):
    cache = ArtifactCache(tmp_path, lock_timeout_s=0.2)
    folder = cache.entry_dir("onnx", canonical_key(FIELDS))
    folder.parent.mkdir(parents=True)
    build = CountingBuilder()
    with FileLock(str(folder) + ".lock"):
        with pytest.raises(CacheError, match="timed out waiting"):
            cache.get_or_build("onnx", FIELDS, "model.onnx", build)
    assert build.calls == 0


RACE_SCRIPT = """
import sys, time
from pathlib import Path
from harness.convert.cache import ArtifactCache

root, counter, start = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])

def build(path):
    with open(counter, "a") as handle:
        handle.write("built\\n")
    time.sleep(0.5)
    path.write_bytes(b"raced artifact")

while time.time() < start:  # line the workers up so that they really race
    time.sleep(0.005)
entry = ArtifactCache(root).get_or_build("race", {"k": 1}, "artifact.bin", build)
print(entry.status, entry.path)
"""


def test_four_processes_racing_on_a_cold_cache_build_once(tmp_path):
    root, counter = tmp_path / "cache", tmp_path / "counter.txt"
    start = time.time() + 2.0
    procs = [
        subprocess.Popen([sys.executable, "-c", RACE_SCRIPT, str(root), str(counter), str(start)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(out.split())
    assert counter.read_text().splitlines() == ["built"]
    statuses = sorted(status for status, _ in results)
    assert statuses == ["hit", "hit", "hit", "miss"]
    paths = {path for _, path in results}
    assert len(paths) == 1
    assert Path(paths.pop()).read_bytes() == b"raced artifact"


# -- default location ------------------------------------------------------------------------

def test_default_cache_dir_honours_harness_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "mine"
    assert ArtifactCache().root == tmp_path / "mine"


def test_default_cache_dir_falls_back_to_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("HARNESS_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mvsnet-trt-harness"


def test_default_cache_dir_falls_back_to_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("HARNESS_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "mvsnet-trt-harness"


def test_empty_harness_cache_dir_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mvsnet-trt-harness"
