"""Unit tests of harness/plugin.py: inner pytest sessions (pytester) that load only the plugin."""

from __future__ import annotations

import re

import pytest
import torch

from harness.plugin import MARKERS, PROJECT_ROOT
from harness.report.record import load_record

pytest_plugins = ["pytester"]

GATE = """
from harness.compare import assert_parity


def test_parity(parity, parity_leg):
    result = parity(parity_leg)
    assert_parity(result.diffs, parity_leg.id)
"""

MARKED = """
import pytest


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.slow
@pytest.mark.benchmark
def test_marked():
    pass
"""

FIXTURES = """
def test_options(harness_options):
    assert harness_options.cases == ("small",)
    assert harness_options.report_dir is None


def test_tolerances(tolerances):
    assert tolerances.lookup("torch-fp32", "ort-cpu", "fp32", ("depth",))
"""


@pytest.fixture
def cache_dir(tmp_path_factory):
    # a temporary cache shared with the other modules that export the same small graph
    return str(tmp_path_factory.getbasetemp() / "shared-onnx-cache")


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "harness.plugin", "-p", "no:cacheprovider", *args)


def _harness_help(lines: list[str]) -> dict[str, str]:
    """``{option: its help text joined on one line}`` from the harness group of ``--help``."""
    start = next(i for i, line in enumerate(lines) if line.startswith("MVSNet torch -> ONNX -> TensorRT parity harness"))
    options: dict[str, str] = {}
    current = None
    for line in lines[start + 1:]:
        if not line.strip():
            break
        match = re.match(r"\s{2}(--harness-[a-z-]+)(\S*)\s*(.*)", line)
        if match:
            current = match.group(1)
            options[current] = match.group(3).strip()
        elif current is not None:
            options[current] = (options[current] + " " + line.strip()).strip()
    return options


def test_contradictory_report_flags_are_a_usage_error_naming_both(pytester, tmp_path):
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = _run(pytester, "--harness-no-report", "--harness-report-dir", str(tmp_path / "x"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stderr.str()
    assert "--harness-no-report" in text and "--harness-report-dir" in text


def test_align_corners_with_model_is_a_usage_error_with_the_reason_as_check_refuses_it(pytester):
    """check refuses --align-corners with --model (exit 2): the pytest front refuses the pair too,
    whichever value, instead of ignoring the flag for the user's legs."""
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    for value in ("true", "false"):
        result = _run(pytester, "--harness-no-report", "--harness-model", "models.mvsnet:MVSNet(refine=False)",
                      "--harness-align-corners", value)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        text = " ".join(result.stderr.str().split())
        assert (f"--harness-align-corners {value} contradicts --harness-model models.mvsnet:MVSNet(refine=False)"
                in text)
        assert "your code, whose grid_sample decides the sampling convention" in text
    alone = _run(pytester, "--harness-no-report", "--harness-align-corners", "false")  # without --harness-model: honoured
    assert alone.ret == 0


def test_unknown_case_is_a_usage_error_listing_valid_values(pytester):
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = _run(pytester, "--harness-no-report", "--harness-cases", "small,huge")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stderr.str()
    assert "--harness-cases" in text
    assert "huge" in text
    for valid in ("small", "seed", "dtu"):
        assert valid in text


@pytest.mark.parametrize("flag, value", [
    ("--harness-backends", "trt-int4"), ("--harness-exporters", "tracing"), ("--harness-workarounds", "none"),
    ("--harness-variants", "optimised"), ("--harness-backends", ","),
])
def test_other_unknown_values_are_usage_errors_naming_the_flag(pytester, flag, value):
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = _run(pytester, "--harness-no-report", flag, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert flag in result.stderr.str()


def test_help_lists_every_harness_option_with_its_default(pytester):
    result = _run(pytester, "--help")
    assert result.ret == 0
    options = _harness_help(result.outlines)
    assert {"--harness-profile", "--harness-cases", "--harness-backends", "--harness-workarounds",
            "--harness-exporters", "--harness-variants", "--harness-device", "--harness-opset",
            "--harness-weights", "--harness-scene", "--harness-cache-dir", "--harness-tolerances",
            "--harness-report-dir", "--harness-no-report"} <= set(options)
    for option, text in options.items():
        assert re.search(r"Default: \S.*$", text), f"{option} help does not end with its default: {text!r}"
        assert "Default:" not in text.split("Default:", 1)[0]


def test_markers_are_registered_for_strict_markers(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # pytest-benchmark must not register 'benchmark'
    pytester.makepyfile(test_marked=MARKED)
    result = _run(pytester, "--strict-markers", "--harness-no-report")
    result.assert_outcomes(passed=1)


def test_an_unregistered_marker_still_fails_under_strict_markers(pytester):
    pytester.makepyfile(test_marked="import pytest\n\n@pytest.mark.gpux\ndef test_marked():\n    pass\n")
    result = _run(pytester, "--strict-markers", "--harness-no-report")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*'gpux' not found in `markers` configuration option*"])


def test_markers_appear_in_the_marker_list(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = _run(pytester, "--markers", "--harness-no-report")
    assert {"gpu", "trt", "slow", "benchmark"} <= set(MARKERS)
    for marker, text in MARKERS.items():
        result.stdout.fnmatch_lines([f"@pytest.mark.{marker}: {text}"])


def test_header_line_starts_with_the_profile(pytester):
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = _run(pytester, "--harness-no-report", "--harness-profile", "full")
    header = [line for line in result.outlines if line.startswith("harness: profile=")]
    assert len(header) == 1
    assert header[0].startswith("harness: profile=full | ")
    if not torch.cuda.is_available():
        assert "| no GPU |" in header[0]


def test_session_fixtures_follow_the_options(pytester, cache_dir):
    pytester.makepyfile(test_fixtures=FIXTURES)
    result = _run(pytester, "--harness-no-report", "--harness-cache-dir", cache_dir)
    result.assert_outcomes(passed=2)


def test_parity_run_passes_prints_the_summary_and_writes_a_report(pytester, cache_dir, tmp_path):
    pytester.makepyfile(test_gate=GATE)
    reports = tmp_path / "reports"
    result = _run(
        pytester, "-rs", "-v",
        "--harness-backends", "ort-cpu,ort-cuda", "--harness-exporters", "torchscript",
        "--harness-workarounds", "precomputed", "--harness-variants", "raw",
        "--harness-cache-dir", cache_dir, "--harness-report-dir", str(reports), "--harness-device", "cpu",
    )
    leg = "ort-cpu-raw-vs-torch-fp32-precomputed-torchscript-small"
    result.stdout.fnmatch_lines([f"*test_parity?{leg}? PASSED*"])
    if torch.cuda.is_available():
        result.assert_outcomes(passed=2)
    else:
        result.assert_outcomes(passed=1, skipped=1)
        result.stdout.fnmatch_lines(["SKIPPED*ort-cuda: no CUDA device*"])
    out = result.stdout.str()
    assert "harness parity" in out
    summary = [line for line in result.outlines if line.startswith(("ok ", "FAIL "))]
    assert summary == [line for line in summary if line.startswith("ok   ort-cpu raw precomputed/torchscript small ")]
    assert len(summary) == 1 and len(summary[0]) <= 120
    verdict = [line for line in result.outlines if line.startswith(("PASS ", "FAIL ", "INCOMPLETE", "NO LEG"))]
    skipped = "" if torch.cuda.is_available() else "; 1 backend skipped (no CUDA device: ort-cuda)"
    assert verdict == [f"PASS 1 leg within its gates{skipped}"]
    (folder,) = list(reports.iterdir())
    assert f"**{verdict[0]}**" in (folder / "report.md").read_text()  # the same line opens report.md
    record = load_record(folder)
    assert record.kind == "pytest"
    assert record.profile == "quick"
    assert [row["id"] for row in record.parity] == [leg]
    assert record.parity[0]["passed"] is True
    assert f"report: {folder}" in out


def test_no_report_writes_nothing(pytester, cache_dir):
    default_reports = PROJECT_ROOT / "reports"
    before = sorted(default_reports.iterdir()) if default_reports.is_dir() else []
    pytester.makepyfile(test_gate=GATE)
    result = _run(
        pytester, "--harness-no-report", "--harness-backends", "ort-cpu", "--harness-exporters", "torchscript",
        "--harness-workarounds", "precomputed", "--harness-variants", "raw", "--harness-cache-dir", cache_dir,
    )
    result.assert_outcomes(passed=1)
    assert "harness parity" in result.stdout.str()
    assert not [line for line in result.outlines if line.startswith("report: ")]
    assert (sorted(default_reports.iterdir()) if default_reports.is_dir() else []) == before


MIXED = GATE + """
import pytest


def test_fails():
    assert 1 == 2


@pytest.mark.xfail(reason="known", strict=True)
def test_xfails():
    assert False


def test_skips():
    pytest.skip("nothing here")


@pytest.fixture
def broken():
    raise RuntimeError("setup broke")


def test_errors(broken):
    pass
"""


def test_run_record_holds_the_session_counts_wall_time_and_slowest_tests(pytester, cache_dir, tmp_path):
    pytester.makepyfile(test_mixed=MIXED)
    reports = tmp_path / "reports"
    result = _run(
        pytester, "--harness-backends", "ort-cpu", "--harness-exporters", "torchscript",
        "--harness-workarounds", "precomputed", "--harness-variants", "raw", "--harness-device", "cpu",
        "--harness-cache-dir", cache_dir, "--harness-report-dir", str(reports),
    )
    result.assert_outcomes(passed=1, failed=1, skipped=1, xfailed=1, errors=1)
    (folder,) = list(reports.iterdir())
    session = load_record(folder).session
    assert {k: session[k] for k in ("passed", "failed", "skipped", "xfailed", "errors")} == {
        "passed": 1, "failed": 1, "skipped": 1, "xfailed": 1, "errors": 1}
    assert session["wall_s"] > 0
    slowest = session["slowest"]
    assert 1 <= len(slowest) <= 10 and all(isinstance(s, float) for _, s in slowest)
    assert [s for _, s in slowest] == sorted((s for _, s in slowest), reverse=True)
    assert slowest[0][0].endswith("test_parity[ort-cpu-raw-vs-torch-fp32-precomputed-torchscript-small]")
    assert "1 passed, 1 failed, 1 skipped, 1 xfailed, 1 errors" in (folder / "report.md").read_text()
    # the verdict counts the failed test and the setup error, not only the parity legs
    # (the test ids carry pytester's folder when the whole suite runs: match their ends)
    line = next((x for x in result.outlines if x.startswith("FAIL 1 leg within its gates; 2 other failures: ")), "")
    assert "test_mixed.py::test_fails, " in line and line.endswith("test_mixed.py::test_errors (setup)"), line
    assert f"**{line}**" in (folder / "report.md").read_text()


# -- replays for Polygraphy and trtexec (harness/report/replay.py) -----------------------------

GATE_WITH_DETAIL = """
from harness.compare import assert_parity


def test_parity(parity, parity_leg):
    result = parity(parity_leg)
    assert_parity(result.diffs, parity_leg.id, result.localisation)
"""
SMALL_ORT_LEG = ("--harness-backends", "ort-cpu", "--harness-exporters", "torchscript",
                 "--harness-workarounds", "precomputed", "--harness-variants", "raw", "--harness-device", "cpu")


def test_save_polygraphy_writes_every_legs_replay_and_the_report_links_it(pytester, cache_dir, tmp_path):
    pytest.importorskip("polygraphy")
    pytester.makepyfile(test_gate=GATE)
    replays, reports = tmp_path / "replays", tmp_path / "reports"
    result = _run(pytester, *SMALL_ORT_LEG, "--harness-cache-dir", cache_dir, "--harness-report-dir", str(reports),
                  "--harness-save-polygraphy", str(replays))
    result.assert_outcomes(passed=1)
    leg = "ort-cpu-raw-vs-torch-fp32-precomputed-torchscript-small"
    folder = replays / leg
    assert sorted(p.name for p in folder.iterdir()) == ["commands.sh", "inputs", "inputs.json", "model.onnx",
                                                        "reference", "reference_outputs.json"]
    (run,) = list(reports.iterdir())
    row = load_record(run).parity[0]
    assert row["passed"] is True and row["replay"] == str(folder / "commands.sh")
    assert f"- {leg}: [commands.sh](<{folder / 'commands.sh'}>)" in (run / "report.md").read_text()


def test_a_failing_leg_always_saves_its_replay_into_the_reports_folder(pytester, cache_dir, tmp_path):
    pytest.importorskip("polygraphy")
    source = (PROJECT_ROOT / "fixtures" / "tolerances.toml").read_text()
    strict = re.sub(r'(\[cpu\."torch-vs-ort"\.fp32\.depth\]\n)[^\[]*', r"\1max_abs = 0.0\n\n", source, count=1)
    assert strict != source
    (tmp_path / "strict.toml").write_text(strict)
    pytester.makepyfile(test_gate=GATE_WITH_DETAIL)
    reports = tmp_path / "reports"
    result = _run(pytester, *SMALL_ORT_LEG, "--harness-cache-dir", cache_dir, "--harness-report-dir", str(reports),
                  "--harness-tolerances", str(tmp_path / "strict.toml"))
    result.assert_outcomes(failed=1)
    leg = "ort-cpu-raw-vs-torch-fp32-precomputed-torchscript-small"
    commands = reports / "replays" / leg / "commands.sh"
    assert commands.is_file()
    text = commands.read_text()
    assert "--check-error-stat depth:max" in text and "depth:0.0" in text and "--rtol 0" in text
    result.stdout.fnmatch_lines([f"*Polygraphy / trtexec replay: {commands}*", f"replay of {leg}: {commands}"])
    (run,) = [p for p in reports.iterdir() if p.name != "replays"]
    assert load_record(run).parity[0]["replay"] == str(commands)
    assert f"- {leg} (failed): [commands.sh](<{commands}>)" in (run / "report.md").read_text()


ACCURACY = """
import json


def test_accuracy(record_property):
    record_property("harness_accuracy", json.dumps({"reference": {"backend": "torch-fp32", "thres2mm": 0.08},
                                                     "candidate": {"backend": "ort-cpu", "thres2mm": 0.081}}))
"""


def test_accuracy_rows_from_pytest_reach_the_run_record(pytester, cache_dir, tmp_path):
    pytester.makepyfile(test_acc=ACCURACY)
    reports = tmp_path / "reports"
    result = _run(pytester, "--harness-cache-dir", cache_dir, "--harness-report-dir", str(reports))
    result.assert_outcomes(passed=1)
    (folder,) = list(reports.iterdir())
    assert [row["backend"] for row in load_record(folder).accuracy] == ["torch-fp32", "ort-cpu"]
