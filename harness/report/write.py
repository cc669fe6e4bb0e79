"""Writing a run: a fresh ``<root>/<utc-stamp>/`` with run.json, report.md, CSV tables and figures.

Kept apart from ``record`` (the data) and ``markdown`` (the rendering) so that neither imports
the other: this module sits above both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.fileio import atomic_write_json, atomic_write_text, new_run_dir, utc_stamp
from harness.modelspec import ModelSpec
from harness.report import markdown
from harness.report.record import RunRecord


def write_run(
    record: RunRecord,
    root: str | Path,
    extra_files: dict[str, str] | None = None,
    figures: Callable[[Path], list[Path]] | None = None,
    model_spec: ModelSpec | None = None,
) -> Path:
    """Write ``record`` into a fresh ``root/<utc-stamp>/``: run.json, report.md and CSV tables.

    ``figures(folder)`` may draw plots into the folder first; report.md links the ones it
    returns. ``model_spec`` names the model and its outputs' columns (MVSNet's when None).
    Returns the folder. Never touches an existing folder.
    """
    folder = new_run_dir(Path(root), utc_stamp())
    atomic_write_json(folder / "run.json", record.to_dict())
    frames = markdown.tables(record, model_spec)
    for name, frame in frames.items():
        if not frame.empty:
            atomic_write_text(folder / f"{name}.csv", frame.to_csv(index=False))
    drawn = [p.name for p in (figures(folder) if figures else []) if p is not None]
    atomic_write_text(folder / "report.md", markdown.render_report(record, frames, drawn, model_spec))
    for name, text in (extra_files or {}).items():
        atomic_write_text(folder / name, text)
    return folder
