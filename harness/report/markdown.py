"""report.md from a run record: pandas tables rendered as Markdown (no tabulate needed).

What the parity table shows of each output (its gate column, its metric columns and their
titles) and how the report names the model come from the model's spec (``harness.modelspec``;
MVSNet's when none is given), so this module names no output.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import pandas as pd

from harness.compare import FRACTIONS, OutputDiff
from harness.default_model import resolve
from harness.modelspec import ModelSpec, OutputSpec
from harness.report.machine import one_line
from harness.report.record import RunRecord
from harness.verdict import verdict_line

#: How report.md shows a leg's verdict (never a bare True / False).
RESULT = {True: "pass", False: "FAIL"}
NOT_GATED = " (not gated)"


def to_markdown(frame: pd.DataFrame, float_format: str = "{:.3g}", percent: Collection[str] = ()) -> str:
    """``frame`` as a Markdown table; floats with ``float_format``, the ``percent`` columns
    (fractions of the pixels) as percentages, NaN cells empty."""
    if frame.empty:
        return "_(none)_\n"

    def cell(value: object, column: str) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return ""
            return f"{100 * value:.3f}%" if column in percent else float_format.format(value)
        return str(value).replace("|", "\\|")

    columns = [str(c) for c in frame.columns]
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v, c) for v, c in zip(row, columns)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def gate_cell(metrics: dict, tolerance: dict) -> str:  # type: ignore[type-arg]
    """The gated metrics of one output with their limits (what decided the verdict)."""
    return OutputDiff("output", metrics, tolerance).gate_text() if tolerance else "(no gate)"


def record_verdict(record: RunRecord) -> str:
    """The run's verdict line (``harness.verdict.verdict_line``) from its record: the line the
    console printed, and the first line of report.md."""
    incomplete = record.incomplete or ("interrupted" if record.config.get("incomplete") else "")
    return verdict_line(record.parity, record.skipped, record.failures, incomplete)


def has_verdict(record: RunRecord) -> bool:
    """Whether the record judges anything (parity legs, skipped backends, failures, an interrupt):
    a benchmark-only record has no verdict line."""
    return bool(record.parity or record.skipped or record.failures or record.incomplete
                or record.config.get("incomplete"))


def _gated_anywhere(record: RunRecord, output: str, metric: str) -> bool:
    return any(metric in (row.get("tolerance") or {}).get(output, {}) for row in record.parity)


def parity_outputs(record: RunRecord, model_spec: ModelSpec | None = None) -> tuple[OutputSpec, ...]:
    """The outputs the parity table shows: the spec's, then any other output the rows hold
    (with default columns), so a row's metrics never vanish from the table."""
    spec = resolve(model_spec)
    listed = set(spec.output_names)
    others = dict.fromkeys(name for row in record.parity for name in row.get("metrics", {}) if name not in listed)
    return (*spec.outputs, *(OutputSpec(name) for name in others))


def percent_columns(outputs: tuple[OutputSpec, ...]) -> frozenset[str]:
    """Parity-table columns holding fractions of the pixels (rendered as percentages; the CSV
    keeps the numbers)."""
    return frozenset(t for out in outputs for metric, title in out.table_columns if metric in FRACTIONS
                     for t in (title, title + NOT_GATED))


def parity_frame(record: RunRecord, model_spec: ModelSpec | None = None) -> pd.DataFrame:
    """One row per leg: the gated metric and its limit for each output first (what decided the
    verdict), then each output's metric columns as its spec lists them (MVSNet: the article's
    max squared errors and the depth metrics); fractions of pixels as percentages."""
    spec = resolve(model_spec)
    outputs = parity_outputs(record, spec)
    titles = {(output.name, metric): title if _gated_anywhere(record, output.name, metric) else title + NOT_GATED
              for output in outputs for metric, title in output.table_columns}
    rows = []
    for row in record.parity:
        metrics, tolerance = row.get("metrics", {}), row.get("tolerance", {})
        out: dict[str, Any] = {"result": RESULT[bool(row.get("passed"))], "case": row.get("case"), "candidate": row.get("candidate"), "reference": row.get("reference")}
        out.update({name: row.get(name) for name in spec.leg_fields})  # the model's own leg settings
        out.update({"exporter": row.get("exporter"), "graph": row.get("variant")})
        for output in outputs:
            out[output.gate_title] = gate_cell(metrics.get(output.name, {}), tolerance.get(output.name, {}))
        for output in outputs:
            for metric, _ in output.table_columns:
                out[titles[output.name, metric]] = metrics.get(output.name, {}).get(metric)
        rows.append(out)
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
        if row.get("parity_passed") is not None:
            out["parity"] = RESULT[bool(row["parity_passed"])]
        trtexec = row.get("trtexec_gpu_compute") or {}
        out["trtexec GPU median ms"] = trtexec.get("median_ms")  # same engine, timed by trtexec
        out["trtexec GPU p99 ms"] = trtexec.get("p99_ms")
        rows.append(out)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.dropna(axis=1, how="all")


def tables(record: RunRecord, model_spec: ModelSpec | None = None) -> dict[str, pd.DataFrame]:
    return {"parity": parity_frame(record, model_spec), "artifacts": artifacts_frame(record),
            "accuracy": accuracy_frame(record), "timing": timing_frame(record)}


def session_line(session: dict) -> str:  # type: ignore[type-arg]
    counts = ", ".join(f"{session.get(k, 0)} {k}" for k in ("passed", "failed", "skipped", "xfailed", "errors"))
    return f"{counts} in {session.get('wall_s', 0):.1f} s"


def render_report(record: RunRecord, frames: dict[str, pd.DataFrame] | None = None,
                  figures: list[str] | None = None, model_spec: ModelSpec | None = None) -> str:
    """report.md of ``record``; the model's title, parity note and columns from ``model_spec``
    (MVSNet's when None)."""
    spec = resolve(model_spec)
    frames = frames or tables(record, spec)
    machine = record.machine
    parts = [
        f"# {spec.title} conversion report ({record.kind}, {record.created_utc})\n",
        *([f"**{record_verdict(record)}**\n"] if has_verdict(record) else []),
        one_line(machine, record.profile) + "\n",
        f"commit `{machine.get('commit')}`{' (dirty)' if machine.get('dirty') else ''}\n",
    ]
    if not frames["parity"].empty:
        parts += ["## Parity against torch strict FP32\n", *([spec.parity_note + "\n"] if spec.parity_note else []),
                  to_markdown(frames["parity"], percent=percent_columns(parity_outputs(record, spec)))]
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
    parts += ["## Configuration\n", "```\n" + "\n".join(f"{k}: {'(not given)' if v is None else v}"
                                                       for k, v in record.config.items()) + "\n```\n"]
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
