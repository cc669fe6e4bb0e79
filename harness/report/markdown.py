"""report.md from a run record: pandas tables rendered as Markdown (no tabulate needed)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.compare import OutputDiff
from harness.report.machine import one_line
from harness.report.record import RunRecord

#: Columns holding fractions of the pixels: rendered as percentages (the CSV keeps the numbers).
PERCENT_COLUMNS = frozenset({"depth > 1 mm", "conf agreement"})


def to_markdown(frame: pd.DataFrame, float_format: str = "{:.3g}") -> str:
    if frame.empty:
        return "_(none)_\n"

    def cell(value: object, column: str) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return ""
            return f"{100 * value:.3f}%" if column in PERCENT_COLUMNS else float_format.format(value)
        return str(value).replace("|", "\\|")

    columns = [str(c) for c in frame.columns]
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v, c) for v, c in zip(row, columns)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def gate_cell(metrics: dict, tolerance: dict) -> str:  # type: ignore[type-arg]
    """The gated metrics of one output with their limits (what decided the verdict)."""
    return OutputDiff("output", metrics, tolerance).gate_text() if tolerance else "(no gate)"


def parity_frame(record: RunRecord) -> pd.DataFrame:
    """One row per leg: the gated metric and its limit for each output first (what decided the
    verdict), then the article's max squared errors and the depth metrics; fractions of pixels
    as percentages."""
    rows = []
    for row in record.parity:
        metrics, tolerance = row.get("metrics", {}), row.get("tolerance", {})
        depth, conf = metrics.get("depth", {}), metrics.get("photometric_confidence", {})
        rows.append({
            "case": row.get("case"), "candidate": row.get("candidate"), "reference": row.get("reference"),
            "workaround": row.get("workaround"), "exporter": row.get("exporter"), "graph": row.get("variant"),
            "passed": row.get("passed"),
            "depth gate (limit)": gate_cell(depth, tolerance.get("depth", {})),
            "confidence gate (limit)": gate_cell(conf, tolerance.get("photometric_confidence", {})),
            "depth max sq err (mm²)": depth.get("max_sq_err"), "depth max abs (mm)": depth.get("max_abs"),
            "depth p99 abs (mm)": depth.get("p99_abs"), "depth > 1 mm": depth.get("frac_over_1mm"),
            "index flips": depth.get("index_flips"), "conf max sq err (all pixels)": conf.get("max_sq_err"),
            "conf agreement": conf.get("agreement"),
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
                  "The gate columns hold the metrics each verdict was decided by, with their limits from "
                  "fixtures/tolerances.toml (depth gates in depth-hypothesis steps). Max squared error is the "
                  "source article's metric (depth in mm²); the confidence's max over all pixels includes pixels "
                  "whose truncated depth index flipped, which the gate counts instead (index flips).\n",
                  to_markdown(frames["parity"])]
        parts += [f"![{name.removesuffix('.png')}]({name})\n" for name in figures or [] if name.startswith("depth-")
                  and frames["timing"].empty]
        replays = [f"- {r['id']}{'' if r.get('passed') else ' (failed)'}: [commands.sh](<{r['replay']}>)"
                   for r in record.parity if r.get("replay")]
        if replays:  # harness.report.replay: inputs, torch reference and commands for Polygraphy / trtexec
            parts += ["### Replays for Polygraphy and trtexec\n", "\n".join(replays) + "\n"]
    if not frames["accuracy"].empty:
        parts += ["## Accuracy against ground truth\n", to_markdown(frames["accuracy"])]
    if not frames["timing"].empty:
        on_gpu = any(r.get("clock") == "cuda-events" or str(r.get("device", "")).startswith("cuda")
                     for r in record.timing)
        clock = ("CUDA events around one inference (inputs already on the device); \"with copies\" adds "
                 "host-to-device and device-to-host copies." if on_gpu else
                 "perf_counter around one inference on the CPU (inputs and outputs in host memory).")
        parts += ["## Timing\n", f"{clock} Speed-up is over torch eager strict FP32.\n", to_markdown(frames["timing"])]
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


def attribution_table(rows: list[dict[str, Any]]) -> str:
    """The attribution rows of one case (``harness.localize.attribution``) as a fixed-width table."""
    lines = [f"{'hop':<12} {'adds (max / p99 mm)':>22} {'total vs torch FP32 (max / p99 mm)':>36}"]
    for row in rows:
        if "skipped" in row:
            lines.append(f"{row['hop']:<12} skipped: {row['skipped']}")
        elif "hop_max_abs_mm" not in row:
            lines.append(f"{row['hop']:<12} {'reference':>22}")
        else:
            verdict = {True: "  within gate", False: "  EXCEEDS gate", None: ""}[row.get("within_gate")]
            lines.append(f"{row['hop']:<12} {row['hop_max_abs_mm']:>10.3g} / {row['hop_p99_abs_mm']:<9.3g} "
                         f"{row['total_max_abs_mm']:>22.3g} / {row['total_p99_abs_mm']:<9.3g}{verdict}")
    return "\n".join(lines)
