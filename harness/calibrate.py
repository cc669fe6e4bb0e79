"""``python -m harness calibrate``: measure the benign noise of every gate, derive the limits, and
measure the false-alarm rate on held-out inputs.

* ``calibrate`` (family ``calibration``): runs the corpus (``harness.gates.calibration``) through
  every leg this machine can run, then the mutation catalogue on the small case, and writes the
  calibration record ``fixtures/calibration/<machine class>/calibration-<utc>.json`` and a report
  (``report.md`` with one figure per gate: the benign distribution, the limit the rule gives, and
  each catalogue bug's value of the same statistic). Resumable: the work folder keeps every
  finished input (``--work``; a second run continues where the first stopped).
* ``calibrate --derive``: writes ``fixtures/tolerances.toml`` from every committed record by the
  rule (``harness.gates.rule``) and prints each limit with its worst benign value and margin.
* ``calibrate --family held-out``: the same measurement over seeds and layouts the records never
  saw, judged by the current tolerances: every sample over a limit is a false alarm (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import InvalidArgument
from harness.options import namespace_values

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RECORDS = PROJECT_ROOT / "fixtures" / "calibration"
EXIT_CODES = "exit codes: 0 done (held-out: no false alarm), 1 a held-out sample over its limit, 2 bad arguments, " \
             "130/143 interrupted (finished inputs are kept in --work)"


def parse_seeds(text: str) -> list[int]:
    """``1-60`` or ``1,4,9`` or a mix: ``1-5,10``."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            low, _, high = part.partition("-")
            seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
    except ValueError:
        raise InvalidArgument("--seeds", "not a list of seeds", observed=text, expected="e.g. 1-60 or 1,4,9",
                              fix="pass --seeds 1-60") from None
    if not seeds:
        raise InvalidArgument("--seeds", "empty", observed=repr(text), expected="e.g. 1-60", fix="pass --seeds 1-60")
    return seeds


def _progress(done: int, total: int, item: Any, elapsed: float) -> None:
    from harness.convert.progress import interactive

    width = 30
    filled = int(width * done / max(total, 1))
    rate = elapsed / done if done else 0.0
    eta = f", about {rate * (total - done) / 60:.0f} min left" if done and done < total else ""
    text = f"calibrate [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {item.id} {item.shape_id}{eta}"
    if interactive(sys.stderr):
        sys.stderr.write("\r" + text + "\x1b[K" + ("\n" if done == total else ""))
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def load_records(root: Path = RECORDS, families: Sequence[str] | None = None,
                 ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every sample of every committed record of ``families`` (by default the calibrating ones:
    the generator's corpus and the property suite's rigs), and the record files per class."""
    if families is None:
        from harness.gates.calibration import CALIBRATING

        families = CALIBRATING
    samples: list[dict[str, Any]] = []
    sources: dict[str, list[str]] = defaultdict(list)
    for path in sorted(root.glob("*/*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("kind") != "calibration-record" or record.get("family") not in families:
            continue
        samples += record["samples"]
        for machine in {s["machine"] for s in record["samples"]}:
            sources[machine].append(path.relative_to(root).as_posix())
    return samples, {k: ", ".join(v) for k, v in sources.items()}


def derive_text(root: Path = RECORDS) -> str:
    from harness.default_model import resolve
    from harness.gates.rule import derive, to_toml

    samples, sources = load_records(root)
    if not samples:
        raise InvalidArgument(str(root), "no calibration record", observed="no calibration-*.json with samples",
                              expected="records written by python -m harness calibrate",
                              fix="run python -m harness calibrate first")
    kinds = {**resolve(None).kinds(), "accuracy": "accuracy"}
    return to_toml(derive(samples, kinds, sources))


def judge(samples: Sequence[dict[str, Any]], tolerances: Any) -> list[str]:
    """Each sample over a limit of the current tolerances, as one line (the false alarms)."""
    from harness.compare import OutputDiff
    from harness.errors import ConfigError

    alarms = []
    for s in samples:
        try:
            if s.get("pair") == "stages":
                if not tolerances.stages_measured(s["candidate"], s["precision"], machine=s["machine"]):
                    continue
                limits = tolerances.stage_limits(s["candidate"], s["precision"], machine=s["machine"])
                over = {k: (v, limits.get(k, limits["default"])) for k, v in s["stages"].items()
                        if v > limits.get(k, limits["default"])}
            else:
                reference, _, candidate = s["pair"].partition("-vs-")
                outputs = tuple(s["metrics"])
                gates = tolerances.lookup(reference, candidate, s["precision"], outputs, machine=s["machine"])
                over = {f"{o} {m}": f for o in outputs for m, f in OutputDiff(o, s["metrics"][o], gates[o]).failures.items()}
        except ConfigError as exc:
            alarms.append(f"{s['item']} {s['leg']}: no gate ({exc})")
            continue
        if over:
            alarms.append(f"{s['item']} {s['leg']} [{s['machine']} {s['pair']} {s['precision']}]: "
                          + ", ".join(f"{k} {v:.3g} > {lim:.3g}" for k, (v, lim) in over.items()))
    return alarms


def run(args: argparse.Namespace) -> int:
    if args.derive:
        from harness.fileio import atomic_write_text
        from harness.gates.limits import DEFAULT_TOLERANCES, Tolerances

        text = derive_text()
        target = Path(args.tolerances) if args.tolerances else DEFAULT_TOLERANCES
        atomic_write_text(target, text)
        Tolerances.load(target)  # what was written must load
        print(text)
        print(f"wrote {target}")
        return 0
    from harness.chain import Chain, ChainConfig
    from harness.fileio import atomic_write_json, utc_stamp
    from harness.gates.calibration import DEFAULT_SEEDS, Calibrator, corpus, record
    from harness.gates.limits import Tolerances, machine_class
    from harness.report.machine import git_state, machine_info

    seeds = parse_seeds(args.seeds) if args.seeds else list(DEFAULT_SEEDS[args.family])
    named = tuple(c for c in args.named_cases.split(",") if c)
    items = corpus(args.family, seeds, named)
    git = git_state()  # the code that measures: read now, not when the record is written
    chain = Chain(ChainConfig.from_options(namespace_values(args, "calibrate")))
    machine = machine_class(str(chain.device))
    work = args.work or PROJECT_ROOT / "reports" / "calibration" / f"{machine}-{args.family}"
    only = tuple(c for c in args.backends_only.split(",") if c)
    calibrator = Calibrator(chain, work, candidates=only, with_stages=not args.no_stages,
                            with_golden=not args.no_golden)
    print(f"calibrate: {len(items)} inputs ({args.family}), machine class {machine}, legs on "
          f"{', '.join(calibrator.candidates)}; work folder {work}", flush=True)
    started = time.perf_counter()
    try:
        for _ in calibrator.run(items, _progress):
            pass
        if args.family == "calibration" and not args.no_mutations:
            from harness.gates.figures import mutation_samples

            mutation_samples(chain, work)
    finally:
        calibrator.close()
    samples = calibrator.samples()
    print(f"calibrate: {len(samples)} samples in {time.perf_counter() - started:.0f} s", flush=True)
    for name, why in calibrator.skipped.items():
        print(f"calibrate: skipped {name}: {why}")
    if args.family == "held-out":
        tolerances = Tolerances.load(args.tolerances)
        alarms = judge(samples, tolerances)
        runs = sum(1 for s in samples if s.get("pair") != "stages")
        print(f"held-out: {len(items)} inputs, {runs} input x leg comparisons, {len(alarms)} false alarm(s)")
        for line in alarms:
            print("  FALSE ALARM " + line)
        return 1 if alarms else 0
    info = {"seeds": seeds, "named_cases": list(named), "align_corners": chain.config.align_corners,
            "machine": machine_info(), "git": git,
            "legs": list(dict.fromkeys(s["leg"] for s in samples)), "skipped": calibrator.skipped}
    target = args.record or RECORDS / machine / f"calibration-{utc_stamp()}.json"
    if target.exists():
        raise InvalidArgument(str(target), "record exists", observed="a file", expected="a new path",
                              fix="pass another --record path (records are never overwritten)")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target, record(samples, items, machine, args.family, info))
    print(f"record: {target}")
    from harness.gates.figures import write_report

    report = write_report(work, samples)
    print(f"report: {report}")
    return 0
