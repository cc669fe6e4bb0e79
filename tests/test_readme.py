"""The README's commands are real: the Quick start's test command is what .ci/run runs, and every
``python -m harness <sub> ...`` example in the READMEs parses with the CLI's own parser."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from harness import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
READMES = (README, ROOT / "reports" / "README.md", ROOT / "reports" / "baselines" / "README.md")
HARNESS_EXAMPLE = re.compile(r"python3? -m harness (?P<args>[a-z][^`\n]*)")


def full_parser() -> argparse.ArgumentParser:
    return cli.build_parser()


def parse(argv: list[str], where: str) -> argparse.Namespace:
    try:
        return full_parser().parse_args(argv)
    except SystemExit as exc:  # argparse reports the error on stderr, shown with the failure
        pytest.fail(f"{where}: `python -m harness {shlex.join(argv)}` does not parse (exit {exc.code})")


def quick_start_commands() -> list[str]:
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's Quick start has no ```bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]


def harness_examples() -> list[tuple[str, list[str]]]:
    """(file:line, argv after ``python -m harness``) for every example in the READMEs."""
    found = []
    for path in READMES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in HARNESS_EXAMPLE.finditer(line):
                args = re.split(r"&&|;|\|", match.group("args"))[0]
                found.append((f"{path.relative_to(ROOT)}:{number}", shlex.split(args, comments=True)))
    return found


def test_quick_start_is_the_main_job_then_the_tests():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    assert commands[0].endswith("python -m harness run")
    tests = commands[1].rpartition("&&")[2].split()
    assert tests[:3] == [".venv/bin/python", "-m", "pytest"] and "-n" in tests  # on xdist workers: 508 s -> 310 s on 2 cores


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = quick_start_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in (line.strip() for line in ci), f".ci/run does not run the README's test command: {test_command}"


def test_main_job_is_a_valid_cli_invocation():
    main_job = quick_start_commands()[0]
    setup, _, harness_part = main_job.rpartition("&&")
    argv = shlex.split(harness_part)
    assert argv[:3] == [".venv/bin/python", "-m", "harness"], harness_part
    args = parse(argv[3:], "README Quick start, command 1")
    assert args.func is cli.cmd_run
    assert "-c .ci/constraints.txt" in setup  # the same pinned set-up as the test command


@pytest.mark.parametrize(("where", "argv"), harness_examples(), ids=[w for w, _ in harness_examples()])
def test_every_harness_example_parses(where, argv):
    """An example with arguments parses (placeholders such as path/to/... or <stamp> are only strings
    to argparse, so they parse too); a bare mention in prose (`python -m harness compare`) names a
    subcommand that exists."""
    if len(argv) == 1:
        sub = next(a for a in full_parser()._actions if isinstance(a, argparse._SubParsersAction))
        assert argv[0] in sub.choices, f"{where}: no subcommand {argv[0]!r} (known: {', '.join(sub.choices)})"
        return
    args = parse(argv, where)
    assert args.command == argv[0]


#: A command that runs the interpreter or pytest found on PATH: in a fresh shell after the Quick
#: start that is the system's, without torch (the venv is never activated by the set-up).
BARE_COMMAND = re.compile(r"^(?:python3?|pytest)\s+\S")


def copyable_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every line of a fenced code block and every inline code span of
    ``text`` that reads as a command (a user copies both)."""
    found = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            found.append((number, line.strip()))
        else:
            found += [(number, span.strip()) for span in re.findall(r"`([^`\n]+)`", line)]
    return found


def bare_commands(text: str, first_line: int = 1) -> list[str]:
    return [f"line {number}: {command}" for number, command in copyable_commands(text)
            if number >= first_line and BARE_COMMAND.match(command)]


def test_bare_commands_are_found_in_blocks_and_spans_but_not_the_venv_ones():
    text = ("```bash\npython -m harness run\n.venv/bin/python -m pytest\n```\n"
            "run `pytest suites` or `.venv/bin/python -m harness doctor`; `python` alone is a word\n")
    assert bare_commands(text) == ["line 2: python -m harness run", "line 5: pytest suites"]


def test_readme_commands_after_the_quick_start_use_the_venv():
    """Quick start sets up .venv/ without activating it: a later `python -m harness ...` or `pytest`
    would run the system interpreter (ModuleNotFoundError: torch)."""
    lines = README.read_text().splitlines()
    quick_start = lines.index("## Quick start")
    after = next(i for i, line in enumerate(lines[quick_start + 1:], quick_start + 2) if line.startswith("## "))
    bare = bare_commands(README.read_text(), after)
    for path in READMES[1:]:
        bare += [f"{path.relative_to(ROOT)} {where}" for where in bare_commands(path.read_text())]
    assert not bare, f"commands that need the venv activated (use .venv/bin/python): {bare}"


def test_the_readme_shows_harness_examples():
    subcommands = {argv[0] for where, argv in harness_examples() if where.startswith("README.md")}
    assert {"run", "make-scene", "make-weights"} <= subcommands


def plugin_options() -> set[str]:
    """The flags ``harness.plugin.pytest_addoption`` registers (it adds them from harness.options)."""
    from harness.plugin import pytest_addoption

    flags: set[str] = set()

    class Group:
        def addoption(self, *opts: str, **attrs: object) -> None:
            flags.update(opts)

    class Parser:
        def getgroup(self, *args: object, **kwargs: object) -> Group:
            return Group()

    pytest_addoption(Parser())  # type: ignore[arg-type]
    return flags


def test_readme_pytest_options_are_registered_by_the_plugin():
    plugin = plugin_options()
    options = set(re.findall(r"--harness-[a-z-]*[a-z]", README.read_text()))
    assert options, "README names no --harness-* option"
    missing = sorted(o for o in options if o not in plugin)
    assert not missing, f"README names pytest options harness/plugin.py does not register: {missing}"
