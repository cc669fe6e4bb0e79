"""The calibration report: one figure per gate with the benign distribution of its statistic, the
limit the rule derives from it, and the value each bug of the mutation catalogue gives the same
statistic on the small case (how far apart noise and bugs are)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.chain import Chain
from harness.compare import LOWER_BOUNDS, compare
from harness.default_model import resolve
from harness.fileio import atomic_write_text
from harness.gates.calibration import recorded, stage_worst
from harness.gates.rule import collect, derive

MUTATIONS_FILE = "mutations.jsonl"


def mutation_samples(chain: Chain, work: Path, case: str = "small") -> Path:
    """Each catalogue mutation's statistics on ONNX Runtime CPU (small case) against torch, and
    its per-stage errors; written once to ``work/mutations.jsonl`` (kept on a re-run)."""
    from harness.gates.limits import Tolerances
    from harness.model.mvsnet import OUTPUT_NAMES
    from harness.mutate import MutationError, mutations
    from harness.sensitivity import Sensitivity

    path = work / MUTATIONS_FILE
    if path.is_file():
        return path
    rows = []
    with Sensitivity(chain, Tolerances({}, "no limits: statistics only"), case) as sens:
        for precision in ("fp32", "fp16"):
            for mutation in mutations(precision):
                try:
                    probed = mutation(sens.graph(mutation.variant, precision, probes=True))
                except MutationError:
                    continue
                values = sens.run_graph(probed, f"{mutation.name}-{precision}-probes", every_output=True)
                outputs = {name: values[name] for name in OUTPUT_NAMES}
                stages = {name.removeprefix("probe_"): value.float() for name, value in values.items()}
                rows.append({"mutation": mutation.name, "benign": mutation.benign, "precision": precision,
                             "candidate": sens.leg(mutation.variant, precision).candidate,
                             "metrics": recorded(compare(sens.reference, outputs, None, depth_values=sens.depth_values)),
                             "stages": stage_worst(sens.reference_stages, stages, sens.depth_values)})
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def _mutations(work: Path) -> list[dict[str, Any]]:
    path = work / MUTATIONS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _bug_values(bugs: Sequence[dict[str, Any]], key: tuple) -> list[tuple[str, float]]:
    machine, pair, a, b, metric = key
    found = []
    for bug in bugs:
        if bug["benign"] or machine != "cpu":
            continue
        if pair == "stages":
            if bug["candidate"] == a and bug["precision"] == b and metric in bug["stages"]:
                found.append((bug["mutation"], float(bug["stages"][metric])))
        elif pair == "torch-vs-ort" and bug["precision"] == a and metric in bug["metrics"].get(b, {}):
            found.append((bug["mutation"], float(bug["metrics"][b][metric])))
    return found


def write_report(work: Path, samples: Sequence[dict[str, Any]], margin: float | None = None) -> Path:
    """``work/report/report.md`` and one PNG per gate; returns the report's path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from harness.gates.rule import MARGIN

    margin = MARGIN if margin is None else margin
    kinds = {**resolve(None).kinds(), "accuracy": "accuracy"}
    limits = derive(samples, kinds, {}, margin)
    values = collect(samples)
    bugs = _mutations(work)
    folder = work / "report"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# Calibration report", "", f"{len(samples)} samples; rule: worst benign value x {margin:g} "
             "(harness/gates/rule.py). Bugs: the mutation catalogue on the small case (ONNX Runtime CPU).", "",
             "| gate | n | worst benign | limit | bugs over the limit | bugs inside it | figure |", "|---|---|---|---|---|---|---|"]
    for key in sorted(k for k, e in limits.items() if not e["borrowed"]):
        entry = limits[key]
        benign = values.get(key, [])
        found = _bug_values(bugs, key)
        lower = entry["metric"] in LOWER_BOUNDS
        over = [name for name, v in found if (v < entry["limit"] if lower else v > entry["limit"]) or v != v]
        inside = [name for name, v in found if name not in over]
        name = "-".join(str(k) for k in key).replace("/", "_").replace(" ", "_")
        fig, ax = plt.subplots(figsize=(7, 2.4))
        transform = (lambda v: max(1.0 - v, 1e-9)) if lower else (lambda v: max(v, 1e-12))
        ax.scatter([transform(v) for v in benign], [0.2 * ((i * 0.618) % 1) for i in range(len(benign))], s=8,
                   color="tab:blue", label=f"benign (n={len(benign)})")
        ax.axvline(transform(entry["limit"]), color="black", linestyle="--", label=f"limit {entry['limit']:.3g}")
        if found:
            ax.scatter([transform(v) if v == v else 1e9 for _, v in found], [0.5] * len(found), marker="x", color="tab:red",
                       label=f"catalogue bugs ({len(over)} over the limit)")
        ax.set_xscale("log")
        ax.set_yticks([])
        ax.set_xlabel(("1 - " if lower else "") + entry["metric"])
        ax.set_title(" ".join(str(k) for k in key), fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=90)
        plt.close(fig)
        lines.append(f"| {' '.join(str(k) for k in key)} | {entry['n']} | {entry['worst']:.3g} | {entry['limit']:.3g} | "
                     f"{len(over)} | {', '.join(inside) if inside else '-'} | ![]({name}.png) |")
    lines.append("")
    report = folder / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return report
