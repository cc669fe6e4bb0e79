"""Per-pair, per-precision, per-output gates from ``fixtures/tolerances.toml``.

Keys are ``[<reference family>-vs-<candidate family>.<precision>.<output>]``, e.g.
``["torch-vs-ort".fp32.depth]``; families are the runner name's first word (``torch``, ``ort``,
``trt``). A missing entry is an error naming the table to add: no silent default tolerance.
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
            raise MissingFile(str(path), "tolerances file not found", "no such file", "a TOML file of gates",
                              "pass --harness-tolerances PATH or restore fixtures/tolerances.toml")
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), "not valid TOML", str(exc), "TOML tables of numeric gates",
                              "fix the syntax at the reported line") from None
        return cls(table, str(path))

    def stage_limit(self, precision: str) -> float:
        """Relative per-stage limit for localisation ([stages] table, by precision)."""
        stages = self.table.get("stages")
        if not isinstance(stages, dict) or precision not in stages:
            raise ConfigError(self.source, "no stage tolerance", f"[stages].{precision}",
                              "a number per precision under [stages]", f"add '{precision} = 1e-2' to [stages]")
        return float(stages[precision])

    def _validate(self) -> None:
        for pair, precisions in self.table.items():
            if pair == "stages":
                if not isinstance(precisions, dict) or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in precisions.values()):
                    raise ConfigError(f"{self.source} [stages]", "not a table of positive numbers", precisions,
                                      "fp32 = 1e-4 style lines", "see the file's header")
                continue
            if not isinstance(precisions, dict) or "-vs-" not in pair:
                raise ConfigError(f"{self.source} [{pair}]", "not a pair table", type(precisions).__name__,
                                  "['<reference>-vs-<candidate>'.<precision>.<output>] tables", "see the file's header")
            for precision, outputs in precisions.items():
                if not isinstance(outputs, dict):
                    raise ConfigError(f"{self.source} [{pair}.{precision}]", "not a table of outputs",
                                      outputs, "[<pair>.<precision>.<output>] tables of gates", "see the file's header")
                for output, gates in outputs.items():
                    if not isinstance(gates, dict):
                        raise ConfigError(f"{self.source} [{pair}.{precision}.{output}]", "not a table of gates",
                                          gates, "metric = number lines")
                    for metric, value in gates.items():
                        if metric not in KNOWN_METRICS:
                            raise ConfigError(f"{self.source} [{pair}.{precision}.{output}]", "unknown metric", metric,
                                              f"one of {', '.join(sorted(KNOWN_METRICS))}", "fix the metric name")
                        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                            raise ConfigError(f"{self.source} [{pair}.{precision}.{output}.{metric}]",
                                              "limit must be a non-negative number", value, "e.g. 1e-3")

    def lookup(self, reference: str, candidate: str, precision: str, outputs: tuple[str, ...]) -> dict[str, dict[str, float]]:
        pair = f"{family(reference)}-vs-{family(candidate)}"
        entry = self.table.get(pair, {}).get(precision) if isinstance(self.table.get(pair), dict) else None
        if not entry:
            raise ConfigError(self.source, "no tolerance for this comparison", f"['{pair}'.{precision}]",
                              f"tables ['{pair}'.{precision}.<output>] for {', '.join(outputs)}",
                              f"add them to {self.source} (measure first: the failure message prints the values that pass)")
        missing = [o for o in outputs if o not in entry]
        if missing:
            raise ConfigError(self.source, "no tolerance for some outputs", f"['{pair}'.{precision}] lacks {missing}",
                              f"a table per output: {', '.join(outputs)}", f"add them to {self.source}")
        return {o: {m: float(v) for m, v in entry[o].items()} for o in outputs}


__all__ = ["Tolerances", "family", "LOWER_BOUNDS", "DEFAULT_TOLERANCES"]
