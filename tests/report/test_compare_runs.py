"""Unit tests of harness/report/compare_runs.py: the cross-GPU table, regression gates against the
baseline of the same GPU model, and baseline loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import InvalidArgument, MissingFile
from harness.report.compare_runs import (
    Gate,
    cross_gpu_table,
    gate_records,
    gpu_name,
    load_baselines,
    regressions,
    timing_rows,
)
from harness.report.record import RunRecord

H100 = "NVIDIA H100 80GB HBM3"
H200 = "NVIDIA H200"
CASES = ("seed", "dtu")
BACKENDS = ("torch-fp32", "ort-cuda-raw", "torch-fast-fp16")
# median ms per (case, backend) on the H100; the H200 is 10% faster everywhere
MEDIANS = {("seed", "torch-fp32"): 60.0, ("seed", "ort-cuda-raw"): 30.0, ("seed", "torch-fast-fp16"): 10.0,
           ("dtu", "torch-fp32"): 600.0, ("dtu", "ort-cuda-raw"): 240.0, ("dtu", "torch-fast-fp16"): 80.0}


def _row(gpu: str | None, case: str, backend: str, median_ms: float, **extra) -> dict:
    return {"case": case, "backend": backend, "gpu": gpu, "device": "cuda", "min_ms": median_ms * 0.95,
            "median_ms": median_ms, "mean_ms": median_ms * 1.01, "p90_ms": median_ms * 1.05,
            "p95_ms": median_ms * 1.08, "p99_ms": median_ms * 1.1, "parity_passed": True, **extra}


def make_record(gpu: str | None, factor: float = 1.0, slower: dict[tuple[str, str], float] | None = None,
                extra_rows: list[dict] | None = None) -> RunRecord:
    """A bench record: every (case, backend) at MEDIANS * factor, some slowed by ``slower``
    (e.g. {('seed', 'ort-cuda-raw'): 1.2}); speed-ups over torch-fp32 of the same case."""
    rows = []
    for case in CASES:
        base = MEDIANS[(case, "torch-fp32")] * factor * (slower or {}).get((case, "torch-fp32"), 1.0)
        for backend in BACKENDS:
            median = MEDIANS[(case, backend)] * factor * (slower or {}).get((case, backend), 1.0)
            rows.append(_row(gpu, case, backend, median, speedup_vs_torch_fp32=base / median))
    machine = {"gpus": [{"name": gpu}] if gpu else [], "versions": {"torch": "2.x"}, "commit": "abc", "dirty": False}
    return RunRecord(kind="bench", profile="quick", machine=machine, timing=rows + list(extra_rows or []))


def write(record: RunRecord, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.to_dict()))
    return path


# -- gpu name and rows ------------------------------------------------------------------------

def test_gpu_name_comes_from_the_timing_rows_then_the_machine():
    assert gpu_name(make_record(H100)) == H100
    record = make_record(None)
    assert gpu_name(record) == "cpu"
    record.machine["gpus"] = [{"name": H200}]
    assert gpu_name(record) == H200


def test_timing_rows_skip_rows_without_a_median():
    record = make_record(H100, extra_rows=[{"case": "seed", "backend": "trt-fp16", "gpu": H100,
                                            "skipped": "trt: tensorrt not importable"}])
    rows = timing_rows(record)
    assert len(rows) == 6
    assert "trt-fp16" not in {r["backend"] for r in rows}
    assert all(r["gpu"] == H100 for r in rows)


# -- cross-GPU table ---------------------------------------------------------------------------

@pytest.fixture
def table():
    return cross_gpu_table([make_record(H100), make_record(H200, factor=0.9)])


def test_cross_gpu_table_has_one_row_per_case_and_backend(table):
    assert len(table) == 6
    assert set(zip(table["case"], table["backend"])) == {(c, b) for c in CASES for b in BACKENDS}


def test_cross_gpu_table_has_median_and_speedup_columns_per_gpu_in_record_order(table):
    assert list(table.columns) == ["case", "backend", f"{H100} median ms", f"{H100} speed-up",
                                   f"{H200} median ms", f"{H200} speed-up"]


def test_cross_gpu_table_values(table):
    row = table[(table["case"] == "seed") & (table["backend"] == "ort-cuda-raw")].iloc[0]
    assert row[f"{H100} median ms"] == pytest.approx(30.0)
    assert row[f"{H200} median ms"] == pytest.approx(27.0)
    assert row[f"{H100} speed-up"] == pytest.approx(2.0)
    assert row[f"{H200} speed-up"] == pytest.approx(2.0)
    base = table[(table["case"] == "dtu") & (table["backend"] == "torch-fp32")].iloc[0]
    assert base[f"{H100} speed-up"] == pytest.approx(1.0)


def test_cross_gpu_table_sorts_by_case_then_fastest_first(table):
    for case in CASES:
        medians = list(table[table["case"] == case][f"{H100} median ms"])
        assert medians == sorted(medians)
    assert list(table["case"]) == sorted(table["case"])


def test_cross_gpu_table_of_records_without_timing_is_empty():
    empty = RunRecord(kind="run", profile="run", machine={"gpus": []})
    assert cross_gpu_table([empty]).empty
    assert cross_gpu_table([]).empty


def test_cross_gpu_table_leaves_a_gap_where_a_gpu_lacks_a_backend():
    h200 = make_record(H200)
    h200.timing = [r for r in h200.timing if r["backend"] != "torch-fast-fp16"]
    table = cross_gpu_table([make_record(H100), h200])
    assert len(table) == 6
    row = table[(table["case"] == "seed") & (table["backend"] == "torch-fast-fp16")].iloc[0]
    assert row[f"{H100} median ms"] == pytest.approx(10.0)
    assert row[f"{H200} median ms"] != row[f"{H200} median ms"]  # NaN


# -- gates -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "metric", "fraction"), [
    ("median:5%", "median", 0.05), ("p99:10%", "p99", 0.10), ("mean:2.5%", "mean", 0.025),
    (" min:0% ", "min", 0.0), ("p90:100%", "p90", 1.0),
])
def test_gate_parse_reads_metric_and_percent(text, metric, fraction):
    gate = Gate.parse(text)
    assert gate.metric == metric
    assert gate.fraction == pytest.approx(fraction)


@pytest.mark.parametrize("text", ["median:5", "median5%", "avg:5%", "median:-5%", "median:five%", "", "5%",
                                  "median:5%%"])
def test_gate_parse_refuses_malformed_gates_naming_the_accepted_form(text):
    with pytest.raises(InvalidArgument) as info:
        Gate.parse(text)
    message = str(info.value)
    assert "--fail-on" in message
    assert "median:5%" in message
    assert "<min|median|mean|p90|p95|p99>:<percent>%" in message


def test_regression_of_one_backend_is_reported_with_its_change():
    base = make_record(H100)
    new = make_record(H100, slower={("seed", "ort-cuda-raw"): 1.2})
    (found,) = regressions(new, base, Gate.parse("median:5%"))
    assert found["backend"] == "ort-cuda-raw"
    assert found["case"] == "seed"
    assert found["gpu"] == H100
    assert found["change"] == "+20.0%"
    assert found["limit"] == "+5%"
    assert found["baseline median ms"] == pytest.approx(30.0)
    assert found["new median ms"] == pytest.approx(36.0)


def test_slowdown_within_the_gate_passes():
    base = make_record(H100)
    new = make_record(H100, slower={("seed", "ort-cuda-raw"): 1.03, ("dtu", "torch-fp32"): 1.049})
    assert regressions(new, base, Gate.parse("median:5%")) == []


def test_slowdown_of_exactly_the_limit_passes():
    # "grew by more than the gate": 10.0 -> 10.5 ms is +5.0%, not more
    base = make_record(H100)
    base.timing[0]["median_ms"] = 10.0
    new = make_record(H100)
    new.timing[0]["median_ms"] = 10.5
    assert regressions(new, base, Gate.parse("median:5%")) == []


def test_faster_runs_are_never_regressions():
    assert regressions(make_record(H100, factor=0.5), make_record(H100), Gate.parse("median:0%")) == []


def test_regressions_use_the_gated_metric():
    base = make_record(H100)
    new = make_record(H100)
    new.timing[1]["p99_ms"] = base.timing[1]["p99_ms"] * 1.5  # only the tail got worse
    assert regressions(new, base, Gate.parse("median:5%")) == []
    (found,) = regressions(new, base, Gate.parse("p99:5%"))
    assert found["backend"] == new.timing[1]["backend"] and found["change"] == "+50.0%"
    assert "baseline p99 ms" in found


def test_rows_missing_from_the_baseline_or_skipped_are_not_gated():
    base = make_record(H100)
    base.timing = [r for r in base.timing if r["backend"] != "torch-fast-fp16"]
    new = make_record(H100, slower={("seed", "torch-fast-fp16"): 3.0},
                      extra_rows=[{"case": "seed", "backend": "trt-fp16", "gpu": H100, "skipped": "no TensorRT"}])
    assert regressions(new, base, Gate.parse("median:5%")) == []


def test_gate_records_picks_the_baseline_of_the_same_gpu_model(tmp_path):
    # the H200 baseline is much faster: gating the H100 record against it would flag everything
    h100_base = write(make_record(H100), tmp_path / "baselines" / "h100.json")
    h200_base = write(make_record(H200, factor=0.5), tmp_path / "baselines" / "h200.json")
    new = make_record(H100, slower={("dtu", "torch-fast-fp16"): 1.2})
    baselines = load_baselines([tmp_path / "baselines"])
    assert [p for p, _ in baselines] == [h100_base, h200_base]
    found, notes = gate_records([(tmp_path / "new.json", new)], baselines, Gate.parse("median:5%"))
    assert notes == []
    assert [(r["gpu"], r["case"], r["backend"], r["change"]) for r in found] == [
        (H100, "dtu", "torch-fast-fp16", "+20.0%")]


def test_gate_records_reports_records_without_a_baseline_as_not_gated(tmp_path):
    baselines = [(tmp_path / "h100.json", make_record(H100))]
    a100 = make_record("NVIDIA A100-SXM4-80GB", factor=5.0)
    found, notes = gate_records([(tmp_path / "a100.json", a100)], baselines, Gate.parse("median:5%"))
    assert found == []
    (note,) = notes
    assert "NVIDIA A100-SXM4-80GB" in note and "not gated" in note and "a100.json" in note


def test_gate_records_never_gates_a_record_against_itself(tmp_path):
    path = write(make_record(H100, slower={("seed", "torch-fp32"): 2.0}), tmp_path / "runs" / "new.json")
    baselines = load_baselines([path])
    found, notes = gate_records([(path, baselines[0][1])], baselines, Gate.parse("median:5%"))
    assert found == []
    assert len(notes) == 1 and "not gated" in notes[0]


# -- baselines ---------------------------------------------------------------------------------

def test_load_baselines_reads_files_and_folders(tmp_path):
    a = write(make_record(H100), tmp_path / "folder" / "a.json")
    b = write(make_record(H200), tmp_path / "folder" / "b.json")
    (tmp_path / "folder" / "notes.txt").write_text("not a record")
    single = write(make_record(H100, factor=2.0), tmp_path / "single.json")
    found = load_baselines([tmp_path / "folder", single])
    assert [p for p, _ in found] == [a, b, single]
    assert [gpu_name(r) for _, r in found] == [H100, H200, H100]
    assert found[2][1].timing[0]["median_ms"] == pytest.approx(120.0)


def test_load_baselines_of_an_empty_folder_is_empty(tmp_path):
    assert load_baselines([tmp_path]) == []


def test_load_baselines_refuses_a_missing_path(tmp_path):
    missing = tmp_path / "no-such-baselines"
    with pytest.raises(MissingFile) as info:
        load_baselines([missing])
    assert str(missing) in str(info.value)
    assert "--baseline" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
