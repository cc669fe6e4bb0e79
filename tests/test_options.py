"""harness.options: the options pytest and ``python -m harness`` share come from one table, and a
check that compares what each front registers with the table fails on a hand-written option."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from harness import options, vocabulary
from harness.chain import OPTION_NAMES, ChainConfig
from harness.cli import build_parser, main
from harness.options import ALL, ALL_WORD, HOMONYMS, OPTIONS, PYTEST, Default, Elsewhere, Option
from harness.plugin import NAMES

#: The vocabulary the CLI's parser is built with (harness.vocabulary: no torch import).
CLI_NAMES = vocabulary.OPTION_NAMES

pytest_plugins = ["pytester"]


class Recorder:
    """Stands in for pytest's parser in ``pytest_addoption``: records each option's keywords."""

    def __init__(self) -> None:
        self.groups: list[tuple[str, str]] = []
        self.options: dict[str, dict[str, Any]] = {}

    def getgroup(self, name: str, description: str = "") -> Recorder:
        self.groups.append((name, description))
        return self

    def addoption(self, *opts: str, **attrs: Any) -> None:
        for opt in opts:
            self.options[opt] = attrs


def registered_pytest_options() -> Recorder:
    from harness.plugin import pytest_addoption

    recorder = Recorder()
    pytest_addoption(recorder)  # type: ignore[arg-type]
    return recorder


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def described(action: argparse.Action) -> tuple[Any, ...]:
    """What a user of an argparse option sees and gets: its kind, dest, default, type, choices, help."""
    return (type(action).__name__, action.dest, action.default, action.type, action.choices, action.help,
            action.metavar, action.nargs, action.const)


def expected_action(row: Option, command: str) -> argparse.Action:
    return argparse.ArgumentParser().add_argument(row.flag(command), **row.kwargs(command, CLI_NAMES))


# -- the checks: each returns the drifts it finds (empty: every shared option comes from the table) ---------------

def pytest_drift(recorded: Recorder) -> list[str]:
    """Every --harness-* option the plugin registers is a pytest row, registered as the row says;
    every pytest row is registered."""
    found = []
    rows = {row.flag(PYTEST): row for row in options.options_for(PYTEST)}
    for flag, attrs in recorded.options.items():
        if flag not in rows:
            found.append(f"pytest {flag}: not in harness.options (add a row, and its fronts)")
        elif attrs != rows[flag].kwargs(PYTEST, NAMES):
            found.append(f"pytest {flag}: registered as {attrs}, the table says {rows[flag].kwargs(PYTEST, NAMES)}")
    found += [f"pytest {flag}: a pytest row, not registered" for flag in rows if flag not in recorded.options]
    if {name for name, _ in recorded.groups} != {"harness"}:
        found.append(f"pytest options outside the harness group: {recorded.groups}")
    return found


def cli_drift(parser: argparse.ArgumentParser) -> list[str]:
    """Every option of a subcommand spelled like a row of the table is that row, on a subcommand
    the row names (or a declared homonym), added as the row says; every row's subcommand has it."""
    found = []
    rows = {row.name: row for row in OPTIONS}
    for command, sub in subcommands(parser).items():
        present = {}
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--"):
                    present[flag[2:]] = action
        for name, action in present.items():
            row = rows.get(name)
            if row is None or (command, name) in HOMONYMS:
                continue
            if command not in row.fronts:
                found.append(f"{command} --{name}: spelled like the row {name} (on {', '.join(row.fronts)}) but not "
                             "from the table (add the subcommand to the row's fronts, or declare a homonym)")
            elif described(action) != described(expected_action(row, command)):
                found.append(f"{command} --{name}: {described(action)}, the table says "
                             f"{described(expected_action(row, command))}")
        for row in options.options_for(command):
            if row.name not in present:
                found.append(f"{command} --{row.name}: the row names {command}, which lacks it")
    return found


# -- the fronts as they are -----------------------------------------------------------------------------------------

def test_every_pytest_option_comes_from_the_table():
    recorded = registered_pytest_options()
    assert pytest_drift(recorded) == []
    assert len(recorded.options) == len(options.options_for(PYTEST)) >= 25


def test_every_cli_option_spelled_like_a_pytest_option_comes_from_the_table():
    parser = build_parser()
    assert cli_drift(parser) == []
    pytest_names = {row.name for row in options.options_for(PYTEST)}
    shared = {(command, flag[2:]) for command, sub in subcommands(parser).items() for action in sub._actions
              for flag in action.option_strings if flag[2:] in pytest_names}
    assert ("run", "trt-workspace") in shared and ("check", "onnx") in shared
    for command, name in shared - set(HOMONYMS):
        assert command in options.option(name).fronts, (command, name)


def test_both_fronts_spell_help_default_and_choices_alike():
    parser = build_parser()
    recorded = registered_pytest_options().options
    for command, sub in subcommands(parser).items():
        for row in options.options_for(command):
            if PYTEST not in row.fronts:
                continue
            action = next(a for a in sub._actions if row.flag(command) in a.option_strings)
            theirs = recorded[row.flag(PYTEST)]
            assert action.choices == theirs.get("choices") and action.type == theirs.get("type"), (command, row.name)
            elsewhere = row.elsewhere(CLI_NAMES)
            if command not in row.overrides and PYTEST not in row.overrides:
                expected = ALL_WORD if elsewhere is not None and row.default is ALL else theirs["default"]
                assert action.default == expected, (command, row.name)
            text = action.help.removesuffix(f" (default: {row.shown_for(command, CLI_NAMES)})")
            theirs_text = theirs["help"].removesuffix(f". Default: {row.shown_for(PYTEST, NAMES)}")
            if elsewhere is not None:  # the CLI points to doctor where pytest lists the registry's names
                theirs_text = theirs_text.replace(", ".join(row.allowed(NAMES)), elsewhere.where)
            assert text == theirs_text, (command, row.name)
            assert "Default" not in text and "default:" not in text and "{names}" not in text


def test_every_front_the_table_names_exists():
    commands = set(subcommands(build_parser()))
    assert set(options.fronts()) - {PYTEST} <= commands
    assert options.fronts()[0] == PYTEST


def test_homonyms_are_options_of_their_subcommand_that_no_row_gives_it():
    commands = subcommands(build_parser())
    for command, name in HOMONYMS:
        assert f"--{name}" in commands[command]._option_string_actions, (command, name)
        assert command not in options.option(name).fronts, (command, name)


def test_the_dests_are_those_the_fronts_read():
    args = build_parser().parse_args(["run", "--trt-workspace", "1024", "--cache-dir", "c"])
    assert args.trt_workspace == 1024 and args.cache_dir == Path("c")
    assert options.option("trt-workspace").dest(PYTEST) == "harness_trt_workspace"
    assert options.flag("cache-dir", PYTEST) == "--harness-cache-dir" and options.flag("cache-dir", "run") == "--cache-dir"
    with pytest.raises(KeyError, match="not on run"):
        options.flag("no-report", "run")


# -- the checks fail on a hand-written option ------------------------------------------------------------------

def test_the_pytest_check_finds_an_option_added_by_hand():
    recorded = registered_pytest_options()
    recorded.addoption("--harness-extra", default=None, help="written by hand. Default: none")
    assert pytest_drift(recorded) == ["pytest --harness-extra: not in harness.options (add a row, and its fronts)"]


def test_the_pytest_check_finds_a_help_or_default_written_by_hand():
    recorded = registered_pytest_options()
    recorded.options["--harness-trt-workspace"] = {**recorded.options["--harness-trt-workspace"], "default": 2048}
    recorded.options["--harness-device"] = {**recorded.options["--harness-device"], "help": "cpu or cuda. Default: auto"}
    assert sorted(d.split(":")[0] for d in pytest_drift(recorded)) == ["pytest --harness-device",
                                                                       "pytest --harness-trt-workspace"]


def test_the_pytest_check_finds_a_row_the_plugin_does_not_register():
    recorded = registered_pytest_options()
    del recorded.options["--harness-opset"]
    assert pytest_drift(recorded) == ["pytest --harness-opset: a pytest row, not registered"]


def test_the_cli_check_finds_an_option_added_by_hand_to_a_subcommand_the_row_does_not_name():
    parser = build_parser()
    subcommands(parser)["accuracy"].add_argument("--trt", default="auto", help="(default: auto)")
    drift = cli_drift(parser)
    assert len(drift) == 1 and drift[0].startswith("accuracy --trt: spelled like the row trt")


def test_the_cli_check_finds_a_help_default_or_choices_that_drifted():
    parser = build_parser()
    run = subcommands(parser)["run"]._option_string_actions
    run["--trt-workspace"].default = 2048
    run["--trt-buffers"].choices = ("torch", "pycuda", "numpy")
    run["--device"].help = "torch reference device: auto, cpu, cuda (default: auto)"
    assert sorted(d.split(":")[0] for d in cli_drift(parser)) == ["run --device", "run --trt-buffers",
                                                                 "run --trt-workspace"]


def test_the_cli_check_finds_a_subcommand_without_an_option_its_row_names():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run")
    for row in options.options_for("run"):
        if row.name != "opset":
            run.add_argument(row.flag("run"), **row.kwargs("run", CLI_NAMES))
    run.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")  # by hand, as before
    drift = cli_drift(parser)
    assert len(drift) == 1 and drift[0].startswith("run --opset: ('_StoreAction', 'opset', 17, <class 'int'>, None, "
                                                   "'ONNX opset (default: 17)'")
    run._remove_action(run._option_string_actions.pop("--opset"))
    assert cli_drift(parser) == ["run --opset: the row names run, which lacks it"]


def test_a_second_option_of_the_same_spelling_cannot_be_added_next_to_the_generated_one():
    parser = build_parser()
    with pytest.raises(argparse.ArgumentError, match="conflicting option string"):
        subcommands(parser)["run"].add_argument("--trt-workspace", type=int, default=2048)


def test_a_row_must_leave_the_default_to_the_generators():
    with pytest.raises(ValueError, match="must not end with"):
        Option("x", "a help text (default: 1)", (PYTEST,), default=1)
    with pytest.raises(ValueError, match="overrides for fronts it is not on"):
        Option("x", "a help text", (PYTEST,), overrides={"run": Default(1, "1")})
    with pytest.raises(ValueError, match="store_true"):
        Option("x", "a switch", (PYTEST,), action="store_true", default=False, type=int)
    with pytest.raises(ValueError, match="needs its vocabulary key"):
        Option("x", "comma list of {names}", (PYTEST,), default=ALL, listed=True)


def test_names_come_from_the_vocabulary_the_front_passes():
    row = options.option("cases")
    assert row.kwargs("run", {"cases": ("a", "b")})["help"] == "comma list of a, b (default: seed)"
    assert options.option("variants").default_for(PYTEST, {"variants": ("raw", "simplified")}) == "raw,simplified"
    assert options.option("profile").kwargs(PYTEST, {"profile": ("full", "quick")})["choices"] == ("full", "quick")
    with pytest.raises(KeyError, match="lists the names of 'cases', which the vocabulary lacks"):
        row.kwargs("run", {})
    assert NAMES["cases"] == OPTION_NAMES["cases"] == ("small", "seed", "dtu")


def test_the_parsers_copies_of_the_names_are_the_owners_names():
    """harness.vocabulary copies the names of the cases, workarounds, exporters and profiles so that
    --help need not import torch: each copy equals its owner's table (a name added to the owner
    alone fails here); the backends are not copied, the CLI's help names doctor instead."""
    from harness.check import ONNX_BACKENDS
    from harness.sensitivity import CHECKS
    from harness.timing import PROFILES

    for key, names in CLI_NAMES.items():
        if isinstance(names, Elsewhere):
            assert key == "backends" and "doctor" in names.where
        else:
            assert names == NAMES[key], key
    assert set(CLI_NAMES) == set(NAMES)
    assert vocabulary.PROFILES == tuple(sorted(PROFILES))
    assert set(vocabulary.CHECK_BACKENDS) <= set(OPTION_NAMES["backends"]) and ONNX_BACKENDS == vocabulary.CHECK_BACKENDS
    assert CHECKS == vocabulary.MUTATION_CHECKS


def test_a_list_the_parser_is_built_without_points_elsewhere_and_defaults_to_all():
    row = options.option("backends")
    where = {"backends": Elsewhere("the list doctor prints")}
    assert row.kwargs("run", where)["help"].startswith("comma list of candidate backends compared with torch strict "
                                                       "FP32: the list doctor prints (")
    assert row.default_for(options.PYTEST, where) == ALL_WORD
    assert row.default_for("run", where) is None  # run resolves its default for the device
    with pytest.raises(KeyError, match="not in this vocabulary"):
        row.allowed(where)
    args = build_parser().parse_args(["run", "--backends", "all"])
    assert args.backends == ALL_WORD
    from harness.cli import _listed

    assert _listed(args, "run", "backends") == OPTION_NAMES["backends"]  # "all": the registry's candidates


def test_one_spelling_per_option_across_subcommands():
    """An option two subcommands (or a subcommand and pytest) share is spelled alike: bench takes the
    table's --workarounds, --exporters and --profile (pytest: --harness-workarounds ...), and its
    old --workaround / --exporter still parse, hidden."""
    parser = build_parser()
    for name in ("workarounds", "exporters", "profile"):
        assert "bench" in options.option(name).fronts and PYTEST in options.option(name).fronts
    bench = subcommands(parser)["bench"]
    shown = bench.format_help()
    assert "--workarounds" in shown and "--exporters" in shown and "--workaround " not in shown
    args = parser.parse_args(["bench", "--workaround", "closed_form", "--exporter", "dynamo"])
    assert (args.workarounds, args.exporters) == ("closed_form", "dynamo")
    args = parser.parse_args(["bench"])
    assert (args.workarounds, args.exporters, args.profile) == ("precomputed", "torchscript", "quick")
    flags: dict[str, set[str]] = {}
    for sub in subcommands(parser).values():
        for action in sub._actions:
            if action.help != argparse.SUPPRESS:
                for flag in action.option_strings:
                    flags.setdefault(flag.rstrip("s"), set()).add(flag)
    # check and mutate take one case, accuracy counts scenes, make-scene/make-weights take one seed and
    # calibrate a list of them: their own meaning, their own spelling
    assert {stem: spellings for stem, spellings in flags.items() if len(spellings) > 1} == {
        "--case": {"--case", "--cases"}, "--scene": {"--scene", "--scenes"}, "--seed": {"--seed", "--seeds"}}


def test_bench_takes_one_workaround_naming_its_own_flag(capsys, tmp_path):
    assert main(["bench", "--workarounds", "precomputed,closed_form", "--report-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--workarounds | bench takes one: precomputed, closed_form" in err and "--harness-" not in err


def test_help_builds_without_importing_torch():
    """`python -m harness --help` and every `<command> --help` answer at once: building the parser
    imports neither torch nor ONNX nor the chain (5-6 s when it did)."""
    import subprocess
    import sys

    script = ("import sys; from harness.cli import build_parser, COMMANDS; build_parser(); "
              "heavy = sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'harness.chain') if m in sys.modules); "
              "print(','.join(heavy) or 'none'); print(len(COMMANDS))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    heavy, count = done.stdout.split()
    assert heavy == "none" and int(count) >= 10
    shown = subprocess.run([sys.executable, "-m", "harness", "check", "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "example:" in shown.stdout and "exit codes: 0 " in shown.stdout


def test_every_subcommand_help_has_a_description_an_example_and_its_exit_codes():
    from harness.cli import COMMANDS

    parser = build_parser()
    for command, sub in subcommands(parser).items():
        text = sub.format_help()
        listed = next(c for c in COMMANDS if c.name == command)
        assert listed.summary in " ".join(text.split()), command
        assert f"example:\n  python -m harness {command} " in text, command
        assert "exit codes: 0 " in text and "2 bad input or usage" in text and "130/143" in text, command
        example = parser.parse_args([command, *listed.example.split()])  # the example parses
        assert example.command == command


def test_every_chain_config_field_is_set_by_an_option():
    """Workspace, optimisation level, buffers, CUDA graph, dynamic shapes, TensorRT module, opset,
    device, cache, weights, scene and the sampling convention: each reaches ChainConfig from the
    options, through one mapping (ChainConfig.from_options)."""
    assert {row.chain for row in OPTIONS if row.chain} == {f.name for f in dataclasses.fields(ChainConfig)}
    assert ChainConfig.from_options({}) == ChainConfig()


def test_the_options_module_is_model_neutral_and_imports_no_front():
    """harness/options.py imports nothing of the harness (function-level imports included): not
    MVSNet's modules (harness.model, harness.data, the workarounds), not the chain, not the fronts."""
    tree = ast.parse(Path(options.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m == "harness" or m.startswith("harness.")}, imported


# -- one ChainConfig from equivalent flags ---------------------------------------------------------------------

def chain_flags(tmp_path: Path) -> dict[str, str | None]:
    """Every option that reaches ChainConfig, none at its default (None: a switch)."""
    return {"weights": str(tmp_path / "w.ckpt"), "scene": str(tmp_path / "scene"), "cache-dir": str(tmp_path / "c"),
            "device": "cpu", "opset": "18", "align-corners": "false", "trt": "tensorrt_rtx", "trt-workspace": "1024",
            "trt-opt-level": "2", "trt-dynamic": None, "trt-buffers": "pycuda", "trt-cuda-graph": None}


def argv(flags: dict[str, str | None], front: str) -> list[str]:
    out: list[str] = []
    for name, value in flags.items():
        out += [options.flag(name, front)] + ([] if value is None else [value])
    return out


def cli_chain_config(monkeypatch, command: str, extra: list[str]) -> ChainConfig:
    """The ChainConfig ``python -m harness <command>`` hands to the start-of-session checks."""
    from harness import preflight
    from harness.errors import PreflightError

    seen: dict[str, ChainConfig] = {}

    def capture(config, cases, report_dir, flags, memory_gib=None):
        seen["config"] = config
        raise PreflightError("stop", "captured")

    monkeypatch.setattr(preflight, "preflight", capture)
    assert main([command, *extra]) == 2
    return seen["config"]


@pytest.mark.parametrize("command, extra", [
    ("run", ["--cases", "small"]), ("bench", ["--cases", "small"]), ("check", ["--onnx", "user.onnx"]),
])
def test_python_m_harness_and_pytest_build_the_same_chain_config(pytester, monkeypatch, tmp_path, command, extra):
    from harness.plugin import options as harness_options

    flags = {n: v for n, v in chain_flags(tmp_path).items() if command in options.option(n).fronts}
    assert {"trt-workspace", "trt-opt-level", "trt-buffers", "trt-cuda-graph", "trt", "device", "cache-dir",
            "align-corners"} <= set(flags)
    cli = cli_chain_config(monkeypatch, command, [*extra, *argv(flags, command)])
    config = pytester.parseconfigure("-p", "harness.plugin", "--harness-no-report", *argv(flags, PYTEST))
    from_pytest = harness_options(config).chain
    assert cli == from_pytest
    assert (cli.trt_workspace_mib, cli.trt_opt_level, cli.trt_buffers, cli.trt_cuda_graph, cli.trt_flavour,
            cli.device, cli.align_corners, cli.cache_dir) == (1024, 2, "pycuda", True, "tensorrt_rtx", "cpu", False,
                                                             tmp_path / "c")
    if command != "check":  # check gates the user's graph: no export, no dynamic profile of its own
        assert (cli.opset, cli.trt_dynamic, cli.weights, cli.scene) == (18, True, tmp_path / "w.ckpt",
                                                                          tmp_path / "scene")


def test_defaults_give_chain_configs_defaults_on_both_fronts(pytester, monkeypatch):
    from harness.plugin import options as harness_options

    assert cli_chain_config(monkeypatch, "run", ["--cases", "small"]) == ChainConfig()
    assert harness_options(pytester.parseconfigure("-p", "harness.plugin", "--harness-no-report")).chain == ChainConfig()
