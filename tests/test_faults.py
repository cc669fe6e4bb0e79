"""Faults (issue 6, part 4): corrupt artifacts, builds killed mid-way, concurrent workers on a
cold cache, and reports that are written atomically and never overwritten.

Each test uses its own cache and report folders under tmp_path. The unit-level cache checks
(hash mismatch, missing meta.json, lock timeouts) live in tests/convert/test_cache.py; the
engine's own truncation test in tests/convert/test_engine.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import onnx
import pytest
import torch

from harness import fileio
from harness.backends.onnxruntime_runner import OrtRunner
from harness.chain import Chain, ChainConfig
from harness.convert.cache import ArtifactCache, canonical_key, sha256_file
from harness.errors import HarnessError
from harness.report import write as write_module
from harness.report.record import RunRecord, load_record
from harness.report.write import write_run

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _chain(cache: Path) -> Chain:
    return Chain(ChainConfig(cache_dir=cache, device="cpu"))


def _small_onnx(cache: Path, variant: str = "raw"):
    chain = _chain(cache)
    try:
        return chain.onnx("small", "precomputed", "torchscript", variant)
    finally:
        chain.close()


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> Path:
    """A cache holding the small raw graph, built once; tests corrupt copies of it."""
    cache = tmp_path_factory.mktemp("faults") / "warm-cache"
    artifact = _small_onnx(cache)
    assert artifact.cache_status == "miss"
    return cache


@pytest.fixture
def cache_copy(warm_cache, tmp_path) -> Path:
    return Path(shutil.copytree(warm_cache, tmp_path / "cache"))


def _entry(cache: Path, kind: str = "onnx") -> Path:
    (folder,) = [p for p in (cache / kind).iterdir() if p.is_dir()]
    return folder


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, one byte different: only the hash can tell
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- corrupt ONNX in the cache


@pytest.mark.parametrize("damage, reason", [
    (_truncate, "truncated or modified"),
    (_flip_a_byte, "truncated or modified"),
    (lambda path: path.unlink(), "model.onnx missing"),
    (lambda path: (path.parent / "meta.json").write_text("{\"key\": "), "unreadable meta.json"),
    (lambda path: (path.parent / "meta.json").unlink(), "no meta.json"),
], ids=["truncated", "one-byte-flipped", "artifact-deleted", "meta-json-truncated", "meta-json-deleted"])
def test_damaged_onnx_in_the_cache_is_rebuilt_through_chain_onnx_with_a_warning(cache_copy, damage, reason):
    folder = _entry(cache_copy)
    good = json.loads((folder / "meta.json").read_text())["sha256"]
    damage(folder / "model.onnx")
    with pytest.warns(UserWarning, match=f"artifact cache: onnx entry .* is unusable \\(.*{reason}"):
        rebuilt = _small_onnx(cache_copy)
    assert rebuilt.cache_status == "rebuilt"
    assert rebuilt.path == folder / "model.onnx"
    assert sha256_file(rebuilt.path) == rebuilt.sha256 == good  # the export is deterministic
    onnx.checker.check_model(onnx.load(str(rebuilt.path)))
    assert _small_onnx(cache_copy).cache_status == "hit"


def test_rebuilt_onnx_runs_and_matches_the_original(cache_copy, warm_cache):
    _truncate(_entry(cache_copy) / "model.onnx")
    with pytest.warns(UserWarning, match="truncated or modified"):
        rebuilt = _small_onnx(cache_copy)
    chain = _chain(warm_cache)
    feed = chain.workaround_feed("small", "precomputed")
    with OrtRunner(rebuilt.path) as fresh, OrtRunner(_entry(warm_cache) / "model.onnx") as original:
        a, b = fresh.infer(feed), original.infer(feed)
    assert all(torch.equal(a[name], b[name]) for name in a)
    chain.close()


def test_damaged_simplified_onnx_is_rebuilt_with_a_warning(cache_copy):
    simplified = _small_onnx(cache_copy, "simplified")
    assert simplified.cache_status == "miss"
    _truncate(simplified.path)
    with pytest.warns(UserWarning, match="onnx-simplified entry .*truncated or modified"):
        again = _small_onnx(cache_copy, "simplified")
    assert again.cache_status == "rebuilt" and again.sha256 == simplified.sha256
    onnx.checker.check_model(onnx.load(str(again.path)))


@pytest.mark.parametrize("content", [b"", b"\x08\x07 not protobuf" * 40, b"ir_version: 8\n"],
                         ids=["empty", "garbage", "text"])
def test_corrupt_onnx_file_handed_to_ort_runner_is_reported_as_a_harness_error(tmp_path, content):
    """Outside the cache there is no hash to check: the runner must still report the file."""
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    try:
        OrtRunner(path).prepare()
    except HarnessError as exc:
        assert str(path) in str(exc) and " Fix: " in str(exc)
    except Exception as exc:  # noqa: BLE001 - the point: nothing but the harness's error may escape
        pytest.fail(f"OrtRunner.prepare on a corrupt ONNX file raised {type(exc).__module__}.{type(exc).__name__}: "
                    f"{str(exc)[:200]}")
    else:
        pytest.fail("a corrupt ONNX file was accepted")


def test_truncated_onnx_from_the_cache_is_reported_by_ort_runner(warm_cache, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes((_entry(warm_cache) / "model.onnx").read_bytes()[:5000])
    with pytest.raises(HarnessError) as info:
        OrtRunner(path).prepare()
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- a build killed mid-way (SIGKILL)

KILLED_BUILD = """
import os, sys, time
from pathlib import Path
from harness import fileio
from harness.convert.cache import ArtifactCache

root, mode, written = sys.argv[1], sys.argv[2], Path(sys.argv[3])
FIELDS = {"exporter": "torchscript", "opset": 17, "case": "killed"}

def build(path):
    if mode == "partial":          # a builder writing straight into the entry, killed half-way
        with open(path, "wb") as handle:
            handle.write(b"half an onnx file")
            handle.flush()
            written.touch()
            time.sleep(120)
    elif mode == "atomic":         # the harness's atomic writer, killed before its rename
        def stall(fd):
            written.touch()
            time.sleep(120)
        fileio.os.fsync = stall
        fileio.atomic_write_bytes(path, b"complete bytes that never get renamed")
    else:                          # the artifact is complete, killed before meta.json
        path.write_bytes(b"complete artifact")
        written.touch()
        time.sleep(120)

ArtifactCache(root).get_or_build("onnx", FIELDS, "model.onnx", build)
"""
KILLED_FIELDS = {"exporter": "torchscript", "opset": 17, "case": "killed"}


def _start_and_kill(args: list[str], written: Path, timeout: float = 120.0) -> None:
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            cwd=PROJECT_ROOT)
    try:
        deadline = time.time() + timeout
        while not written.exists():
            if proc.poll() is not None:
                pytest.fail(f"the build process ended before it was killed: {proc.communicate()[1].decode()[-2000:]}")
            assert time.time() < deadline, "the build never reached the point where it is killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("mode", ["partial", "atomic", "complete-without-meta"])
def test_build_killed_mid_way_leaves_no_valid_entry_and_the_next_build_succeeds(tmp_path, mode):
    root, written = tmp_path / "cache", tmp_path / "written"
    _start_and_kill(["-c", KILLED_BUILD, str(root), mode, str(written)], written)

    cache = ArtifactCache(root, lock_timeout_s=10)  # the dead process's lock must not block anyone
    folder = cache.entry_dir("onnx", canonical_key(KILLED_FIELDS))
    assert not (folder / "meta.json").exists()
    meta, reason = cache._valid(folder, "model.onnx", canonical_key(KILLED_FIELDS))
    assert meta is None and reason == "no meta.json (a build did not finish)"
    if mode == "atomic":
        assert not (folder / "model.onnx").exists()  # only a hidden .part file, never a half artifact

    builds = []

    def build(path: Path) -> None:
        builds.append(path)
        fileio.atomic_write_bytes(path, b"the real artifact")

    with pytest.warns(UserWarning, match="no meta.json"):
        entry = cache.get_or_build("onnx", KILLED_FIELDS, "model.onnx", build)
    assert entry.status == "rebuilt" and len(builds) == 1
    assert entry.path.read_bytes() == b"the real artifact"
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.onnx"]  # no leftover .part file
    assert cache.get_or_build("onnx", KILLED_FIELDS, "model.onnx", build).status == "hit"


KILLED_EXPORT = """
import sys, time
from pathlib import Path
from harness.chain import Chain, ChainConfig
from harness.convert import onnx_export

cache, written = sys.argv[1], Path(sys.argv[2])

def half_then_die(path, data):
    Path(path).write_bytes(data[: len(data) // 2])
    written.touch()
    time.sleep(120)

onnx_export.atomic_write_bytes = half_then_die
Chain(ChainConfig(cache_dir=cache, device="cpu")).onnx("small", "precomputed", "torchscript")
"""


def test_export_killed_while_writing_the_onnx_is_rebuilt_by_the_next_chain(tmp_path):
    cache, written = tmp_path / "cache", tmp_path / "written"
    _start_and_kill(["-c", KILLED_EXPORT, str(cache), str(written)], written)
    folder = _entry(cache)
    assert (folder / "model.onnx").is_file() and not (folder / "meta.json").exists()
    with pytest.warns(UserWarning, match="no meta.json"):
        artifact = _small_onnx(cache)
    assert artifact.cache_status == "rebuilt"
    onnx.checker.check_model(onnx.load(str(artifact.path)))
    assert sha256_file(artifact.path) == artifact.sha256


# ---------------------------------------------------------------- 3 pytest-xdist workers, cold cache

RACE_TEST = """
import os, time
from pathlib import Path


def test_export_small_graph(chain):
    chain.model, chain.feed("small")  # everything but the export, so the workers reach the cache together
    ready = Path(os.environ["RACE_READY"])
    worker = os.environ.get("PYTEST_XDIST_WORKER", "master")
    (ready / worker).touch()
    deadline = time.time() + 120
    while len(list(ready.iterdir())) < 3 and time.time() < deadline:
        time.sleep(0.01)
    artifact = chain.onnx("small", "precomputed", "torchscript")
    with open(os.environ["RACE_LOG"], "a") as log:
        log.write(f"{worker} {artifact.cache_status} {artifact.sha256}\\n")
"""


def test_xdist_workers_on_a_cold_cache_export_the_small_graph_once(tmp_path):
    project, cache, ready, log = tmp_path / "project", tmp_path / "cache", tmp_path / "ready", tmp_path / "race.log"
    project.mkdir()
    ready.mkdir()
    (project / "test_race.py").write_text(textwrap.dedent(RACE_TEST))
    env = {**ENV, "RACE_READY": str(ready), "RACE_LOG": str(log)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "3", "--dist", "each", "-p", "harness.plugin", "-p", "no:cacheprovider",
         "-q", "--harness-no-report", "--harness-device", "cpu", "--harness-cache-dir", str(cache), "test_race.py"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line.split() for line in log.read_text().splitlines()]
    assert sorted(worker for worker, _, _ in rows) == ["gw0", "gw1", "gw2"]
    assert sorted(status for _, status, _ in rows) == ["hit", "hit", "miss"]  # one export, two waits
    assert len({sha for _, _, sha in rows}) == 1
    entries = [p for p in (cache / "onnx").iterdir() if p.is_dir()]
    assert len(entries) == 1
    meta = json.loads((entries[0] / "meta.json").read_text())
    assert meta["sha256"] == rows[0][2] and meta["created_utc"]
    assert sha256_file(entries[0] / "model.onnx") == meta["sha256"]


# ---------------------------------------------------------------- reports: atomic, never overwritten


MACHINE = {"gpus": [], "versions": {"torch": "2.x", "onnx": "1.x", "onnxsim": "0.x", "onnxruntime": "1.y"},
           "commit": "abc123", "dirty": False}


def _record(note: str) -> RunRecord:
    return RunRecord(kind="run", profile="quick", config={"cases": "small"}, machine=dict(MACHINE), notes=[note])


def test_write_run_twice_in_the_same_second_gives_two_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(write_module, "utc_stamp", lambda now=None: "20260101T000000Z")
    first = write_run(_record("first"), tmp_path)
    second = write_run(_record("second"), tmp_path)
    assert (first.name, second.name) == ("20260101T000000Z", "20260101T000000Z-2")
    assert load_record(first).notes == ["first"] and load_record(second).notes == ["second"]


def test_concurrent_write_runs_in_the_same_second_never_share_a_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(write_module, "utc_stamp", lambda now=None: "20260101T000000Z")
    folders: list[Path] = []
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            folders.append(write_run(_record(f"run {index}"), tmp_path))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(folders)) == 8
    assert sorted(note for f in folders for note in load_record(f).notes) == sorted(f"run {i}" for i in range(8))


def test_write_run_never_touches_an_existing_folder_of_the_same_stamp(tmp_path, monkeypatch):
    monkeypatch.setattr(write_module, "utc_stamp", lambda now=None: "20260101T000000Z")
    earlier = tmp_path / "20260101T000000Z"
    earlier.mkdir()
    (earlier / "report.md").write_text("an earlier report\n")
    folder = write_run(_record("new"), tmp_path)
    assert folder.name == "20260101T000000Z-2"
    assert [p.name for p in earlier.iterdir()] == ["report.md"]
    assert (earlier / "report.md").read_text() == "an earlier report\n"


def test_crash_while_rendering_report_md_leaves_run_json_intact_and_no_report(tmp_path, monkeypatch):
    from harness.report import markdown

    def crash(*args, **kwargs):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(markdown, "render_report", crash)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_run(_record("kept"), tmp_path)
    (folder,) = list(tmp_path.iterdir())
    assert load_record(folder).notes == ["kept"]
    assert not (folder / "report.md").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".part")]


def test_crash_half_way_through_writing_report_md_leaves_no_partial_report(tmp_path, monkeypatch):
    real_fdopen = os.fdopen

    class DiesHalfWay:
        def __init__(self, handle) -> None:
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.handle.close()

        def write(self, data: bytes) -> int:
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise OSError(28, "No space left on device")

    def fdopen(fd, mode="r", *args, **kwargs):
        handle = real_fdopen(fd, mode, *args, **kwargs)
        return DiesHalfWay(handle) if ".report.md." in os.readlink(f"/proc/self/fd/{fd}") else handle

    monkeypatch.setattr(fileio.os, "fdopen", fdopen)
    with pytest.raises(OSError, match="No space left"):
        write_run(_record("kept"), tmp_path)
    (folder,) = list(tmp_path.iterdir())
    assert load_record(folder).notes == ["kept"]
    assert not (folder / "report.md").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


KILLED_REPORT = """
import sys, time
from pathlib import Path
from harness import fileio
from harness.report.record import RunRecord
from harness.report.write import write_run

root, written = sys.argv[1], Path(sys.argv[2])
real_fsync = fileio.os.fsync

def fsync(fd):
    real_fsync(fd)
    if ".report.md." in fileio.os.readlink(f"/proc/self/fd/{fd}"):
        written.touch()      # report.md's bytes are in its temporary file: die before the rename
        time.sleep(120)

fileio.os.fsync = fsync
machine = {"gpus": [], "versions": {"torch": "2.x", "onnx": "1.x", "onnxsim": "0.x", "onnxruntime": "1.y"},
           "commit": "abc123", "dirty": False}
write_run(RunRecord(kind="run", profile="quick", config={"cases": "small"}, machine=machine, notes=["killed"]), root)
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the file being written")
def test_report_writer_killed_mid_report_leaves_run_json_intact_and_never_a_partial_report(tmp_path):
    reports, written = tmp_path / "reports", tmp_path / "written"
    _start_and_kill(["-c", KILLED_REPORT, str(reports), str(written)], written)
    (folder,) = list(reports.iterdir())
    assert load_record(folder).notes == ["killed"]
    assert not (folder / "report.md").exists()
    # a later run gets its own folder and leaves the crashed one as it was
    before = sorted(p.name for p in folder.iterdir())
    later = write_run(_record("later"), reports)
    assert later != folder and (later / "report.md").is_file()
    assert sorted(p.name for p in folder.iterdir()) == before


# -- an interrupt during a cold export is not an export failure ----------------------------------

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_during_a_cold_export_ends_the_run_with_one_line_and_keeps_the_finished_leg(tmp_path, signum):
    # two legs, two graphs: the first leg finishes, the second export is signalled while inside the
    # exporter's error handling (the hook waits there; the test waits on its line, never a sleep)
    from harness.convert.onnx_export import PAUSE_ENV

    reports = tmp_path / "reports"
    args = ["-m", "harness", "run", "--cases", "small", "--backends", "ort-cpu", "--workarounds", "precomputed,closed_form",
            "--variants", "raw", "--device", "cpu", "--cache-dir", str(tmp_path / "empty-cache"), "--report-dir", str(reports)]
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, PAUSE_ENV: "2"}, cwd=PROJECT_ROOT)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # ends if the process does; the hook gives up after 60 s
            seen.append(line)
            if line.startswith("export paused for a test"):
                proc.send_signal(signum)
                break
        else:
            pytest.fail(f"the second export never started: {''.join(seen)[-2000:]}")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err + out and "export failed" not in err + out
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith(f"interrupted by {name}: kept 1 of 2 legs, marked incomplete: ")
    assert any(line.startswith("ok   ort-cpu raw precomputed/torchscript small") for line in out.splitlines())  # printed
    (folder,) = reports.iterdir()
    record = load_record(folder)
    assert record.config["incomplete"] is True
    assert [row["workaround"] for row in record.parity] == ["precomputed"]
