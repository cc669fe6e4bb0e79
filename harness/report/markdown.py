"""report.md from a run record: pandas tables rendered as Markdown (no tabulate needed)."""

from __future__ import annotations

import math

import pandas as pd

from harness.report.machine import one_line
from harness.report.record import RunRecord


def to_markdown(frame: pd.DataFrame, float_format: str = "{:.3g}") -> str:
    if frame.empty:
        return "_(none)_\n"

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else float_format.format(value)
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def parity_frame(record: RunRecord) -> pd.DataFrame:
    rows = []
    for row in record.parity:
        metrics = row.get("metrics", {})
        depth, conf = metrics.get("depth", {}), metrics.get("photometric_confidence", {})
        rows.append({
            "case": row.get("case"), "candidate": row.get("candidate"), "reference": row.get("reference"),
            "workaround": row.get("workaround"), "exporter": row.get("exporter"), "graph": row.get("variant"),
            "depth max sq err (mm²)": depth.get("max_sq_err"), "depth max abs (mm)": depth.get("max_abs"),
            "depth p99 abs (mm)": depth.get("p99_abs"), ">1mm": depth.get("frac_over_1mm"),
            "index flips": depth.get("index_flips"), "conf max sq err": conf.get("max_sq_err"),
            "conf agreement": conf.get("agreement"), "passed": row.get("passed"),
        })
    return pd.DataFrame(rows)


def artifacts_frame(record: RunRecord) -> pd.DataFrame:
    return pd.DataFrame(record.artifacts)


def accuracy_frame(record: RunRecord) -> pd.DataFrame:
    return pd.DataFrame(record.accuracy)


TIMING_COLUMNS = {
    "case": "case", "backend": "backend", "median_ms": "median ms", "p90_ms": "p90", "p99_ms": "p99", "cov": "CoV",
    "e2e_median_ms": "with copies ms", "speedup_vs_torch_fp32": "speed-up", "depth_max_abs_mm": "depth max |err| mm",
    "repeat_spread": "spread of repeats", "parity_passed": "parity", "skipped": "skipped",
}


def timing_frame(record: RunRecord) -> pd.DataFrame:
    rows = []
    for row in record.timing:
        out = {label: row.get(key) for key, label in TIMING_COLUMNS.items()}
        trtexec = row.get("trtexec_gpu_compute") or {}
        out["trtexec GPU median ms"] = trtexec.get("median_ms")  # same engine, timed by trtexec
        out["trtexec GPU p99 ms"] = trtexec.get("p99_ms")
        rows.append(out)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.dropna(axis=1, how="all")


def tables(record: RunRecord) -> dict[str, pd.DataFrame]:
    return {"parity": parity_frame(record), "artifacts": artifacts_frame(record),
            "accuracy": accuracy_frame(record), "timing": timing_frame(record)}


def session_line(session: dict) -> str:  # type: ignore[type-arg]
    counts = ", ".join(f"{session.get(k, 0)} {k}" for k in ("passed", "failed", "skipped", "xfailed", "errors"))
    return f"{counts} in {session.get('wall_s', 0):.1f} s"


def render_report(record: RunRecord, frames: dict[str, pd.DataFrame] | None = None,
                  figures: list[str] | None = None) -> str:
    frames = frames or tables(record)
    machine = record.machine
    parts = [
        f"# MVSNet conversion report ({record.kind}, {record.created_utc})\n",
        one_line(machine, record.profile) + "\n",
        f"commit `{machine.get('commit')}`{' (dirty)' if machine.get('dirty') else ''}\n",
    ]
    if not frames["parity"].empty:
        parts += ["## Parity against torch strict FP32\n",
                  "Max squared error is the source article's metric; depth in mm.\n", to_markdown(frames["parity"])]
    if not frames["accuracy"].empty:
        parts += ["## Accuracy against ground truth\n", to_markdown(frames["accuracy"])]
    if not frames["timing"].empty:
        parts += ["## Timing\n", "CUDA events around one inference (inputs already on the device); \"with copies\" "
                  "adds host-to-device and device-to-host copies. Speed-up is over torch eager strict FP32.\n",
                  to_markdown(frames["timing"])]
        parts += [f"![{name.removesuffix('.png')}]({name})\n" for name in figures or []]
        commands = [f"- {r['case']} {r['backend']}: `{r['trtexec']}`" for r in record.timing if r.get("trtexec")]
        if commands:
            parts += ["### trtexec equivalents (same ONNX, shapes, workspace, TF32, optimisation level)\n",
                      "\n".join(commands) + "\n"]
        warned = [f"- {r['case']} {r['backend']}: {w}" for r in record.timing for w in r.get("warnings", [])]
        if warned:
            parts += ["### Measurement warnings\n", "\n".join(warned) + "\n"]
    if not frames["artifacts"].empty:
        parts += ["## Artifacts\n", to_markdown(frames["artifacts"])]
    if record.attribution:
        from harness.localize import attribution_table

        parts.append("## Error attribution along the chain (depth, mm)\n")
        for case in dict.fromkeys(str(r["case"]) for r in record.attribution):
            rows = [r for r in record.attribution if r["case"] == case]
            parts.append(f"case {case}:\n\n```\n{attribution_table(rows)}\n```\n")
    if record.localisation:
        parts += ["## Localisation (stage probes)\n", *[f"```\n{t}\n```\n" for t in record.localisation]]
    if record.session:
        parts += ["## Session\n", session_line(record.session) + "\n"]
        if record.session.get("slowest"):
            slow = pd.DataFrame(record.session["slowest"], columns=["test", "seconds"])
            parts += ["Slowest tests (setup, call and teardown):\n", to_markdown(slow, "{:.2f}")]
    if record.notes:
        parts += ["## Notes\n", *[f"- {n}\n" for n in record.notes]]
    parts += ["## Configuration\n", "```\n" + "\n".join(f"{k}: {v}" for k, v in record.config.items()) + "\n```\n"]
    return "\n".join(parts)
