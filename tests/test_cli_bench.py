"""Unit tests of harness/cli.py's benchmark commands: ``bench`` (timing report), ``compare``
(cross-GPU table and regression gate) and ``train``."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from harness import timing
from harness.cli import build_parser, main
from harness.model.checkpoint import load_checkpoint
from harness.report.record import RunRecord, load_record
from harness.report.write import write_run

H100 = "NVIDIA H100 80GB HBM3"
H200 = "NVIDIA H200"
MEDIANS = {("seed", "torch-fp32"): 60.0, ("seed", "ort-cuda-raw"): 30.0, ("seed", "torch-fast-fp16"): 10.0,
           ("dtu", "torch-fp32"): 600.0, ("dtu", "ort-cuda-raw"): 240.0, ("dtu", "torch-fast-fp16"): 80.0}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = timing.TimingConfig(warmup_ms=0.0, warmup_rounds=1, min_rounds=3, min_seconds=0.0)


def bench_record(gpu: str, factor: float = 1.0, slower: dict[tuple[str, str], float] | None = None) -> RunRecord:
    rows = []
    for (case, backend), median in MEDIANS.items():
        median = median * factor * (slower or {}).get((case, backend), 1.0)
        rows.append({"case": case, "backend": backend, "gpu": gpu, "device": "cuda", "median_ms": median,
                     "p90_ms": median * 1.05, "p99_ms": median * 1.1, "parity_passed": True})
    for row in rows:
        base = next(r for r in rows if r["case"] == row["case"] and r["backend"] == "torch-fp32")
        row["speedup_vs_torch_fp32"] = base["median_ms"] / row["median_ms"]
    machine = {"gpus": [{"name": gpu, "compute_capability": "9.0"}], "versions": {"torch": "2.x", "onnx": "1.x", "onnxsim": "0.x",
                                                     "onnxruntime": "1.y"}, "commit": "abc", "dirty": False}
    return RunRecord(kind="bench", profile="quick", machine=machine, timing=rows)


def dump(record: RunRecord, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.to_dict()))
    return str(path)


def _only_folder(root: Path) -> Path:
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    return folder


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


# -- compare -----------------------------------------------------------------------------------

def test_compare_prints_a_cross_gpu_table_and_writes_comparison_md(tmp_path, capsys):
    a = dump(bench_record(H100), tmp_path / "h100.json")
    b = dump(bench_record(H200, factor=0.9), tmp_path / "h200.json")
    out = tmp_path / "out"
    assert main(["compare", a, b, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[0]
    for column in (f"{H100} median ms", f"{H100} speed-up", f"{H200} median ms", f"{H200} speed-up"):
        assert column in header
    for backend in ("torch-fp32", "ort-cuda-raw", "torch-fast-fp16"):
        assert backend in printed
    folder = _only_folder(out)
    assert folder.name.endswith("-compare")
    text = (folder / "comparison.md").read_text()
    assert text.startswith("# Cross-GPU comparison")
    assert f"| case | backend | {H100} median ms |" in text
    assert a in text and b in text
    for case in ("seed", "dtu"):
        assert (folder / f"cross-gpu-{case}.png").read_bytes().startswith(PNG_SIGNATURE)
        assert f"](cross-gpu-{case}.png)" in text
    assert f"report: {folder / 'comparison.md'}" in printed


def test_compare_reads_a_run_folder_written_by_the_harness(tmp_path, capsys):
    folder = write_run(bench_record(H100), tmp_path / "runs")
    assert main(["compare", str(folder), "--out", str(tmp_path / "out")]) == 0
    assert f"{H100} median ms" in capsys.readouterr().out


def test_compare_fails_on_a_regression_against_the_baseline_of_the_same_gpu(tmp_path, capsys):
    base = dump(bench_record(H100), tmp_path / "baselines" / "h100.json")
    dump(bench_record(H200, factor=0.5), tmp_path / "baselines" / "h200.json")  # must not be used
    slowed = dump(bench_record(H100, slower={("seed", "ort-cuda-raw"): 1.2}), tmp_path / "new.json")
    out = tmp_path / "out"
    code = main(["compare", slowed, "--baseline", str(Path(base).parent), "--fail-on", "median:5%", "--out", str(out)])
    assert code == 1
    printed = capsys.readouterr().out
    assert "REGRESSIONS" in printed
    table = printed[printed.index("REGRESSIONS"):printed.index("report: ")]
    assert "ort-cuda-raw" in table and "+20.0%" in table and "seed" in table
    assert "torch-fast-fp16" not in table and "dtu" not in table  # nothing else regressed
    text = (_only_folder(out) / "comparison.md").read_text()
    assert "## Regressions (median:5%)" in text and "ort-cuda-raw" in text


def test_compare_gate_passes_a_slowdown_within_the_limit(tmp_path, capsys):
    base = dump(bench_record(H100), tmp_path / "base.json")
    new = dump(bench_record(H100, slower={("seed", "ort-cuda-raw"): 1.03}), tmp_path / "new.json")
    code = main(["compare", new, "--baseline", base, "--fail-on", "median:5%", "--out", str(tmp_path / "out")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "no regression beyond median:5%" in printed and "REGRESSIONS" not in printed


def test_compare_gate_says_which_records_have_no_baseline(tmp_path, capsys):
    base = dump(bench_record(H200), tmp_path / "h200.json")
    new = dump(bench_record(H100, factor=3.0), tmp_path / "h100.json")
    code = main(["compare", new, "--baseline", base, "--fail-on", "median:5%", "--out", str(tmp_path / "out")])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"no baseline for GPU '{H100}' (not gated)" in printed


def test_compare_of_records_without_timing_rows_exits_2(tmp_path, capsys):
    empty = RunRecord(kind="run", profile="run", machine={"gpus": [], "versions": {"torch": "2.x"}})
    path = dump(empty, tmp_path / "run.json")
    out = tmp_path / "out"
    assert main(["compare", path, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    (line,) = _error_lines(captured.err)
    assert "no timing rows" in line and "python -m harness bench" in line
    assert not out.exists() or not list(out.iterdir())


def test_compare_of_a_missing_record_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert main(["compare", str(missing), "--out", str(tmp_path / "out")]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert str(missing) in line


def test_compare_refuses_a_malformed_gate(tmp_path, capsys):
    record = dump(bench_record(H100), tmp_path / "new.json")
    code = main(["compare", record, "--baseline", record, "--fail-on", "median5", "--out", str(tmp_path / "out")])
    assert code == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "--fail-on" in line and "median:5%" in line


def test_compare_refuses_a_missing_baseline(tmp_path, capsys):
    record = dump(bench_record(H100), tmp_path / "new.json")
    missing = tmp_path / "no-baselines"
    code = main(["compare", record, "--baseline", str(missing), "--fail-on", "median:5%",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert str(missing) in line and "baseline not found" in line


def test_compare_defaults():
    args = build_parser().parse_args(["compare", "run.json"])
    assert args.fail_on is None
    assert args.baseline[0].endswith(str(Path("reports") / "baselines"))


# -- bench -------------------------------------------------------------------------------------

@pytest.fixture
def tiny_profile(monkeypatch):
    monkeypatch.setitem(timing.PROFILES, "quick", TINY)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "shared-onnx-cache"  # shared with other modules; temporary


@pytest.fixture(scope="module")
def bench_run(shared_cache, tmp_path_factory):
    """One ``bench`` run on the CPU with a tiny timing profile: (exit code, reports folder, stdout)."""
    reports = tmp_path_factory.mktemp("bench") / "reports"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setitem(timing.PROFILES, "quick", TINY)
        code = main(["bench", "--cases", "small", "--backends", "torch-fp32,ort-cpu-raw", "--cache-dir",
                     str(shared_cache), "--report-dir", str(reports), "--device", "cpu", "--label", "unit test"])
    return code, reports, printed.getvalue()


def test_bench_exits_0_and_writes_a_record_with_timing_rows(bench_run):
    code, reports, printed = bench_run
    assert code == 0
    folder = _only_folder(reports)
    assert f"report: {folder / 'report.md'}" in printed
    data = json.loads((folder / "run.json").read_text())
    assert all("_outputs" not in row for row in data["timing"])  # tensors stay in memory
    record = load_record(folder)
    assert record.kind == "bench" and record.profile == "quick"
    rows = {r["backend"]: r for r in record.timing}
    assert set(rows) == {"torch-fp32", "ort-cpu-raw"}
    for row in rows.values():
        assert row["case"] == "small" and row["median_ms"] > 0 and row["p99_ms"] >= row["median_ms"]
        assert row["parity_passed"] is True and row["rounds"] == 3
    assert rows["torch-fp32"]["speedup_vs_torch_fp32"] == 1.0
    assert record.config["label"] == "unit test"
    assert record.config["timing"]["min_rounds"] == 3  # the profile that ran
    assert any(note.startswith("small: fastest backend") for note in record.notes)


def test_bench_writes_report_md_with_a_timing_section_and_figures(bench_run):
    _, reports, _ = bench_run
    folder = _only_folder(reports)
    text = (folder / "report.md").read_text()
    assert "## Timing" in text
    assert "ort-cpu-raw" in text and "speed-up" in text
    for name in ("latency-small.png", "depth-diff-small.png"):
        assert (folder / name).read_bytes().startswith(PNG_SIGNATURE)
        assert f"]({name})" in text
    assert (folder / "timing.csv").is_file()


def test_bench_notes_skipped_backends_and_the_spread_of_repeats(tiny_profile, shared_cache, tmp_path, capsys):
    reports = tmp_path / "reports"
    code = main(["bench", "--cases", "small", "--backends", "torch-fp32,trt-fp16", "--cache-dir", str(shared_cache),
                 "--report-dir", str(reports), "--device", "cpu", "--repeat", "2"])
    assert code == 0
    record = load_record(_only_folder(reports))
    rows = {r["backend"]: r for r in record.timing}
    assert len(rows["torch-fp32"]["repeat_medians_ms"]) == 2
    assert "median_ms" not in rows["trt-fp16"]
    assert any(n.startswith("small: trt-fp16 skipped: ") for n in record.notes)
    assert record.config["repeat"] == 2
    assert "spread of repeats" in (_only_folder(reports) / "report.md").read_text()


def test_bench_report_links_only_figures_it_wrote(tiny_profile, shared_cache, tmp_path):
    # only the baseline ran: there is nothing to draw a depth difference for
    reports = tmp_path / "reports"
    assert main(["bench", "--cases", "small", "--backends", "torch-fp32", "--cache-dir", str(shared_cache),
                 "--report-dir", str(reports), "--device", "cpu"]) == 0
    folder = _only_folder(reports)
    linked = re.findall(r"\]\(([^)]+\.png)\)", (folder / "report.md").read_text())
    assert linked
    for name in linked:
        assert (folder / name).is_file(), f"report.md links {name}, which was not written"


def test_bench_refuses_an_unknown_backend(tiny_profile, shared_cache, tmp_path, capsys):
    code = main(["bench", "--cases", "small", "--backends", "tvm-fp32", "--cache-dir", str(shared_cache),
                 "--report-dir", str(tmp_path / "reports"), "--device", "cpu"])
    assert code == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "tvm-fp32" in line


def test_bench_defaults():
    args = build_parser().parse_args(["bench"])
    assert args.cases == "seed" and args.backends is None and args.profile == "quick" and args.repeat == 1


# -- train -------------------------------------------------------------------------------------

def test_train_writes_a_checkpoint_that_loads(tmp_path, capsys):
    out = tmp_path / "w.ckpt"
    code = main(["train", "--out", str(out), "--steps", "2", "--batch", "1", "--pool", "2", "--height", "64",
                 "--width", "96", "--num-depth", "16", "--device", "cpu"])
    assert code == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out
    assert "training on the CPU is very slow" in captured.err
    model = load_checkpoint(out)
    assert not model.training
    assert out.with_suffix(".state.pt").is_file()
    assert len(out.with_suffix(".log.jsonl").read_text().splitlines()) == 2


def test_train_refuses_inconsistent_sizes(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "w.ckpt"), "--steps", "1", "--batch", "4", "--pool", "2",
                 "--device", "cpu"])
    assert code == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "pool" in line
    assert not (tmp_path / "w.ckpt").exists()
