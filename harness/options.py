"""The options the pytest plugin and ``python -m harness`` have in common, declared once.

Every row of :data:`OPTIONS` is one option: its base name (``trt-workspace``), how a value
parses, its default, its choices, its help and the fronts that carry it. A front is ``pytest``
(the option is ``--harness-<name>``, dest ``harness_<name>``, in the harness's option group) or a
subcommand of ``python -m harness`` (``--<name>``, dest ``<name>``). Two generators register the
rows: :func:`add_pytest_options` and :func:`add_cli_options`; each appends the default to the help
in its front's style (pytest: ``... Default: X``; argparse: ``... (default: X)``), so help, default
and choices cannot differ between the fronts except where a row says so (``overrides``).

The module is model-neutral: it imports nothing of the harness. What a model's harness names
(its cases, candidate backends, graph variants ...) reaches the rows that list them (``names``)
as a vocabulary the fronts pass in (``harness.chain.OPTION_NAMES`` for MVSNet's). :func:`chain_fields`
maps parsed values to ``ChainConfig`` fields (``ChainConfig.from_options``: the one place where
either front's options reach the chain).

Options of one front that mean something of their own stay with that front's code; those whose
spelling a row also uses are listed in :data:`HOMONYMS` with what they mean instead.

Imports go one way: the fronts (plugin, cli, check, sensitivity, doctor), chain and preflight
import this module; it imports none of them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYTEST = "pytest"


@dataclass(frozen=True)
class Elsewhere:
    """A vocabulary entry a front builds without (its owner is costly to import: the backend
    registry imports torch): the help points to ``where`` instead of listing the names, a default
    of all of them is the word ``all``, and the front checks values against the owner afterwards."""

    where: str


#: ``{vocabulary key: the names it holds}``: what the rows with ``names`` list, passed by the fronts.
Vocabulary = Mapping[str, "tuple[str, ...] | Elsewhere"]
#: How a front built with an ``Elsewhere`` entry spells "every name" (the default ``ALL``).
ALL_WORD = "all"


class _All:
    def __repr__(self) -> str:
        return "ALL"


#: The default of a comma list that holds every name of its vocabulary entry.
ALL: Any = _All()


@dataclass(frozen=True)
class Default:
    """A front's own default, and how its help spells it."""

    value: Any
    shown: str


@dataclass(frozen=True)
class Option:
    name: str  # base name: --harness-<name> (pytest), --<name> (python -m harness)
    help: str  # what it means, without the default (the generators append it)
    fronts: tuple[str, ...]  # "pytest" and/or subcommands of python -m harness
    default: Any = None
    shown: str | None = None  # how the help spells the default; None: the default as it is
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    action: str | None = None  # "store_true", "append"; None: store
    metavar: str | None = None
    names: str | None = None  # vocabulary key: its names are the choices, or with listed, what the list may hold
    listed: bool = False  # a comma list of the names (checked after parsing); help's {names} lists them
    chain: str | None = None  # the ChainConfig field it sets
    to_chain: Callable[[Any], Any] | None = None  # parsed value -> ChainConfig value; None: as parsed
    overrides: Mapping[str, Default] = field(default_factory=dict, hash=False)  # fronts with a default of their own

    def __post_init__(self) -> None:
        if not self.fronts or len(set(self.fronts)) != len(self.fronts):
            raise ValueError(f"option {self.name}: fronts must name each front once: {self.fronts}")
        if set(self.overrides) - set(self.fronts):
            raise ValueError(f"option {self.name}: overrides for fronts it is not on: "
                             f"{sorted(set(self.overrides) - set(self.fronts))}")
        if self.help.rstrip().endswith(".") or "default:" in self.help.lower():
            raise ValueError(f"option {self.name}: the help must not end with '.' nor name its default")
        if self.action == "store_true" and (self.type or self.choices or self.metavar or self.default is not False):
            raise ValueError(f"option {self.name}: a store_true option takes no type, choices or metavar")
        if self.names is not None and self.choices is not None:
            raise ValueError(f"option {self.name}: choices come from its names ({self.names}), not both")
        if (self.listed or self.default is ALL) and self.names is None:
            raise ValueError(f"option {self.name}: a comma list of names needs its vocabulary key (names=)")

    def flag(self, front: str) -> str:
        return f"--harness-{self.name}" if front == PYTEST else f"--{self.name}"

    def dest(self, front: str) -> str:
        snake = self.name.replace("-", "_")
        return f"harness_{snake}" if front == PYTEST else snake

    def allowed(self, vocabulary: Vocabulary) -> tuple[str, ...]:
        """The names this row lists, from ``vocabulary`` (KeyError naming the key when it lacks them)."""
        if self.names is None:
            return ()
        if self.names not in vocabulary:
            raise KeyError(f"option {self.name} lists the names of {self.names!r}, which the vocabulary lacks")
        names = vocabulary[self.names]
        if isinstance(names, Elsewhere):
            raise KeyError(f"option {self.name}: the names of {self.names!r} are not in this vocabulary "
                           f"({names.where})")
        return tuple(names)

    def elsewhere(self, vocabulary: Vocabulary | None) -> Elsewhere | None:
        """The ``Elsewhere`` entry this row's names are in ``vocabulary``, if they are."""
        names = (vocabulary or {}).get(self.names) if self.names is not None else None
        return names if isinstance(names, Elsewhere) else None

    def default_for(self, front: str, vocabulary: Vocabulary | None = None) -> Any:
        default = self.overrides[front].value if front in self.overrides else self.default
        if default is ALL and self.elsewhere(vocabulary) is not None:
            return ALL_WORD
        return ",".join(self.allowed(vocabulary or {})) if default is ALL else default

    def shown_for(self, front: str, vocabulary: Vocabulary | None = None) -> str:
        if front in self.overrides:
            return self.overrides[front].shown
        if self.shown is not None:
            return self.shown
        if self.action == "store_true":
            return "off"
        default = self.default_for(front, vocabulary)
        return "none" if default is None else str(default)

    def help_for(self, front: str, vocabulary: Vocabulary | None = None) -> str:
        elsewhere = self.elsewhere(vocabulary)
        listing = elsewhere.where if elsewhere is not None else ", ".join(self.allowed(vocabulary or {}))
        text = self.help.replace("{names}", listing) if self.listed else self.help
        if front == PYTEST:
            return f"{text}. Default: {self.shown_for(front, vocabulary)}"
        return f"{text} (default: {self.shown_for(front, vocabulary)})"

    def kwargs(self, front: str, vocabulary: Vocabulary | None = None) -> dict[str, Any]:
        """The keyword arguments of ``add_argument`` (argparse) / ``addoption`` (pytest) on ``front``."""
        if front not in self.fronts:
            raise KeyError(f"option {self.name} is not on {front}")
        kwargs: dict[str, Any] = {"dest": self.dest(front), "default": self.default_for(front, vocabulary),
                                  "help": self.help_for(front, vocabulary)}
        for key in ("action", "type", "choices", "metavar"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        if self.names is not None and not self.listed:
            kwargs["choices"] = self.allowed(vocabulary or {})
        return kwargs


def _is_true(text: str | None) -> bool:
    return text != "false"  # None: not given (check with --model leaves the convention to the user's code)


#: Fronts whose chain runs parity legs and builds engines (check: of the user's ONNX).
CHAIN = (PYTEST, "run", "bench", "check")
_EXPORT = (PYTEST, "run", "bench")  # fronts that export the harness's own graphs

OPTIONS: tuple[Option, ...] = (
    # -- what to run
    Option("profile", "quick or full. pytest: quick runs the small case (CI), full small and seed (3x512x640, "
           "D=192); both fronts: the benchmarks' timing (quick: >=10 rounds and >=1 s; full: >=20 rounds and >=3 s)",
           (PYTEST, "bench"), default="quick", names="profile"),
    Option("cases", "comma list of {names}", (PYTEST, "run", "bench", "accuracy"), default="seed",
           names="cases", listed=True, overrides={PYTEST: Default(None, "the profile's cases")}),
    Option("backends", "comma list of candidate backends compared with torch strict FP32: {names} "
           "(those unavailable here are skipped with the reason)", (PYTEST, "run"), default=ALL,
           shown="all of them", names="backends", listed=True,
           overrides={"run": Default(None, "all of them; with the reference on a GPU, less the CPU legs whose "
                                          "graph a GPU leg runs (the backend's gpu_default)")}),
    Option("workarounds", "comma list of torch.inverse workarounds: {names} (custom_op: torchscript exporter and "
           "ONNX Runtime only; bench: one, its graphs are timed)", (PYTEST, "run", "bench"), default=ALL,
           names="workarounds", listed=True, overrides={"bench": Default("precomputed", "precomputed")}),
    Option("exporters", "comma list of ONNX exporters: {names} (bench: one)", (PYTEST, "run", "bench"), default=ALL,
           names="exporters", listed=True, overrides={"run": Default("torchscript", "torchscript"),
                                                      "bench": Default("torchscript", "torchscript")}),
    Option("variants", "comma list of ONNX graphs to run: {names}", (PYTEST, "run"), default=ALL,
           names="variants", listed=True),
    # -- the chain: model, data, device, export and TensorRT settings (ChainConfig)
    Option("weights", "checkpoint of the torch model (MVSNet_pytorch format)", (*CHAIN, "accuracy", "calibrate"), type=Path,
           shown="the bundled fixtures/weights/mvsnet-default.ckpt", chain="weights"),
    Option("scene", "DTU-format scene folder (images/, cams/, pair.txt)", CHAIN, type=Path,
           shown="the bundled fixtures/scenes/synthetic-000", chain="scene"),
    Option("device", "device of the torch model (the reference): auto, cpu, cuda[:N]", (*CHAIN, "accuracy", "train", "calibrate"),
           default="auto", chain="device"),
    Option("cache-dir", "artifact cache folder (exported graphs, engines)",
           (*CHAIN, "accuracy", "mutate", "doctor", "calibrate"), type=Path,
           shown="$HARNESS_CACHE_DIR or ~/.cache/mvsnet-trt-harness", chain="cache_dir"),
    Option("opset", "ONNX opset of the exported graphs", _EXPORT, default=17, type=int, chain="opset"),
    Option("align-corners", "the torch reference's sampling convention (the checkpoints were trained with true)",
           (*CHAIN, "calibrate"), default="true", choices=("true", "false"), chain="align_corners", to_chain=_is_true,
           overrides={"check": Default(None, "true; with --model, your code's own grid_sample convention"),
                      PYTEST: Default(None, "true; with --harness-model, refused: your code's grid_sample decides")}),
    Option("trt", "TensorRT module for the TensorRT legs; auto prefers tensorrt, then tensorrt_rtx", CHAIN,
           default="auto", choices=("auto", "tensorrt", "tensorrt_rtx"), chain="trt_flavour"),
    Option("trt-workspace", "TensorRT builder workspace limit in MiB", CHAIN, default=4096, type=int,
           chain="trt_workspace_mib"),
    Option("trt-opt-level", "TensorRT builder optimisation level 0-5", CHAIN, default=3, type=int,
           chain="trt_opt_level"),
    Option("trt-dynamic", "build engines with one profile over H, W and D (min small, opt the case, max DTU) "
           "instead of static shapes", _EXPORT, default=False, action="store_true", chain="trt_dynamic"),
    Option("trt-buffers", "TensorRT I/O buffers: torch CUDA tensors, or pycuda pinned host + device copies",
           CHAIN, default="torch", choices=("torch", "pycuda"), chain="trt_buffers"),
    Option("trt-cuda-graph", "replay TensorRT's enqueue from a CUDA graph (trtexec 11's default)", CHAIN,
           default=False, action="store_true", chain="trt_cuda_graph"),
    # -- gates and records
    Option("tolerances", "tolerances TOML (parity, accuracy and stage gates)", (*CHAIN, "mutate", "calibrate"), type=Path,
           shown="fixtures/tolerances.toml"),
    Option("family", "synthetic scene family: classic (the bundled weights' training scenes), wide (every rig kind, "
           "occluders at several depths, grazing planes, textures at several scales, gain and noise), independent "
           "(held out from training: toed-in rings with wide baselines, a texture style training never sees; "
           "accuracy only)", ("train", "accuracy"), default="wide", names="families",
           overrides={"accuracy": Default("classic", "classic")}),
    Option("report-dir", "where each run writes <utc-stamp>/run.json and report.md", (*CHAIN, "accuracy"),
           default=PROJECT_ROOT / "reports", type=Path, shown="reports/"),
    Option("no-report", "write no run record", (PYTEST,), default=False, action="store_true"),
    Option("localize", "run stage probes on every ONNX Runtime parity leg and print a per-stage error table "
           "(always done for a failing leg); where fixtures/tolerances.toml has measured per-stage gates for "
           "the case and backend, stage errors count in the verdict", (PYTEST,), default=False, action="store_true"),
    Option("gpus", "one pytest-xdist worker per GPU: all, or a comma list of GPU indices; needs -n <count> "
           "(--dist each runs every test on every GPU, --dist load spreads them)", (PYTEST,), shown="off"),
    Option("golden", "also compare ONNX Runtime CPU legs with the outputs stored in DIR for their graph variant "
           "(catches bugs below cross-runtime noise; baseline: python -m harness mutate --write-golden DIR)",
           (PYTEST,), type=Path, metavar="DIR", shown="off"),
    Option("save-polygraphy", "save every parity leg's inputs and torch reference for Polygraphy and trtexec, with "
           "ready commands (commands.sh), under DIR/<leg id>/; a failing leg always saves its replay, under "
           "<report dir>/replays/<leg id>/ without this option", (PYTEST,), type=Path, metavar="DIR",
           shown="off (failing legs only)"),
    # -- the user's own conversion (pytest: suites/test_user_artifacts.py; python -m harness check)
    Option("onnx", "your ONNX graph to gate against the torch reference (repeatable)", (PYTEST, "check"),
           type=Path, action="append", metavar="FILE"),
    Option("engine", "your serialized TensorRT engine to gate (repeatable)", (PYTEST, "check"), type=Path,
           action="append", metavar="FILE"),
    Option("model", "your model code as the torch reference: a factory, with keyword=literal arguments when it needs "
           "them, e.g. 'models.mvsnet:MVSNet(refine=False)' from an MVSNet_pytorch checkout (check: alone, it says "
           "which sampling convention your code computes and what the other costs)", (PYTEST, "check"),
           metavar="MODULE:CALLABLE", shown="the harness's MVSNet"),
    Option("io-map", "bind your graph's tensors to the model's input and output roles", (PYTEST, "check"),
           metavar="NAME=ROLE,...", shown="by name, the article's names, or position"),
)

#: Options of one subcommand spelled like a row above but meaning something else; they stay with
#: their subcommand's code. ``(subcommand, name): what it is there``.
HOMONYMS: dict[tuple[str, str], str] = {
    ("bench", "backends"): "the backends to time (harness.bench), by default every one for the device; the registry's "
                           "names, ort-cpu and ort-cuda timed per graph (-raw, -simplified)",
    ("check", "backends"): "the backends that run the user's ONNX graph (harness.check.ONNX_BACKENDS)",
    ("check", "save-polygraphy"): "one replay per user graph and case, in DIR (or DIR/<graph stem>/, DIR/<case>/)",
    ("calibrate", "family"): "calibration, property-rigs or held-out: which corpus the calibrator measures "
                             "(harness.calibrate)",
    ("mutate", "golden"): "goldens the mutated graphs are compared with, by default baselined in the run",
    ("mutate", "workarounds"): "with --write-golden: the graphs to baseline",
    ("mutate", "exporters"): "with --write-golden: the graphs to baseline",
}

_BY_NAME = {o.name: o for o in OPTIONS}
if len(_BY_NAME) != len(OPTIONS):
    raise ValueError("harness.options: two rows share a name")


def option(name: str, front: str | None = None) -> Option:
    """The row ``name``; with ``front``, one that front carries (else ``KeyError``)."""
    found = _BY_NAME[name]
    if front is not None and front not in found.fronts:
        raise KeyError(f"option {name} is not on {front} (it is on {', '.join(found.fronts)})")
    return found


def flag(name: str, front: str) -> str:
    """How ``front`` spells option ``name``: ``flag("cache-dir", "pytest") == "--harness-cache-dir"``."""
    return option(name, front).flag(front)


def options_for(front: str) -> tuple[Option, ...]:
    return tuple(o for o in OPTIONS if front in o.fronts)


def fronts() -> tuple[str, ...]:
    """Every front a row names: pytest first, then the subcommands in order of appearance."""
    return tuple(dict.fromkeys(f for o in OPTIONS for f in o.fronts))


class OptionGroup(Protocol):
    def addoption(self, *opts: str, **attrs: Any) -> None: ...


def add_pytest_options(group: OptionGroup, vocabulary: Vocabulary) -> None:
    """Register every pytest row in ``group`` (the harness's ``parser.getgroup(...)``)."""
    for row in options_for(PYTEST):
        group.addoption(row.flag(PYTEST), **row.kwargs(PYTEST, vocabulary))


def add_cli_options(parser: argparse.ArgumentParser, command: str, vocabulary: Vocabulary | None = None) -> None:
    """Add the rows ``command`` carries to its (sub)parser (``vocabulary``: for rows that list names)."""
    for row in options_for(command):
        parser.add_argument(row.flag(command), **row.kwargs(command, vocabulary))


def parsed_values(front: str, get: Callable[[str], Any]) -> dict[str, Any]:
    """``{name: parsed value}`` of the rows ``front`` carries; ``get(dest)`` reads one."""
    return {o.name: get(o.dest(front)) for o in options_for(front)}


def namespace_values(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The parsed values of a ``python -m harness <command>`` namespace."""
    return parsed_values(command, lambda dest: getattr(args, dest))


def chain_fields(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """``{ChainConfig field: value}`` of parsed values by name (``parsed_values``); fields whose
    options are absent are left out (they keep ChainConfig's defaults)."""
    fields: dict[str, Any] = {}
    for row in OPTIONS:
        if row.chain is not None and row.name in parsed:
            value = parsed[row.name]
            fields[row.chain] = row.to_chain(value) if row.to_chain is not None else value
    return fields


__all__ = ["ALL", "ALL_WORD", "HOMONYMS", "Elsewhere", "OPTIONS", "PYTEST", "Default", "Option", "Vocabulary", "add_cli_options",
           "add_pytest_options", "chain_fields", "flag", "fronts", "namespace_values", "option", "options_for",
           "parsed_values"]
