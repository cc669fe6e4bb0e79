"""Run records: one JSON document per run, never overwritten, plus the files rendered from it.

Writing a record into its run folder (with report.md and CSV tables) is
``harness.report.write.write_run``. A record holds the schema version, UTC time, commit and dirty flag, the machine (GPU, driver,
CUDA, cuDNN and library versions, TF32 state), the configuration, and per-case rows: parity,
artifacts (ONNX node counts, export times, cache status), accuracy and timing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import DataFormatError, MissingFile
from harness.report.machine import machine_info

SCHEMA_VERSION = 1


@dataclass
class RunRecord:
    kind: str  # "pytest" or "run"
    profile: str
    config: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=machine_info)
    parity: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    accuracy: list[dict[str, Any]] = field(default_factory=list)
    timing: list[dict[str, Any]] = field(default_factory=list)
    attribution: list[dict[str, Any]] = field(default_factory=list)
    localisation: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: backends that could not run here: {backend: the missing piece}
    skipped: dict[str, str] = field(default_factory=dict)
    #: what failed besides the parity legs (a degenerate reference, a precision audit, a test)
    failures: list[str] = field(default_factory=list)
    #: why the run stopped before its end (``interrupted by SIGINT after 5 of 13 legs``); "" when it finished
    incomplete: str = ""
    #: pytest runs: {passed, failed, skipped, xfailed, errors, wall_s, slowest: [[nodeid, s], ...]}
    session: dict[str, Any] = field(default_factory=dict)
    created_utc: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "record") -> RunRecord:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise DataFormatError(source, "unsupported record schema", observed=version, expected=f"schema_version {SCHEMA_VERSION}",
                                  fix="re-run the harness to produce a current record")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def load_record(path: str | Path) -> RunRecord:
    path = Path(path)
    if path.is_dir():
        path = path / "run.json"
    if not path.is_file():
        raise MissingFile(str(path), "run record not found", observed="no such file", expected="a run.json written by the harness",
                          fix="pass a reports/<stamp>/run.json path or its folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(str(path), "not valid JSON", observed=str(exc)[:200], expected="a run.json written by the harness",
                              fix="re-run the harness; the file may be truncated") from None
    if not isinstance(data, dict):
        raise DataFormatError(str(path), "not a run record", observed=type(data).__name__, expected="a JSON object")
    return RunRecord.from_dict(data, str(path))
