"""Unit tests of harness/report/record.py: JSON run records that are never overwritten."""

from __future__ import annotations

import json

import pytest

from harness.errors import DataFormatError, MissingFile
from harness.report.record import SCHEMA_VERSION, RunRecord, load_record
from harness.report.write import write_run

MACHINE = {"gpus": [], "versions": {"torch": "2.x", "onnx": "1.x", "onnxsim": "0.x", "onnxruntime": "1.y"},
           "commit": "abc123", "dirty": False}


def _parity_row(passed: bool = True) -> dict:
    return {
        "id": "ort-cpu-raw-vs-torch-fp32-precomputed-torchscript-small", "case": "small", "candidate": "ort-cpu",
        "reference": "torch-fp32", "workaround": "precomputed", "exporter": "torchscript", "variant": "raw",
        "precision": "fp32", "passed": passed,
        "metrics": {"depth": {"max_sq_err": 2.5e-5, "max_abs": 0.005, "p99_abs": 0.001, "frac_over_1mm": 0.0,
                              "index_flips": 0.0},
                    "photometric_confidence": {"max_sq_err": 8e-7, "agreement": 1.0}},
    }


def _record(**kwargs) -> RunRecord:
    return RunRecord(kind="run", profile="run", config={"cases": "small"}, machine=dict(MACHINE),
                     parity=[_parity_row()], **kwargs)


def test_new_record_has_schema_version_time_and_machine():
    record = RunRecord(kind="pytest", profile="quick")
    assert record.schema_version == SCHEMA_VERSION
    assert record.created_utc.endswith("+00:00")
    assert "versions" in record.machine and "commit" in record.machine
    assert record.parity == [] and record.notes == []


def test_record_round_trips_through_dict_and_json():
    record = _record(notes=["skipped ort-cuda: no CUDA device"], accuracy=[{"case": "small", "mae_mm": 1.5}])
    data = record.to_dict()
    assert RunRecord.from_dict(data) == record
    assert RunRecord.from_dict(json.loads(json.dumps(data))) == record


def test_from_dict_ignores_unknown_keys():
    data = {**_record().to_dict(), "added_in_a_later_version": 1}
    assert RunRecord.from_dict(data) == _record(created_utc=data["created_utc"])


@pytest.mark.parametrize("version", [None, 0, SCHEMA_VERSION + 1, "1"])
def test_from_dict_refuses_another_schema_version(version):
    data = _record().to_dict()
    data["schema_version"] = version
    with pytest.raises(DataFormatError, match="unsupported record schema"):
        RunRecord.from_dict(data, "old.json")


def test_load_record_refuses_a_wrong_schema_version(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({**_record().to_dict(), "schema_version": 99}))
    with pytest.raises(DataFormatError, match="unsupported record schema") as info:
        load_record(path)
    assert str(path) in str(info.value)


def test_load_record_refuses_invalid_json(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"schema_version": 1, "kind": ')  # truncated
    with pytest.raises(DataFormatError, match="not valid JSON") as info:
        load_record(path)
    assert isinstance(info.value, ValueError)


def test_load_record_refuses_a_json_list(tmp_path):
    path = tmp_path / "run.json"
    path.write_text("[1, 2]")
    with pytest.raises(DataFormatError, match="not a run record"):
        load_record(path)


def test_load_record_of_a_missing_file_is_missing_file(tmp_path):
    with pytest.raises(MissingFile, match="run record not found") as info:
        load_record(tmp_path / "nope" / "run.json")
    assert isinstance(info.value, FileNotFoundError)


def test_write_run_writes_run_json_report_and_parity_csv(tmp_path):
    record = _record()
    folder = write_run(record, tmp_path / "reports")
    assert folder.parent == tmp_path / "reports"
    names = {p.name for p in folder.iterdir()}
    assert {"run.json", "report.md", "parity.csv"} <= names
    assert "accuracy.csv" not in names and "timing.csv" not in names  # empty tables are not written
    assert not [n for n in names if n.endswith(".part")]
    assert load_record(folder) == record
    assert load_record(folder / "run.json") == record
    assert "ort-cpu" in (folder / "parity.csv").read_text()
    assert (folder / "report.md").read_text().startswith("# MVSNet conversion report (run, ")


def test_write_run_writes_extra_files(tmp_path):
    folder = write_run(_record(), tmp_path, extra_files={"log.txt": "hello\n"})
    assert (folder / "log.txt").read_text() == "hello\n"


def test_write_run_never_overwrites_within_the_same_second(tmp_path, monkeypatch):
    from harness.report import write as write_module

    monkeypatch.setattr(write_module, "utc_stamp", lambda now=None: "20260101T000000Z")
    first = write_run(_record(notes=["first"]), tmp_path)
    second = write_run(_record(notes=["second"]), tmp_path)
    assert (first.name, second.name) == ("20260101T000000Z", "20260101T000000Z-2")
    assert load_record(first).notes == ["first"]
    assert load_record(second).notes == ["second"]


def test_write_run_called_twice_creates_two_folders(tmp_path):
    first = write_run(_record(), tmp_path)
    second = write_run(_record(), tmp_path)
    assert first != second
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name])
