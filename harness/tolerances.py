"""Per-pair, per-precision, per-output gates from ``fixtures/tolerances.toml``.

Keys are ``[<reference family>-vs-<candidate family>.<precision>.<output>]``, e.g.
``["torch-vs-ort".fp32.depth]``; families are the runner name's first word (``torch``, ``ort``,
``trt``). A missing entry is an error naming the table to add: no silent default tolerance.

Per-case overrides (``[cases.<case>...]``) hold limits measured for one case where its noise is
far below the shared gate's: ``[cases.<case>.'<reference family>-vs-<candidate>'.<precision>.<output>]``
(candidate: a family such as ``ort`` or one backend such as ``ort-cpu``) and
``[cases.<case>.stages.'<candidate>'.<precision>]`` (one limit per stage, ``depth`` in depth steps).
An override may only tighten: a limit looser than the shared gate it overrides, or an override of
a gate that does not exist, is an error at load time.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.compare import LOWER_BOUNDS
from harness.errors import ConfigError, MissingFile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_TOLERANCES = Path(__file__).resolve().parents[1] / "fixtures" / "tolerances.toml"
KNOWN_METRICS = frozenset({
    "max_sq_err", "max_abs", "mean_abs", "p99_abs", "frac_over_1mm", "frac_over_2mm", "frac_over_4mm", "nan",
    "index_flips", "agreement", "max_sq_err_stable", "thres2mm_pp", "thres4mm_pp", "p99_intervals", "max_intervals",
})


def family(runner_name: str) -> str:
    return runner_name.split("-", 1)[0]


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

    def stage_limit(self, precision: str) -> float:
        """Relative per-stage limit for localisation ([stages] table, by precision)."""
        stages = self.table.get("stages")
        if not isinstance(stages, dict) or precision not in stages:
            raise ConfigError(self.source, "no stage tolerance", observed=f"[stages].{precision}",
                              expected="a number per precision under [stages]", fix=f"add '{precision} = 1e-2' to [stages]")
        return float(stages[precision])

    def _validate(self) -> None:
        for pair, precisions in self.table.items():
            if pair == "cases":
                self._validate_cases(precisions)
                continue
            if pair == "stages":
                if not isinstance(precisions, dict) or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in precisions.values()):
                    raise ConfigError(f"{self.source} [stages]", "not a table of positive numbers", observed=precisions,
                                      expected="fp32 = 1e-4 style lines", fix="see the file's header")
                continue
            if not isinstance(precisions, dict) or "-vs-" not in pair:
                raise ConfigError(f"{self.source} [{pair}]", "not a pair table", observed=type(precisions).__name__,
                                  expected="['<reference>-vs-<candidate>'.<precision>.<output>] tables", fix="see the file's header")
            for precision, outputs in precisions.items():
                if not isinstance(outputs, dict):
                    raise ConfigError(f"{self.source} [{pair}.{precision}]", "not a table of outputs",
                                      observed=outputs, expected="[<pair>.<precision>.<output>] tables of gates", fix="see the file's header")
                for output, gates in outputs.items():
                    self._validate_gates(f"{pair}.{precision}.{output}", gates, None)

    def _validate_gates(self, where: str, gates: object, base: Mapping[str, Any] | None) -> None:
        if not isinstance(gates, dict):
            raise ConfigError(f"{self.source} [{where}]", "not a table of gates", observed=gates, expected="metric = number lines")
        for metric, value in gates.items():
            if metric not in KNOWN_METRICS:
                raise ConfigError(f"{self.source} [{where}]", "unknown metric", observed=metric,
                                  expected=f"one of {', '.join(sorted(KNOWN_METRICS))}", fix="fix the metric name")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{self.source} [{where}.{metric}]", "limit must be a non-negative number", observed=value,
                                  expected="e.g. 1e-3")
            if base is not None and metric in base:
                looser = value < base[metric] if metric in LOWER_BOUNDS else value > base[metric]
                if looser:
                    raise ConfigError(f"{self.source} [{where}.{metric}]", "a per-case override may only tighten",
                                      observed=value, expected=f"{'at least' if metric in LOWER_BOUNDS else 'at most'} the shared "
                                      f"gate's {base[metric]}", fix="loosen the shared gate (measured) or drop the override")

    def _validate_cases(self, cases: object) -> None:
        if not isinstance(cases, dict):
            raise ConfigError(f"{self.source} [cases]", "not a table of cases", observed=cases, expected="[cases.<case>...] tables")
        for case, entries in cases.items():
            if not isinstance(entries, dict):
                raise ConfigError(f"{self.source} [cases.{case}]", "not a table", observed=entries, expected="see the file's header")
            for key, precisions in entries.items():
                where = f"cases.{case}.{key}"
                if not isinstance(precisions, dict):
                    raise ConfigError(f"{self.source} [{where}]", "not a table", observed=precisions, expected="see the file's header")
                if key == "stages":
                    self._validate_stage_overrides(where, precisions)
                    continue
                reference, _, candidate = key.partition("-vs-")
                shared = self.table.get(f"{reference}-vs-{family(candidate)}") if candidate else None
                for precision, outputs in precisions.items():
                    if not isinstance(outputs, dict):
                        raise ConfigError(f"{self.source} [{where}.{precision}]", "not a table of outputs", observed=outputs,
                                          expected="see the file's header")
                    for output, gates in outputs.items():
                        base = shared.get(precision, {}).get(output) if isinstance(shared, dict) else None
                        if base is None:
                            raise ConfigError(f"{self.source} [{where}.{precision}.{output}]",
                                              "overrides a gate that does not exist",
                                              observed=f"no ['{reference}-vs-{family(candidate)}'.{precision}.{output}]",
                                              expected="an override of an existing shared gate", fix="fix the key or add the gate")
                        self._validate_gates(f"{where}.{precision}.{output}", gates, base)

    def _validate_stage_overrides(self, where: str, candidates: Mapping[str, Any]) -> None:
        defaults = self.table.get("stages", {})
        for candidate, precisions in candidates.items():
            for precision, stages in (precisions.items() if isinstance(precisions, dict) else [("?", precisions)]):
                here = f"{where}.{candidate}.{precision}"
                if precision not in defaults or not isinstance(stages, dict):
                    raise ConfigError(f"{self.source} [{here}]", "not a stage table of a known precision", observed=stages,
                                      expected=f"[{where}.'<candidate>'.<precision>] with <precision> in [stages]",
                                      fix="see the file's header")
                for stage, value in stages.items():
                    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                        raise ConfigError(f"{self.source} [{here}.{stage}]", "limit must be a positive number", observed=value,
                                          expected="e.g. 1e-5")
                    if stage != "depth" and value > defaults[precision]:  # depth is in steps, the rest relative
                        raise ConfigError(f"{self.source} [{here}.{stage}]", "a per-case override may only tighten",
                                          observed=value, expected=f"at most [stages].{precision} = {defaults[precision]}",
                                          fix="loosen the shared stage limit (measured) or drop the override")

    def stage_limits(self, candidate: str, precision: str, case: str | None = None) -> dict[str, float]:
        """Per-stage limits of one leg: ``default`` (the [stages] limit of the precision, relative)
        and the case's overrides for the candidate backend (exact name, else its family)."""
        limits = {"default": self.stage_limit(precision)}
        overrides = self.table.get("cases", {}).get(case, {}).get("stages", {}) if case else {}
        for name in (family(candidate), candidate):
            limits.update({k: float(v) for k, v in overrides.get(name, {}).get(precision, {}).items()})
        return limits

    def stages_measured(self, candidate: str, precision: str, case: str | None) -> bool:
        """True when the case has per-stage gates for this candidate: its stage errors then count
        in the leg's verdict; elsewhere the stage table is a diagnostic."""
        overrides = self.table.get("cases", {}).get(case, {}).get("stages", {}) if case else {}
        return any(precision in overrides.get(name, {}) for name in (family(candidate), candidate))

    def lookup(self, reference: str, candidate: str, precision: str, outputs: tuple[str, ...],
               case: str | None = None) -> dict[str, dict[str, float]]:
        """Gates per output: the shared ['<pair>'.<precision>] entry, tightened by the case's
        overrides for the candidate's family and then for the candidate backend itself."""
        pair = f"{family(reference)}-vs-{family(candidate)}"
        entry = self.table.get(pair, {}).get(precision) if isinstance(self.table.get(pair), dict) else None
        if not entry:
            raise ConfigError(self.source, "no tolerance for this comparison", observed=f"['{pair}'.{precision}]",
                              expected=f"tables ['{pair}'.{precision}.<output>] for {', '.join(outputs)}",
                              fix=f"add them to {self.source} (measure first: the failure message prints the values that pass)")
        missing = [o for o in outputs if o not in entry]
        if missing:
            raise ConfigError(self.source, "no tolerance for some outputs", observed=f"['{pair}'.{precision}] lacks {missing}",
                              expected=f"a table per output: {', '.join(outputs)}", fix=f"add them to {self.source}")
        gates = {o: {m: float(v) for m, v in entry[o].items()} for o in outputs}
        overrides = self.table.get("cases", {}).get(case, {}) if case else {}
        for key in dict.fromkeys((pair, f"{family(reference)}-vs-{candidate}")):
            for output, limits in overrides.get(key, {}).get(precision, {}).items():
                if output in gates:
                    gates[output].update({m: float(v) for m, v in limits.items()})
        return gates


__all__ = ["Tolerances", "family", "LOWER_BOUNDS", "DEFAULT_TOLERANCES"]
