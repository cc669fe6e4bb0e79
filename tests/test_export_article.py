"""examples/export_article.py follows the harness's rules: every argument (its own and those it
hands to ``python -m harness check``) is checked before any export; a bad one is one line on
stderr naming the script's own flag, exit 2, no traceback, and no output folder left behind."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "export_article.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("export_article", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def never_exports(example, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("exported before the arguments were checked")

    monkeypatch.setattr(example, "export", fail)


@pytest.mark.parametrize(("argv", "line"), [
    (["--case", "huge"], "error: --case | unknown case: huge. Expected: one of small, seed, dtu. Fix: pass --case small."),
    (["--bogus", "1"], "error: examples/export_article.py | bad arguments: unrecognized arguments: --bogus 1."),
    (["--trt-workspace", "abc"], "error: examples/export_article.py | bad arguments: argument --trt-workspace: "
                                 "invalid int value: 'abc'."),
    (["--align-corners", "yes"], "error: examples/export_article.py | bad arguments: argument --align-corners: "
                                 "invalid choice: 'yes'"),
    (["--weights", "{tmp}/nowhere.ckpt"], "error: {tmp}/nowhere.ckpt | checkpoint not found: no such file."),
    (["--weights", "{tmp}/notes.txt"], "error: {tmp}/notes.txt | not a torch checkpoint file: it begins with text: "
                                       "'see the release page'."),
])
def test_a_bad_argument_is_one_line_exit_2_before_any_work_and_leaves_nothing(example, never_exports, tmp_path,
                                                                               capsys, argv, line):
    (tmp_path / "notes.txt").write_text("see the release page\n")
    out = tmp_path / "build"
    status = example.main(["--out", str(out), *(a.format(tmp=tmp_path) for a in argv)])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(line.format(tmp=tmp_path)), lines
    assert "--harness-" not in lines[0]  # the script's flags, not the pytest plugin's
    assert not out.exists()


def test_a_failed_export_removes_the_folder_it_created(example, monkeypatch, tmp_path):
    out = tmp_path / "build"

    def half_done(path, *args, **kwargs):
        path.parent.mkdir(parents=True)
        (path.parent / "partial.onnx").write_bytes(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(example, "export", half_done)
    with pytest.raises(KeyboardInterrupt):
        example.main(["--out", str(out), "--no-check"])
    assert not out.exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(KeyboardInterrupt):
        example.main(["--out", str(existing / "sub"), "--no-check"])
    assert existing.is_dir() and not (existing / "sub").exists()


def test_the_script_run_as_the_readme_says_refuses_a_typo_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "b"), "--cases", "small"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: examples/export_article.py | bad arguments: unrecognized arguments: "
                                  "--cases small")
    assert not (tmp_path / "b").exists()
