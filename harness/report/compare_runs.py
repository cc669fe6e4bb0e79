"""Across runs: one cross-GPU table (median ms and speed-up over torch eager strict FP32, per
backend per GPU) and a regression gate against a stored baseline of the same GPU model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import InvalidArgument, MissingFile
from harness.report.record import RunRecord, load_record

METRICS = ("min", "median", "mean", "p90", "p95", "p99")
_FAIL_ON = re.compile(r"^(min|median|mean|p90|p95|p99):(\d+(?:\.\d+)?)%$")


def gpu_name(record: RunRecord) -> str:
    gpus = record.machine.get("gpus") or []
    if record.timing and record.timing[0].get("gpu"):
        return str(record.timing[0]["gpu"])
    return str(gpus[0]["name"]) if gpus else "cpu"


def timing_rows(record: RunRecord) -> list[dict[str, Any]]:
    gpu = gpu_name(record)
    return [
        {"gpu": gpu, "case": r["case"], "backend": r["backend"], "median_ms": r["median_ms"], "p99_ms": r.get("p99_ms"),
         "speedup": r.get("speedup_vs_torch_fp32"), "parity": r.get("parity_passed")}
        for r in record.timing if "median_ms" in r
    ]


def cross_gpu_table(records: list[RunRecord]) -> pd.DataFrame:
    """Rows (case, backend); per GPU two columns: median ms and speed-up over torch-fp32."""
    rows = [row for record in records for row in timing_rows(record)]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    gpus = list(dict.fromkeys(frame["gpu"]))
    out = frame.pivot_table(index=["case", "backend"], columns="gpu", values=["median_ms", "speedup"], aggfunc="first")
    columns = []
    for gpu in gpus:
        for value in ("median_ms", "speedup"):
            if (value, gpu) in out.columns:
                columns.append((value, gpu))
    out = out[columns]
    out.columns = [f"{gpu} {'median ms' if value == 'median_ms' else 'speed-up'}" for value, gpu in columns]
    first = out.columns[0]
    return out.reset_index().sort_values(["case", first]).reset_index(drop=True)


@dataclass(frozen=True)
class Gate:
    metric: str
    fraction: float

    @classmethod
    def parse(cls, text: str) -> Gate:
        match = _FAIL_ON.match(text.strip())
        if not match:
            raise InvalidArgument("--fail-on", "unreadable gate", observed=text, expected=f"<{'|'.join(METRICS)}>:<percent>%, e.g. median:5%",
                                  fix="pass --fail-on median:5%")
        return cls(match.group(1), float(match.group(2)) / 100.0)


def load_baselines(paths: list[Path]) -> list[tuple[Path, RunRecord]]:
    found: list[tuple[Path, RunRecord]] = []
    for path in paths:
        if path.is_dir():
            # a baselines folder of *.json, or a reports folder of <stamp>/run.json
            files = sorted(path.glob("*.json")) + sorted(path.glob("*/run.json"))
            found += [(p, load_record(p)) for p in files]
        elif path.is_file():
            found.append((path, load_record(path)))
        else:
            raise MissingFile(str(path), "baseline not found", observed="no such file or folder",
                              expected="a run.json or a folder of them (reports/baselines/)", fix="check --baseline")
    return found


def regressions(new: RunRecord, baseline: RunRecord, gate: Gate) -> list[dict[str, Any]]:
    """Every (case, backend) whose ``gate.metric`` grew by more than ``gate.fraction``."""
    key = f"{gate.metric}_ms"
    base = {(r["case"], r["backend"]): r for r in baseline.timing if key in r}
    found = []
    for row in new.timing:
        old = base.get((row["case"], row["backend"]))
        if old is None or key not in row:
            continue
        change = row[key] / old[key] - 1.0
        if row[key] > old[key] * (1.0 + gate.fraction):  # exactly at the limit passes
            found.append({"gpu": gpu_name(new), "case": row["case"], "backend": row["backend"],
                          f"baseline {gate.metric} ms": old[key], f"new {gate.metric} ms": row[key],
                          "change": f"{change:+.1%}", "limit": f"+{gate.fraction:.0%}"})
    return found


def gate_records(records: list[tuple[Path, RunRecord]], baselines: list[tuple[Path, RunRecord]],
                 gate: Gate) -> tuple[list[dict[str, Any]], list[str]]:
    """Regressions of each record against the baseline of the same GPU model; notes for records
    that have no such baseline (they are not gated, and say so)."""
    found, notes = [], []
    for path, record in records:
        gpu = gpu_name(record)
        candidates = [(p, b) for p, b in baselines if gpu_name(b) == gpu and p.resolve() != path.resolve()]
        if not candidates:
            notes.append(f"{path}: no baseline for GPU '{gpu}' (not gated)")
            continue
        found += regressions(record, candidates[-1][1], gate)
    return found, notes
