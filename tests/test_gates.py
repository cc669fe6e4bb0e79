"""The gates in one place: the derivation rule, the committed limits as the rule's output from the
committed records, and a small calibration smoke (measure, resume, derive, judge)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from harness.calibrate import derive_text, judge, load_records, parse_seeds
from harness.chain import Chain, ChainConfig
from harness.errors import InvalidArgument
from harness.gates.limits import DEFAULT_TOLERANCES, Tolerances
from harness.gates.rule import BORROW, FLOORS, MARGIN, derive, limit_for, round_up, to_toml

KINDS = {"depth": "depth", "photometric_confidence": "confidence", "accuracy": "accuracy"}


def _sample(value: float, machine: str = "cpu", pair: str = "torch-vs-ort", precision: str = "fp32",
            agreement: float = 1.0) -> dict:
    return {"item": f"i{value}", "leg": "leg", "machine": machine, "pair": pair, "precision": precision,
            "metrics": {"depth": {"max_intervals_confident": value, "max_intervals": 10 * value},
                        "photometric_confidence": {"max_sq_err_stable": 1e-12, "agreement": agreement}}}


def test_the_rule_is_the_worst_benign_value_times_the_margin():
    assert MARGIN >= 2
    assert limit_for("max_intervals_confident", 0.004) == pytest.approx(0.012)
    assert limit_for("agreement", 0.99) == pytest.approx(1 - 0.03)
    # the floor: a gate whose benign noise was zero still allows the statistic's resolution
    assert limit_for("max_intervals_confident", 0.0) == pytest.approx(FLOORS["max_intervals_confident"] * MARGIN)
    assert limit_for("agreement", 1.0) == pytest.approx(1 - FLOORS["agreement"] * MARGIN)


@pytest.mark.parametrize(("value", "expected"), [(0.000123, 0.00013), (0.0991, 0.1), (3.0, 3.0), (12.01, 13.0)])
def test_limits_round_up_to_two_digits(value, expected):
    assert round_up(value) == pytest.approx(expected)
    assert round_up(value) >= value


def test_derive_takes_the_worst_sample_per_gate_and_class():
    samples = [_sample(0.001), _sample(0.004), _sample(0.5, machine="cuda"), _sample(0.002, agreement=0.9995)]
    limits = derive(samples, KINDS, {"cpu": "rec-cpu", "cuda": "rec-cuda"})
    cpu = limits[("cpu", "torch-vs-ort", "fp32", "depth", "max_intervals_confident")]
    assert cpu["worst"] == 0.004 and cpu["n"] == 3 and cpu["limit"] == pytest.approx(0.012)
    assert limits[("cuda", "torch-vs-ort", "fp32", "depth", "max_intervals_confident")]["limit"] == pytest.approx(1.5)
    assert limits[("cpu", "torch-vs-ort", "fp32", "photometric_confidence", "agreement")]["worst"] == 0.9995
    # the all-pixel statistic is recorded but not gated
    assert ("cpu", "torch-vs-ort", "fp32", "depth", "max_intervals") not in limits


def test_tensorrt_gates_borrow_the_onnx_runtime_samples_of_their_precision():
    limits = derive([_sample(0.01, machine="cuda")], KINDS, {"cuda": "rec"})
    assert ("cuda", "torch-vs-trt", "fp32") in BORROW
    borrowed = limits[("cuda", "torch-vs-trt", "fp32", "depth", "max_intervals_confident")]
    assert borrowed["limit"] == limits[("cuda", "torch-vs-ort", "fp32", "depth", "max_intervals_confident")]["limit"]
    assert "no TensorRT engine runs" in borrowed["borrowed"]


def test_the_toml_names_record_rule_and_worst_value_beside_each_limit(tmp_path):
    text = to_toml(derive([_sample(0.004), _sample(0.002)], KINDS, {"cpu": "fixtures/calibration/cpu/x.json"}))
    line = next(line for line in text.splitlines() if line.startswith("max_intervals_confident"))
    assert line.startswith("max_intervals_confident = 0.012  # worst 0.004 over 2 samples x 3")
    assert "fixtures/calibration/cpu/x.json" in line
    path = tmp_path / "t.toml"
    path.write_text(text, encoding="utf-8")
    assert Tolerances.load(path).rule()["margin"] == MARGIN


def test_the_committed_limits_are_exactly_what_the_rule_gives_from_the_committed_records():
    samples, sources = load_records()
    assert samples, "no committed calibration record under fixtures/calibration/"
    assert "cpu" in sources
    assert DEFAULT_TOLERANCES.read_text(encoding="utf-8") == derive_text(), \
        "fixtures/tolerances.toml differs from the rule's output: run python -m harness calibrate --derive"


def test_every_committed_record_has_its_provenance():
    root = DEFAULT_TOLERANCES.parent / "calibration"
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(root.glob("*/*.json"))]
    assert records
    inputs: dict[str, set[str]] = {}
    for record in records:
        assert record["kind"] == "calibration-record" and record["schema"] == 1
        assert record["seeds"] and record["corpus"] and record["machine"] and "commit" in record["git"]
        inputs.setdefault(record["machine_class"], set()).update(item["id"] for item in record["corpus"])
    # a class's corpus is the union of its records (supplements add graphs or the property rigs)
    assert all(len(ids) >= 50 for ids in inputs.values()), {k: len(v) for k, v in inputs.items()}


@pytest.mark.parametrize(("text", "expected"), [("1-3", [1, 2, 3]), ("4,9", [4, 9]), ("1-2,7", [1, 2, 7])])
def test_seed_lists(text, expected):
    assert parse_seeds(text) == expected


@pytest.mark.parametrize("text", ["", "a-b", "1-x"])
def test_bad_seed_lists_are_refused_with_the_flag(text):
    with pytest.raises(InvalidArgument, match="--seeds"):
        parse_seeds(text)


def test_judge_names_each_sample_over_its_limit(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(to_toml(derive([_sample(0.004)], KINDS, {"cpu": "rec"})), encoding="utf-8")
    tolerances = Tolerances.load(path)
    assert judge([_sample(0.011)], tolerances) == []
    alarms = judge([_sample(0.013)], tolerances)
    assert len(alarms) == 1 and "depth max_intervals_confident 0.013 > 0.012" in alarms[0]


@pytest.fixture(scope="module")
def tiny_calibration(tmp_path_factory):
    from harness.gates.calibration import Calibrator, Item, draw_item

    work = tmp_path_factory.mktemp("calibration")
    chain = Chain(ChainConfig(device="cpu", cache_dir=work / "cache"))
    base = draw_item(3, "held-out")
    spec = {**base.spec, "num_views": 3, "height": 96, "width": 128, "textureless": 0.5, "rig": "line"}  # type: ignore[dict-item]
    items = [replace(base, spec=spec, num_depth=16, layout="png"),
             Item("gen-99999", "calibration", spec={**spec, "seed": 99999, "rig": "ring"}, num_depth=16)]
    calibrator = Calibrator(chain, work, candidates=("ort-cpu",), with_stages=True, with_extra_graphs=False)
    measured = []
    for item in calibrator.run(items):
        measured.append(item.id)
        break  # interrupted after the first input
    resumed = Calibrator(chain, work, candidates=("ort-cpu",), with_stages=True, with_extra_graphs=False)
    measured += [item.id for item in resumed.run(items)]
    yield items, measured, resumed.samples(), work
    resumed.close()
    calibrator.close()
    chain.close()


def test_calibration_resumes_after_the_inputs_it_finished(tiny_calibration):
    items, measured, samples, _ = tiny_calibration
    assert measured == [items[0].id, items[1].id]  # each input measured once across the two runs
    assert {s["item"] for s in samples} == {items[0].id, items[1].id}


def test_calibration_measures_every_gate_family_on_a_dtu_folder(tiny_calibration):
    items, _, samples, work = tiny_calibration
    assert (work / "scenes" / items[0].id / "images" / "00000000.png").is_file()  # written in its layout
    pairs = {(s["pair"], s["precision"]) for s in samples}
    assert {("torch-vs-ort", "fp32"), ("ort-vs-ort", "fp32"), ("torch-vs-torch", "fp32"),
            ("golden-vs-ort", "fp32"), ("stages", "fp32")} <= pairs
    parity = [s for s in samples if s["pair"] == "torch-vs-ort"]
    depth = parity[0]["metrics"]["depth"]
    assert 0 <= depth["max_intervals_confident"] <= depth["max_intervals"]
    assert all(math.isfinite(v) for s in parity for m in s["metrics"].values() for v in m.values())
    # a faithful graph on scenes the records never saw stays inside the committed limits
    assert judge(samples, Tolerances.load()) == []


def test_the_calibration_report_draws_one_figure_per_gate(tiny_calibration):
    from harness.gates.figures import write_report

    _, _, samples, work = tiny_calibration
    report = write_report(work, samples)
    text = report.read_text(encoding="utf-8")
    figures = sorted(Path(report.parent).glob("*.png"))
    assert figures and text.count("![](") == len(figures)
    assert "cpu torch-vs-ort fp32 depth max_intervals_confident" in text


@pytest.mark.parametrize("budget, most_alive", [(0, 1), (10**12, 4)])
def test_inputs_above_the_generators_sizes_run_one_session_at_a_time(tiny_calibration, tmp_path, monkeypatch,
                                                                     budget, most_alive):
    """At DTU's size the sessions of every leg alive together ran an H200 out of GPU memory; above
    STAGE_BUDGET the calibrator closes each runner after its call (the graphs stay cached)."""
    from harness.backends.base import Runner
    from harness.gates import calibration
    from harness.properties import RigRunners

    items, _, _, work = tiny_calibration
    monkeypatch.setattr(calibration, "STAGE_BUDGET", budget)
    alive: list[int] = []
    infer = RigRunners.infer

    def counting(self, leg, feed):
        out = infer(self, leg, feed)
        alive.append(sum(isinstance(v, Runner) for v in self._memo.values()))
        return out

    monkeypatch.setattr(RigRunners, "infer", counting)
    chain = Chain(ChainConfig(device="cpu", cache_dir=work / "cache"))  # the fixture's exports, cached
    calibrator = calibration.Calibrator(chain, tmp_path, candidates=("ort-cpu",), with_stages=False,
                                        with_golden=False, with_extra_graphs=False)
    try:
        calibrator.measure(items[1])
    finally:
        calibrator.close()
        chain.close()
    assert max(alive) == most_alive  # 2 workarounds x raw/simplified alive together below the budget
