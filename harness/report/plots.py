"""Figures for report.md (matplotlib, headless): latency per backend with p90-p99 whiskers, and
depth-difference heat maps of each backend against torch strict FP32."""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from harness.default_model import resolve  # noqa: E402
from harness.fileio import atomic_write_bytes  # noqa: E402
from harness.modelspec import ModelSpec  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def latency_plot(rows: list[dict[str, Any]], case: str, path: Path, title: str = "",
                 model_spec: ModelSpec | None = None) -> Path | None:
    """Median per backend (dot), whisker from p90 to p99; backends sorted fastest first. The
    default title names the model by its spec's title (MVSNet's when None)."""
    timed = sorted((r for r in rows if r["case"] == case and "median_ms" in r), key=lambda r: r["median_ms"])
    if not timed:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(timed) + 1.2))
    for y, row in enumerate(timed):
        ax.plot([row["p90_ms"], row["p99_ms"]], [y, y], color="0.6", linewidth=3, solid_capstyle="butt")
        ax.plot(row["median_ms"], y, "o", color="C0" if row.get("parity_passed", True) else "C3")
        ax.annotate(f"{row['median_ms']:.2f} ms", (row["p99_ms"], y), xytext=(6, -3), textcoords="offset points",
                    fontsize=8)
    ax.set_yticks(range(len(timed)), [r["backend"] for r in timed])
    ax.invert_yaxis()
    ax.set_xlabel("latency per inference (ms): median, p90-p99")
    ax.set_xlim(left=0)
    ax.set_title(title or f"{resolve(model_spec).title}, case {case}")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def depth_difference_maps(reference: torch.Tensor, candidates: dict[str, torch.Tensor], path: Path,
                          title: str = "", captions: Mapping[str, str] | None = None,
                          failed: Collection[str] = ()) -> Path | None:
    """|candidate depth - reference depth| in mm, one panel per backend, one logarithmic colour
    scale from 0.001 mm (so FP32-level and FP16-level differences are both visible).

    ``captions``: per panel, what its title adds under the name and max (the leg's gate and
    verdict, ``harness.verdict.panel_caption``); the panels named in ``failed`` are titled in red."""
    from matplotlib.colors import LogNorm

    if not candidates:
        return None
    diffs = {name: (d.detach().float().cpu() - reference.detach().float().cpu()).abs()[0] for name, d in candidates.items()}
    vmax = max(max(float(d.max()) for d in diffs.values()), 2e-3)
    norm = LogNorm(vmin=1e-3, vmax=vmax, clip=True)
    cols = min(3, len(diffs))
    rows = (len(diffs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    image = None
    for ax, (name, diff) in zip(axes.flat, diffs.items()):
        image = ax.imshow(diff.clamp(min=1e-3).numpy(), cmap="magma", norm=norm)
        caption = (captions or {}).get(name)
        ax.set_title(f"{name}\nmax {float(diff.max()):.3g} mm" + (f"\n{caption}" if caption else ""), fontsize=9,
                     color="C3" if name in failed else "black")
        ax.axis("off")
    for ax in list(axes.flat)[len(diffs):]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="|depth difference| (mm, log; <0.001 black)")
    fig.suptitle(title or "depth difference against torch strict FP32")
    return _save(fig, path)


def cross_gpu_plot(table: list[dict[str, Any]], gpus: list[str], case: str, path: Path,
                   model_spec: ModelSpec | None = None) -> Path | None:
    """Grouped bars: median ms per backend, one bar per GPU (titled by the model's spec)."""
    backends = sorted({r["backend"] for r in table if r["case"] == case})
    if not backends:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(backends) * max(1, len(gpus))), 4))
    width = 0.8 / max(1, len(gpus))
    for g, gpu in enumerate(gpus):
        values = []
        for backend in backends:
            hit = next((r for r in table if r["case"] == case and r["backend"] == backend and r["gpu"] == gpu), None)
            values.append(hit["median_ms"] if hit else 0.0)
        ax.bar([i + g * width for i in range(len(backends))], values, width, label=gpu)
    ax.set_xticks([i + width * (len(gpus) - 1) / 2 for i in range(len(backends))], backends, rotation=30, ha="right")
    ax.set_ylabel("median latency (ms)")
    ax.set_title(f"{resolve(model_spec).title}, case {case}: latency per backend and GPU")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
