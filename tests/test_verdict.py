"""Unit tests of harness/verdict.py: the verdict line and the 120-column parity table that
``run``, ``check`` and the pytest summary print alike."""

from __future__ import annotations

from harness.backends import registry
from harness.chain import CANDIDATES, plan_legs
from harness.compare import LOWER_BOUNDS, OutputDiff
from harness.gates.limits import Tolerances, machine_class
from harness.model.mvsnet import OUTPUT_NAMES
from harness.verdict import WIDTH, LegTable, leg_table, panel_caption, short_leg_id, verdict_line

FP32 = {"depth": {"max_intervals": 0.1}, "photometric_confidence": {"max_sq_err_stable": 1e-5, "agreement": 0.999}}


def _row(candidate="ort-cpu", variant="raw", workaround="precomputed", exporter="torchscript", case="small",
         passed=True, metrics=None, tolerance=None, **extra):
    return {"id": f"{candidate}-{variant}-vs-torch-fp32-{workaround}-{exporter}-{case}", "candidate": candidate,
            "variant": variant, "workaround": workaround, "exporter": exporter, "case": case,
            "reference": "torch-fp32", "passed": passed,
            "metrics": metrics if metrics is not None else {
                "depth": {"nan": 0.0, "max_intervals": 0.0079},
                "photometric_confidence": {"nan": 0.0, "max_sq_err_stable": 9.39e-9, "agreement": 0.99995}},
            "tolerance": tolerance if tolerance is not None else FP32, **extra}


def test_short_leg_id_names_candidate_graph_workaround_exporter_and_case():
    assert short_leg_id(_row("ort-cpu-fp16", "simplified")) == "ort-cpu-fp16 simplified precomputed/torchscript small"
    model_leg = _row("torch-fast-fp16", "model", "none", "none", "seed")
    assert short_leg_id(model_leg) == "torch-fast-fp16 seed"
    user = _row("ort-cpu", "user-onnx", artifact={"path": "/tmp/build/mvsnet.onnx"})
    assert short_leg_id(user) == "mvsnet.onnx ort-cpu small"
    assert short_leg_id({**_row(), "reference": "ort-cpu"}).endswith(" vs ort-cpu")
    assert short_leg_id({"id": "some-leg", "passed": True}) == "some-leg"  # a row without the fields


def test_verdict_line_passes_and_groups_the_skipped_backends_by_reason():
    rows = [_row(), _row(variant="simplified")]
    skipped = {"ort-cuda": "no CUDA device", "trt-fp32": "tensorrt not importable", "trt-fp16": "tensorrt not importable"}
    assert verdict_line(rows, skipped) == (
        "PASS 2 legs within their gates; 3 backends skipped (no CUDA device: ort-cuda; "
        "tensorrt not importable: trt-fp32, trt-fp16)")


def test_verdict_line_fails_naming_the_failed_legs_and_other_failures():
    rows = [_row(), _row("trt-fp16", "simplified", passed=False), _row("ort-cpu-fp16", passed=False)]
    line = verdict_line(rows, failures=["tests/test_export.py::test_x"])
    assert line == ("FAIL 2 of 3 legs over their gates: trt-fp16 simplified precomputed/torchscript small, "
                    "ort-cpu-fp16 raw precomputed/torchscript small; 1 other failure: tests/test_export.py::test_x")
    many = [_row(case=f"c{i}", passed=False) for i in range(7)]
    assert verdict_line(many).endswith("+3 more")
    assert verdict_line([], failures=["no parity leg ran"]).startswith("FAIL 1 other failure: no parity leg ran")


def test_verdict_line_marks_an_interrupted_run_incomplete_and_an_empty_one():
    line = verdict_line([_row(passed=False)], incomplete="interrupted by SIGINT after 1 of 13 legs")
    assert line.startswith("INCOMPLETE (interrupted by SIGINT after 1 of 13 legs): 1 of 1 leg over its gates: ")
    assert verdict_line([], {"trt-fp32": "tensorrt not importable"}) == (
        "NO LEG RAN: 1 backend skipped (tensorrt not importable: trt-fp32)")


def _realistic_rows() -> list[dict]:
    """Every leg the main job plans for two cases, each output with every gated metric of the
    committed tolerances at its widest printed value; every other leg failing, one with NaN."""
    tolerances = Tolerances.load(None)
    legs = plan_legs(("small", "seed"), ("precomputed", "closed_form", "custom_op"), ("torchscript", "dynamo"),
                     ("raw", "simplified"), CANDIDATES)
    rows = []
    for i, leg in enumerate(legs):
        tolerance = tolerances.lookup(leg.reference, leg.candidate, leg.precision, OUTPUT_NAMES, case=leg.case,
                                      machine=machine_class(registry.get(leg.candidate).device))
        failing = i % 2 == 1
        metrics = {}
        for output, gates in tolerance.items():
            values = {"nan": 12.0 if i == 3 else 0.0}
            for metric, limit in gates.items():  # long printed forms: 3 significant digits, exponents
                if metric in LOWER_BOUNDS:
                    values[metric] = limit * 0.51234 if failing else limit + (1 - limit) * 0.51234
                else:
                    values[metric] = limit * 1234.5678 if failing else limit * 0.0123456
            metrics[output] = values
        rows.append({"id": leg.id, "case": leg.case, "candidate": leg.candidate, "reference": leg.reference,
                     "workaround": leg.workaround, "exporter": leg.exporter, "variant": leg.variant,
                     "passed": not failing, "metrics": metrics, "tolerance": tolerance})
    return rows


def test_every_line_of_a_realistic_table_fits_a_120_column_terminal():
    rows = _realistic_rows()
    assert len(rows) > 40
    table = LegTable()
    lines = [line for row in rows for line in table.lines(row)]
    too_wide = [line for line in lines if len(line) > WIDTH]
    assert not too_wide, too_wide
    leg_rows = [line for line in lines if line.startswith(("ok ", "FAIL "))]
    assert len(leg_rows) == len(rows)
    # the verdict first, at a fixed column; the leg's short id right after it
    for line, row in zip(leg_rows, rows):
        assert line[:5] == ("ok   " if row["passed"] else "FAIL ")
        assert line[5:].startswith(short_leg_id(row)[:20])
    failing = [line for line, row in zip(leg_rows, rows) if not row["passed"]]
    assert all("!" in line for line in failing) and not any("!" in line for line in leg_rows if line.startswith("ok"))


def test_the_legend_prints_each_gated_metric_with_its_limit_when_the_gates_change():
    fp16 = {"depth": {"p99_intervals": 0.35}, "photometric_confidence": {"p99_abs": 0.01, "agreement": 0.99}}
    metrics16 = {"depth": {"p99_intervals": 0.5}, "photometric_confidence": {"p99_abs": 5e-4, "agreement": 0.9999}}
    lines = leg_table([_row(), _row(variant="simplified"),
                       _row("ort-cpu-fp16", passed=False, metrics=metrics16, tolerance=fp16)])
    assert lines[0] == ("gates: depth: max_intervals <= 0.1 | photometric_confidence: max_sq_err_stable <= 1e-05, "
                        "agreement >= 99.900%")
    assert lines[1].split() == ["leg", "depth", "|", "photometric_confidence"]
    assert lines[2].split() == ["ok", "ort-cpu", "raw", "precomputed/torchscript", "small", "0.0079", "|",
                                "9.39e-09,", "99.995%"]
    assert lines[3].startswith("ok   ort-cpu simplified")
    assert lines[4].startswith("gates: depth: p99_intervals <= 0.35 |")  # a new legend for other gates
    assert lines[6].split()[-4:] == ["0.5!", "|", "0.0005,", "99.990%"]
    assert len(lines) == 7


def test_a_leg_that_failed_before_any_comparison_shows_dashes():
    table = LegTable()
    table.lines(_row())
    (line,) = table.lines(_row("ort-cuda", passed=False, metrics={}, tolerance={}))
    assert line.split() == ["FAIL", "ort-cuda", "raw", "precomputed/torchscript", "small", "-", "|", "-"]


def test_panel_caption_gives_the_outputs_gates_and_the_legs_verdict():
    ok = {"depth": OutputDiff("depth", {"max_intervals": 0.0079}, {"max_intervals": 0.1}),
          "photometric_confidence": OutputDiff("photometric_confidence", {"agreement": 0.5}, {"agreement": 0.999})}
    assert panel_caption(ok, "depth") == "max_intervals 0.0079 <= 0.1\nleg: FAIL (photometric_confidence)"
    both = {"depth": OutputDiff("depth", {"a": 2.0, "b": 0.1}, {"a": 1.0, "b": 1.0})}
    assert panel_caption(both, "depth") == "a 2 <= 1 FAIL\nb 0.1 <= 1\nleg: FAIL"
    assert panel_caption({"depth": ok["depth"]}, "depth") == "max_intervals 0.0079 <= 0.1\nleg: pass"
    assert panel_caption({"depth": ok["depth"]}, "depth", passed=False).endswith("leg: FAIL")
