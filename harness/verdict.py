"""The verdict at a glance, the same on every front (``python -m harness run``, ``check``, the
pytest terminal summary and report.md): one verdict line, and a parity table whose rows fit a
120-column terminal.

The table prints, above the legs it applies to, which metrics gate each output and their limits
(as ``OutputDiff.tolerance`` holds them: this module names no metric); each leg's row then gives
its verdict first, a short leg id, and per output the observed value of each gated metric in the
legend's order, ``!`` marking a value over its limit. Every metric of every leg stays in
report.md and run.json.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

from harness.compare import LOWER_BOUNDS, OutputDiff, format_metric

WIDTH = 120  # columns of the terminal the table must fit
VERDICT_WIDTH = 4  # "ok" / "FAIL"
LEG_WIDTH = 57  # the longest built-in short id: ort-cuda-default simplified closed_form/torchscript small
MIN_LEG_WIDTH = 24  # a leg id is never cut shorter than this
SLOT = 9  # one observed value: 3 significant digits, a percentage, or "-"
MAX_NAMED = 4  # failed legs named in the verdict line before "+N more"
DEFAULT_REFERENCE = "torch-fp32"

#: ``((output, ((metric, limit), ...)), ...)``: which metrics gate each output, with their limits.
Gates = tuple[tuple[str, tuple[tuple[str, float], ...]], ...]


def short_leg_id(row: Mapping[str, Any]) -> str:
    """A parity row's leg in a few words: ``ort-cpu-fp16 simplified precomputed/torchscript seed``
    (candidate, graph variant, workaround/exporter, case), ``torch-fast-fp16 seed`` for a backend
    that consumes the model, ``mvsnet.onnx ort-cpu small`` for a user's artifact; ``vs <reference>``
    appended when the reference is not torch strict FP32. The row's own ``id`` when it lacks the fields."""
    candidate, case, variant = row.get("candidate"), row.get("case"), str(row.get("variant") or "")
    if not candidate or not case:
        return str(row.get("id", "?"))
    if variant.startswith("user-"):
        path = (row.get("artifact") or {}).get("path")
        words = [PurePath(str(path)).name if path else variant, candidate, case]
    elif variant in ("", "model"):
        words = [candidate, case]
    else:
        words = [candidate, variant, f"{row.get('workaround')}/{row.get('exporter')}", case]
    reference = row.get("reference") or DEFAULT_REFERENCE
    if reference != DEFAULT_REFERENCE:
        words += ["vs", str(reference)]
    return " ".join(str(w) for w in words)


def gates_of(diffs: Mapping[str, OutputDiff]) -> Gates:
    return tuple((name, tuple(d.tolerance.items())) for name, d in diffs.items())


def _bound(metric: str, limit: float) -> str:
    return f"{metric} {'>=' if metric in LOWER_BOUNDS else '<='} {format_metric(metric, limit)}"


def legend(gates: Gates, width: int = WIDTH) -> list[str]:
    """The gates of the legs below: one line when it fits, else one line per output."""
    parts = [f"{name}: {', '.join(_bound(m, lim) for m, lim in bounds) or '(no gate)'}" for name, bounds in gates]
    one = "gates: " + " | ".join(parts)
    if len(one) <= width:
        return [one]
    return ["gates:", *(f"  {p}"[:width] for p in parts)]


def _cell(diff: OutputDiff | None) -> str:
    """Observed values of ``diff``'s gated metrics, ``!`` after one over its limit."""
    if diff is None or not diff.metrics:
        return "-"
    failures = diff.failures
    values = [format_metric(m, diff.metrics[m]) + ("!" if m in failures else "") if m in diff.metrics else "-"
              for m in diff.tolerance]
    if diff.metrics.get("nan", 0) > 0:
        values.append(f"nan {diff.metrics['nan']:.0f}!")
    return ", ".join(values) or "(no gate)"


def _widths(gates: Gates) -> list[int]:
    return [max(len(name), max(1, len(bounds)) * (SLOT + 2) - 2) for name, bounds in gates]


def _fit(verdict: str, leg: str, cells: Sequence[str], widths: Sequence[int], width: int) -> str:
    """One line of the table: the leg column as wide as the padded cells leave (so the columns
    line up), narrower only for a row whose cells overflow (NaN counts, failing values)."""
    body = " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    padded = sum(widths) + 3 * max(0, len(widths) - 1)
    room = max(MIN_LEG_WIDTH, min(LEG_WIDTH, width - VERDICT_WIDTH - 2 - max(padded, len(body))))
    if len(leg) > room:
        leg = leg[:room - 3] + "..."
    return f"{verdict:<{VERDICT_WIDTH}} {leg:<{room}} {body}".rstrip()


class LegTable:
    """The console's parity table, streamed: ``lines(row, diffs)`` gives the legend and column
    header when the gates differ from the previous leg's, then the leg's row."""

    def __init__(self, width: int = WIDTH) -> None:
        self.width = width
        self.gates: Gates | None = None

    def lines(self, row: Mapping[str, Any], diffs: Mapping[str, OutputDiff] | None = None) -> list[str]:
        """``row``: the leg's parity row (``id``, ``passed`` and the leg's fields); ``diffs``: its
        outputs' comparisons (rebuilt from the row's metrics and tolerance when None). A leg that
        failed before any comparison (no metrics) keeps the previous legend."""
        if diffs is None:
            diffs = diffs_of(row)
        out = []
        gates = gates_of(diffs)
        if gates and gates != self.gates:
            self.gates = gates
            widths = _widths(gates)
            out += legend(gates, self.width)
            titles = [name[:w] for (name, _), w in zip(gates, widths)]
            out.append(_fit("", "leg", titles, widths, self.width))
        widths = _widths(self.gates or gates)
        names = [name for name, _ in self.gates or gates] or list(diffs)
        cells = [_cell(diffs.get(name)) for name in names]
        out.append(_fit("ok" if row.get("passed") else "FAIL", short_leg_id(row), cells, widths, self.width))
        return out


def diffs_of(row: Mapping[str, Any]) -> dict[str, OutputDiff]:
    """A parity row's comparisons, rebuilt from its ``metrics`` and ``tolerance``."""
    tolerance = row.get("tolerance") or {}
    return {name: OutputDiff(name, metrics, tolerance.get(name, {})) for name, metrics in (row.get("metrics") or {}).items()}


def leg_table(rows: Iterable[Mapping[str, Any]], width: int = WIDTH) -> list[str]:
    """The whole table of finished rows, legs with the same gates together (by gates, then id)."""
    table = LegTable(width)
    ordered = sorted(rows, key=lambda r: (repr(gates_of(diffs_of(r))), str(r.get("id"))))
    return [line for row in ordered for line in table.lines(row)]


def panel_caption(diffs: Mapping[str, OutputDiff], output: str, passed: bool | None = None) -> str:
    """What a figure panel of ``output`` says of its leg: each gated metric of ``output`` with its
    limit, one a line, then the leg's verdict (``pass``, or ``FAIL`` naming the outputs over their
    gates). ``passed``: the leg's verdict when it is more than its outputs' (e.g. a failed stage)."""
    diff = diffs.get(output)
    lines = [part for part in diff.gate_text().split(", ")] if diff is not None else ["(not compared)"]
    over = [name for name, d in diffs.items() if not d]
    ok = (not over) if passed is None else passed
    lines.append("leg: pass" if ok else "leg: FAIL" + (f" ({', '.join(over)})" if over and over != [output] else ""))
    return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def skipped_text(skipped: Mapping[str, str]) -> str:
    """``7 backends skipped (no CUDA device: ort-cuda, trt-fp32; tensorrt not importable: ...)``."""
    by_reason: dict[str, list[str]] = {}
    for backend, reason in skipped.items():
        by_reason.setdefault(reason, []).append(backend)
    groups = "; ".join(f"{reason}: {', '.join(names)}" for reason, names in by_reason.items())
    return f"{_plural(len(skipped), 'backend')} skipped ({groups})"


def _named(items: Sequence[str]) -> str:
    more = len(items) - MAX_NAMED
    return ", ".join(items[:MAX_NAMED]) + (f" +{more} more" if more > 0 else "")


def verdict_line(rows: Sequence[Mapping[str, Any]], skipped: Mapping[str, str] | None = None,
                 failures: Sequence[str] = (), incomplete: str = "") -> str:
    """The run's verdict in one line, first word ``PASS``, ``FAIL``, ``INCOMPLETE`` (interrupted:
    ``incomplete`` says how far it got) or ``NO LEG RAN``.

    ``rows``: the parity rows (``passed`` and the leg's fields); ``skipped``: ``{backend: why}``;
    ``failures``: what else failed (a degenerate reference, a precision audit, a test)."""
    failed = [short_leg_id(r) for r in rows if not r.get("passed")]
    if failed:
        their = "its" if len(rows) == 1 else "their"
        parts = [f"{len(failed)} of {_plural(len(rows), 'leg')} over {their} gates: {_named(failed)}"]
    else:
        parts = [f"{_plural(len(rows), 'leg')} within {'its' if len(rows) == 1 else 'their'} gates"] if rows else []
    if failures:
        parts.append(f"{_plural(len(failures), 'other failure')}: {_named(list(failures))}")
    if skipped:
        parts.append(skipped_text(skipped))
    body = "; ".join(parts) or "nothing ran"
    if incomplete:
        return f"INCOMPLETE ({incomplete}): {body}"
    if failed or failures:
        return f"FAIL {body}"
    return f"PASS {body}" if rows else f"NO LEG RAN: {body}"


__all__ = ["LegTable", "diffs_of", "leg_table", "legend", "panel_caption", "short_leg_id", "skipped_text", "verdict_line"]
