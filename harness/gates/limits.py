"""The limits of every gate, read from ``fixtures/tolerances.toml``, per machine class.

The file is written by ``python -m harness calibrate --derive`` from the calibration records
under ``fixtures/calibration/<machine class>/`` by one rule (``harness.gates.rule``); a comment
beside each limit names its record, the worst benign value and the margin. Nothing here holds a
number.

Layout: ``[<class>.'<reference family>-vs-<candidate family>'.<precision>.<output>]`` tables of
``metric = limit`` (families: a backend name's first word, ``torch``, ``ort``, ``trt``; the
candidate may also be one backend such as ``ort-cpu-fp16``, which then wins over its family),
and ``[<class>.stages.'<candidate>'.<precision>]`` tables of per-stage limits (relative max
|difference|; ``depth`` in depth steps). Classes: ``cpu`` (every side of the comparison ran on
the CPU) and ``cuda`` (a side ran on an NVIDIA GPU), because their noise differs by orders of
magnitude. A missing entry is an error naming the table to add: no silent default tolerance.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.compare import LOWER_BOUNDS
from harness.errors import ConfigError, MissingFile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_TOLERANCES = Path(__file__).resolve().parents[2] / "fixtures" / "tolerances.toml"
MACHINE_CLASSES = ("cpu", "cuda")
KNOWN_METRICS = frozenset({
    "max_sq_err", "max_abs", "mean_abs", "p99_abs", "frac_over_1mm", "frac_over_2mm", "frac_over_4mm", "nan",
    "index_flips", "agreement", "max_sq_err_stable", "p99_abs_stable", "thres2mm_pp", "thres4mm_pp",
    "p99_intervals", "max_intervals", "max_intervals_confident", "p99_intervals_confident",
})
#: Tables of the file that are not machine classes.
META_TABLES = ("rule",)


def family(runner_name: str) -> str:
    return runner_name.split("-", 1)[0]


def machine_class(*devices: str | None) -> str:
    """``cuda`` when any side of a comparison ran on a CUDA device, else ``cpu``."""
    return "cuda" if any(d is not None and str(d).startswith("cuda") for d in devices) else "cpu"


def _positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


class Tolerances:
    def __init__(self, table: Mapping[str, Any], source: str) -> None:
        self.table = table
        self.source = source
        self._validate()

    @classmethod
    def load(cls, path: str | Path | None = None) -> Tolerances:
        path = Path(path) if path is not None else DEFAULT_TOLERANCES
        if not path.is_file():
            raise MissingFile(str(path), "tolerances file not found", observed="no such file", expected="a TOML file of gates",
                              fix="pass --harness-tolerances PATH or restore fixtures/tolerances.toml")
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), "not valid TOML", observed=str(exc), expected="TOML tables of numeric gates",
                              fix="fix the syntax at the reported line") from None
        return cls(table, str(path))

    # -- validation ------------------------------------------------------------------------------
    def _validate(self) -> None:
        for machine, pairs in self.table.items():
            if machine in META_TABLES:
                continue
            if machine not in MACHINE_CLASSES or not isinstance(pairs, dict):
                raise ConfigError(f"{self.source} [{machine}]", "not a machine-class table", observed=machine,
                                  expected=f"[<class>.'<reference>-vs-<candidate>'.<precision>.<output>] with <class> "
                                  f"in {', '.join(MACHINE_CLASSES)}", fix="regenerate it: python -m harness calibrate --derive")
            for pair, precisions in pairs.items():
                if pair == "stages":
                    self._validate_stages(f"{machine}.stages", precisions)
                    continue
                if not isinstance(precisions, dict) or "-vs-" not in pair:
                    raise ConfigError(f"{self.source} [{machine}.{pair}]", "not a pair table", observed=type(precisions).__name__,
                                      expected="['<reference>-vs-<candidate>'.<precision>.<output>] tables", fix="see the file's header")
                for precision, outputs in precisions.items():
                    if not isinstance(outputs, dict):
                        raise ConfigError(f"{self.source} [{machine}.{pair}.{precision}]", "not a table of outputs",
                                          observed=outputs, expected="[<pair>.<precision>.<output>] tables of gates",
                                          fix="see the file's header")
                    for output, gates in outputs.items():
                        self._validate_gates(f"{machine}.{pair}.{precision}.{output}", gates)

    def _validate_gates(self, where: str, gates: object) -> None:
        if not isinstance(gates, dict):
            raise ConfigError(f"{self.source} [{where}]", "not a table of gates", observed=gates, expected="metric = number lines")
        for metric, value in gates.items():
            if metric not in KNOWN_METRICS:
                raise ConfigError(f"{self.source} [{where}]", "unknown metric", observed=metric,
                                  expected=f"one of {', '.join(sorted(KNOWN_METRICS))}", fix="fix the metric name")
            if not _positive_number(value):
                raise ConfigError(f"{self.source} [{where}.{metric}]", "limit must be a non-negative number", observed=value,
                                  expected="e.g. 1e-3")

    def _validate_stages(self, where: str, candidates: object) -> None:
        if not isinstance(candidates, dict):
            raise ConfigError(f"{self.source} [{where}]", "not a table", observed=candidates,
                              expected=f"[{where}.'<candidate>'.<precision>] tables of stage = limit")
        for candidate, precisions in candidates.items():
            for precision, stages in (precisions.items() if isinstance(precisions, dict) else [("?", precisions)]):
                here = f"{where}.{candidate}.{precision}"
                if not isinstance(stages, dict) or not stages:
                    raise ConfigError(f"{self.source} [{here}]", "not a stage table", observed=stages,
                                      expected=f"[{where}.'<candidate>'.<precision>] tables of stage = limit",
                                      fix="see the file's header")
                for stage, value in stages.items():
                    if not _positive_number(value) or value == 0:
                        raise ConfigError(f"{self.source} [{here}.{stage}]", "limit must be a positive number", observed=value,
                                          expected="e.g. 1e-5")

    # -- lookups ---------------------------------------------------------------------------------
    def _class_table(self, machine: str) -> Mapping[str, Any]:
        if machine not in MACHINE_CLASSES:
            raise ConfigError("machine class", "unknown", observed=machine, expected=f"one of {', '.join(MACHINE_CLASSES)}")
        table = self.table.get(machine)
        if not isinstance(table, dict):
            raise ConfigError(self.source, "no gates for this machine class", observed=f"no [{machine}] tables",
                              expected=f"[{machine}.'<reference>-vs-<candidate>'.<precision>.<output>] tables",
                              fix=f"calibrate on a {machine} machine: python -m harness calibrate, then --derive")
        return table

    def _stage_table(self, candidate: str, precision: str, machine: str) -> Mapping[str, float] | None:
        stages = self._class_table(machine).get("stages", {})
        for name in (candidate, family(candidate)):
            found = stages.get(name, {}).get(precision)
            if found:
                return found
        return None

    def stages_measured(self, candidate: str, precision: str, case: str | None = None, machine: str = "cpu") -> bool:
        """True when a calibration record measured this candidate's stages in this machine class:
        its stage errors then count in the leg's verdict; elsewhere the stage table is a diagnostic."""
        return machine in self.table and self._stage_table(candidate, precision, machine) is not None

    def stage_limits(self, candidate: str, precision: str, case: str | None = None, machine: str = "cpu") -> dict[str, float]:
        """Per-stage limits of one leg (``default``: the largest relative stage limit, for stages
        the record does not name). Where the candidate's stages were not measured in this class,
        the measured table of the same precision of any candidate in the class, else in any class,
        serves as a diagnostic (``stages_measured`` is then False, so it does not count)."""
        found = self._stage_table(candidate, precision, machine) if machine in self.table else None
        if found is None:
            found = self._any_stage_table(precision, (machine, *MACHINE_CLASSES))
        limits = {k: float(v) for k, v in found.items()}
        limits["default"] = max(v for k, v in limits.items() if k != "depth")
        return limits

    def stage_limit(self, precision: str) -> float:
        """One relative limit for the stages of a graph of ``precision`` (a user graph's
        localisation table): the largest measured stage limit of that precision."""
        return self.stage_limits("ort", precision)["default"]

    def _any_stage_table(self, precision: str, machines: Iterable[str]) -> Mapping[str, float]:
        fallback = {"tf32": "fp16"}.get(precision, precision)
        for wanted in dict.fromkeys((precision, fallback)):
            for machine in dict.fromkeys(machines):
                for precisions in self.table.get(machine, {}).get("stages", {}).values():
                    if precisions.get(wanted):
                        return precisions[wanted]
        raise ConfigError(self.source, "no stage limits", observed=f"no [<class>.stages.'<candidate>'.{precision}] table",
                          expected="stage limits from a calibration record", fix="python -m harness calibrate, then --derive")

    def lookup(self, reference: str, candidate: str, precision: str, outputs: tuple[str, ...],
               case: str | None = None, machine: str = "cpu") -> dict[str, dict[str, float]]:
        """Gates per output for ``machine``'s class: the ['<pair>'.<precision>] entry of the
        candidate backend itself, else of its family. ``case`` is accepted for the fronts' calls:
        limits are calibrated over many scenes and sizes, in depth steps, so no case has its own."""
        table = self._class_table(machine)
        pair = f"{family(reference)}-vs-{family(candidate)}"
        entry = None
        for key in dict.fromkeys((f"{family(reference)}-vs-{candidate}", pair)):
            found = table.get(key, {}).get(precision) if isinstance(table.get(key), dict) else None
            if found:
                entry = found
                break
        if not entry:
            raise ConfigError(self.source, "no tolerance for this comparison", observed=f"[{machine}.'{pair}'.{precision}]",
                              expected=f"tables [{machine}.'{pair}'.{precision}.<output>] for {', '.join(outputs)}",
                              fix=f"calibrate it (python -m harness calibrate, then --derive) into {self.source}")
        missing = [o for o in outputs if o not in entry]
        if missing:
            raise ConfigError(self.source, "no tolerance for some outputs", observed=f"[{machine}.'{pair}'.{precision}] lacks {missing}",
                              expected=f"a table per output: {', '.join(outputs)}", fix=f"calibrate them into {self.source}")
        return {o: {m: float(v) for m, v in entry[o].items()} for o in outputs}

    def rule(self) -> dict[str, Any]:
        """The rule the limits were derived by (the file's [rule] table), for reports."""
        return dict(self.table.get("rule", {}))


__all__ = ["Tolerances", "family", "machine_class", "LOWER_BOUNDS", "DEFAULT_TOLERANCES", "MACHINE_CLASSES",
           "KNOWN_METRICS"]
