"""Unit tests of harness/report/markdown.py: Markdown tables and report.md."""

from __future__ import annotations

import pandas as pd

from harness.report.markdown import parity_frame, render_report, tables, to_markdown
from harness.report.record import RunRecord

MACHINE = {"gpus": [], "versions": {"torch": "2.x", "onnx": "1.x", "onnxsim": "0.x", "onnxruntime": "1.y"},
           "commit": "abc123", "dirty": True}


def _row(candidate: str = "ort-cpu", passed: bool = True) -> dict:
    return {
        "case": "small", "candidate": candidate, "reference": "torch-fp32", "workaround": "precomputed",
        "exporter": "torchscript", "variant": "raw", "passed": passed,
        "metrics": {"depth": {"max_sq_err": 2.04e-5, "max_abs": 0.0045, "p99_abs": 0.001, "frac_over_1mm": 0.0,
                              "index_flips": 3.0},
                    "photometric_confidence": {"max_sq_err": 8.09e-7, "agreement": 0.9995}},
    }


def _record(**kwargs) -> RunRecord:
    kwargs.setdefault("config", {"cases": ("small",)})
    return RunRecord(kind="pytest", profile="quick", machine=dict(MACHINE), **kwargs)


def test_to_markdown_renders_header_rule_and_rows():
    frame = pd.DataFrame([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    assert to_markdown(frame) == "| a | b |\n|---|---|\n| 1 | x |\n| 2 | y |\n"


def test_to_markdown_escapes_pipes():
    frame = pd.DataFrame([{"leg": "a|b", "note": "x | y"}])
    text = to_markdown(frame)
    assert "| a\\|b | x \\| y |" in text
    body = text.splitlines()[2]
    assert body.replace("\\|", "").count("|") == 3  # only the column separators remain


def test_to_markdown_formats_floats_with_three_significant_digits():
    frame = pd.DataFrame([{"err": 2.0412345e-5, "mm": 1234.5678, "n": 7}])
    row = to_markdown(frame).splitlines()[2]
    assert row == "| 2.04e-05 | 1.23e+03 | 7 |"


def test_to_markdown_custom_float_format():
    assert to_markdown(pd.DataFrame([{"x": 0.5}]), "{:.2f}").splitlines()[2] == "| 0.50 |"


def test_to_markdown_leaves_nan_cells_empty():
    frame = pd.DataFrame([{"x": float("nan"), "y": 1.0}])
    assert to_markdown(frame).splitlines()[2] == "|  | 1 |"


def test_to_markdown_of_an_empty_frame_says_none():
    assert to_markdown(pd.DataFrame()) == "_(none)_\n"


def test_parity_frame_has_one_row_per_leg_with_the_metrics():
    frame = parity_frame(_record(parity=[_row("ort-cpu"), _row("ort-cuda", passed=False)]))
    assert list(frame["candidate"]) == ["ort-cpu", "ort-cuda"]
    assert list(frame["result"]) == ["pass", "FAIL"]  # never a bare True / False
    assert "passed" not in frame.columns
    assert frame.loc[0, "depth max sq err (mm²) (not gated)"] == 2.04e-5
    assert frame.loc[0, "index flips (not gated)"] == 3.0
    assert frame.loc[0, "conf agreement (not gated)"] == 0.9995
    assert frame.loc[0, "graph"] == "raw"


def test_tables_hold_every_section():
    frames = tables(_record())
    assert set(frames) == {"parity", "artifacts", "accuracy", "timing"}
    assert all(frame.empty for frame in frames.values())


def test_render_report_has_header_machine_line_parity_and_configuration():
    text = render_report(_record(parity=[_row()], notes=["skipped ort-cuda: no CUDA device"]))
    assert text.startswith("# MVSNet conversion report (pytest, ")
    assert "harness: profile=quick | no GPU |" in text
    assert "commit `abc123` (dirty)" in text
    assert "## Parity against torch strict FP32" in text
    assert "| small | ort-cpu | torch-fp32 |" in text
    assert "2.04e-05" in text
    assert "## Notes" in text and "- skipped ort-cuda: no CUDA device" in text
    assert "## Configuration" in text and "cases: ('small',)" in text


def test_render_report_omits_empty_sections():
    text = render_report(_record())
    for heading in ("## Parity", "## Accuracy", "## Timing", "## Artifacts", "## Notes"):
        assert heading not in text


def test_render_report_includes_accuracy_when_present():
    text = render_report(_record(accuracy=[{"case": "small", "backend": "torch-fp32", "mae_mm": 1.25}]))
    assert "## Accuracy against ground truth" in text
    assert "| small | torch-fp32 | 1.25 |" in text


def test_report_shows_each_outputs_gated_metric_with_its_limit_and_fractions_as_percentages():
    row = _row("ort-cpu")
    row["metrics"]["depth"]["max_intervals"] = 0.0003
    row["metrics"]["photometric_confidence"].update({"max_sq_err_stable": 9.4e-9, "agreement": 0.99995})
    row["tolerance"] = {"depth": {"max_intervals": 0.1},
                        "photometric_confidence": {"max_sq_err_stable": 1e-5, "agreement": 0.999}}
    text = render_report(_record(parity=[row]))
    assert "max_intervals 0.0003 <= 0.1" in text
    assert "max_sq_err_stable 9.4e-09 <= 1e-05, agreement 99.995% >= 99.900%" in text
    assert "| 99.995% |" in text and "| 0.000% |" in text  # agreement and depth > 1 mm as percentages
    assert parity_frame(_record(parity=[row])).loc[0, "conf agreement"] == 0.99995  # the CSV keeps numbers


def test_cpu_timing_is_not_described_as_cuda_events():
    text = render_report(_record(timing=[{"case": "small", "backend": "torch-fp32", "median_ms": 100.0,
                                          "device": "cpu", "clock": "perf_counter"}]))
    assert "perf_counter around one inference on the CPU" in text and "CUDA events" not in text


# -- another model: the spec names the model and its outputs' columns ---------------------------

def _two_head_spec():
    from harness.modelspec import ModelSpec, OutputSpec

    return ModelSpec("heads", "Two-head CNN", ("image",), (
        OutputSpec("mask", "confidence", columns=(("agreement", "mask agreement"), ("max_abs", "mask max abs"))),
        OutputSpec("features"),
    ))


def _two_head_row() -> dict:
    return {"case": "toy", "candidate": "ort-cpu", "reference": "torch-fp32", "passed": True,
            "metrics": {"mask": {"max_abs": 2.5e-7, "agreement": 0.99995}, "features": {"max_abs": 1e-6, "max_sq_err": 1e-12}},
            "tolerance": {"mask": {"max_abs": 1e-4}}}


def test_parity_frame_takes_its_columns_from_the_model_spec():
    frame = parity_frame(_record(parity=[_two_head_row()]), _two_head_spec())
    assert "mask gate (limit)" in frame.columns and "features gate (limit)" in frame.columns
    assert frame.loc[0, "mask gate (limit)"] == "max_abs 2.5e-07 <= 0.0001"
    assert frame.loc[0, "features max abs (not gated)"] == 1e-6
    assert frame.loc[0, "mask agreement (not gated)"] == 0.99995 and frame.loc[0, "mask max abs"] == 2.5e-7
    assert not [c for c in frame.columns if "depth" in c or "conf" in c]
    assert "workaround" not in frame.columns  # MVSNet's leg setting, a column of its spec only


def test_report_of_another_model_names_it_and_shows_its_fractions_as_percentages():
    text = render_report(_record(parity=[_two_head_row()]), model_spec=_two_head_spec())
    assert text.startswith("# Two-head CNN conversion report (pytest, ")
    assert "MVSNet" not in text and "depth" not in text
    assert "| 99.995% |" in text


def test_outputs_a_row_holds_beyond_the_spec_get_default_columns():
    row = _row()
    row["metrics"]["extra"] = {"max_abs": 0.5, "max_sq_err": 0.25}
    frame = parity_frame(_record(parity=[row]))
    assert frame.loc[0, "extra max abs (not gated)"] == 0.5 and frame.loc[0, "extra gate (limit)"] == "(no gate)"


# -- the verdict at a glance ----------------------------------------------------------------------

def test_report_opens_with_the_verdict_line_of_the_record():
    record = _record(parity=[_row("ort-cpu"), _row("ort-cuda", passed=False)], skipped={"trt-fp32": "tensorrt not importable"})
    lines = render_report(record).splitlines()
    assert lines[2] == ("**FAIL 1 of 2 legs over their gates: ort-cuda raw precomputed/torchscript small; "
                        "1 backend skipped (tensorrt not importable: trt-fp32)**")
    table = [line for line in lines if line.startswith("| ")]
    assert "True" not in "\n".join(table) and "False" not in "\n".join(table)
    assert table[0].startswith("| result |") and table[1].startswith("| pass |") and table[2].startswith("| FAIL |")


def test_an_interrupted_record_says_incomplete_in_its_verdict_line():
    record = _record(parity=[_row()], incomplete="interrupted by SIGINT after 1 of 12 legs")
    assert "**INCOMPLETE (interrupted by SIGINT after 1 of 12 legs): 1 leg within its gates**" in render_report(record)
    older = _record(parity=[_row()], config={"incomplete": True})  # a record from before the field
    assert "**INCOMPLETE (interrupted): 1 leg within its gates**" in render_report(older)


def test_a_benchmark_only_record_has_no_verdict_line_and_its_parity_column_says_pass_or_fail():
    text = render_report(_record(timing=[{"case": "small", "backend": "ort-cpu", "median_ms": 5.0, "device": "cpu",
                                          "parity_passed": False}]))
    assert not any(line.startswith(("**PASS", "**FAIL")) for line in text.splitlines())
    assert "| FAIL |" in text and "False" not in text


def test_the_configuration_never_prints_none():
    text = render_report(_record(config={"model": None, "case": "small"}))
    assert "model: (not given)" in text and "None" not in text
