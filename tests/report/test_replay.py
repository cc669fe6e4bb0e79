"""harness/report/replay.py: the files and commands that hand a parity leg to Polygraphy and trtexec.

The agreement tests run Polygraphy itself (its ONNX Runtime runner, CPU) through the written
commands.sh on the saved files, and check that its verdict is the harness's: on the small case's
faithful export (both pass) and on the same graph with GridSample switched to nearest sampling
(both fail), and on a tiny graph for the quantile (p99) and mean gates. TensorRT commands are
written, never run here.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from harness.chain import Chain, ChainConfig, Leg, LegResult, replay_leg, run_leg
from harness.compare import OutputDiff, compare
from harness.errors import HarnessError, InvalidArgument, OutputExists
from harness.gates.limits import Tolerances
from harness.model.mvsnet import OUTPUT_NAMES
from harness.report.replay import Check, depth_step_of, save_replay, translate_gates

polygraphy = pytest.importorskip("polygraphy", reason="polygraphy not installed (pip install '.[polygraphy]')")
from polygraphy.comparator import RunResults  # noqa: E402
from polygraphy.json import load_json  # noqa: E402

BIN = Path(sys.executable).parent  # the venv's polygraphy script lies beside its python


# ------------------------------------------------------------------ gate translation (pure)

def test_max_sq_err_and_a_zero_share_over_1mm_merge_into_the_tightest_max_check():
    checks, left = translate_gates({"depth": {"max_sq_err": 0.1, "frac_over_1mm": 0.0}})
    (check,) = checks["depth"]
    assert (check.stat, check.quantile) == ("max", None)
    assert check.atol == pytest.approx(math.sqrt(0.1))
    assert "max_sq_err" in check.source and "frac_over_1mm" in check.source
    assert left == []


def test_gates_in_depth_steps_become_millimetres_through_the_depth_step():
    checks, _ = translate_gates({"depth": {"max_intervals": 0.1, "p99_intervals": 0.35}}, depth_step=2.5)
    by_stat = {c.stat: c for c in checks["depth"]}
    assert by_stat["max"].atol == pytest.approx(0.25)
    assert by_stat["quantile"].atol == pytest.approx(0.875) and by_stat["quantile"].quantile == 0.99
    assert [c.stat for c in checks["depth"]] == ["max", "quantile"]  # one command per statistic, max first


def test_a_gate_in_steps_without_the_step_is_refused_naming_the_fix():
    with pytest.raises(InvalidArgument, match="depth_step_of"):
        translate_gates({"depth": {"max_intervals": 0.1}})


def test_gates_no_tool_can_express_are_listed_not_dropped():
    checks, left = translate_gates({"photometric_confidence": {"agreement": 0.999, "max_sq_err_stable": 1e-5,
                                                                "p99_abs": 0.01}})
    assert [(c.stat, c.atol) for c in checks["photometric_confidence"]] == [("quantile", 0.01)]
    assert sorted(g.metric for g in left) == ["agreement", "max_sq_err_stable"]


def test_mean_abs_and_a_nonzero_share_over_n_mm():
    checks, _ = translate_gates({"depth": {"mean_abs": 0.2, "frac_over_2mm": 0.01}})
    by_stat = {c.stat: c for c in checks["depth"]}
    assert by_stat["mean"].atol == 0.2
    assert by_stat["quantile"].quantile == pytest.approx(0.99) and by_stat["quantile"].atol == 2.0
    assert by_stat["quantile"].approximate


def test_depth_step_is_the_smallest_first_interval():
    values = torch.stack([torch.linspace(425, 425 + 47 * 2.5, 48), torch.linspace(400, 400 + 47 * 2.0, 48)])
    assert depth_step_of(values) == pytest.approx(2.0)


# ------------------------------------------------------------------ the files, on a tiny graph

def _tiny_graph(path: Path, op: str = "Identity") -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 500])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 500])
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _polygraphy(folder: Path, *steps: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(folder / "commands.sh"), *steps], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_saved_files_are_what_polygraphy_and_trtexec_read(tmp_path):
    onnx_path = _tiny_graph(tmp_path / "tiny.onnx")
    x = torch.randn(2, 500)
    ref = x + 0.01
    replay = save_replay(tmp_path / "replay", onnx_path=onnx_path, inputs={"x": x}, reference={"y": ref},
                         gates={"y": {"max_abs": 0.1, "agreement": 0.99}}, subject="tiny")
    feeds = load_json(replay.inputs_json)
    assert isinstance(feeds, list) and len(feeds) == 1 and list(feeds[0]) == ["x"]
    np.testing.assert_array_equal(feeds[0]["x"], x.numpy())
    results = RunResults.load(str(replay.reference_json))
    assert list(results.keys()) == ["torch-fp32"]
    (iteration,) = results["torch-fp32"]
    np.testing.assert_array_equal(np.asarray(iteration["y"]), ref.numpy())
    assert replay.input_bins["x"].read_bytes() == x.numpy().astype("<f4").tobytes()
    assert np.array_equal(np.fromfile(replay.reference_bins["y"], dtype="<f4").reshape(2, 500), ref.numpy())
    script = replay.commands.read_text()
    assert "--onnxrt --load-inputs inputs.json --load-outputs reference_outputs.json" in script
    assert "--check-error-stat y:max --atol y:0.1 --rtol 0" in script
    assert "--trt-outputs mark all --onnx-outputs mark all" in script
    assert "--loadInputs=x:inputs/x.bin" in script and "--loadRefOutputs=y:reference/y.bin" in script
    assert "--accuracyAlgorithm=lInf --accuracyThreshold=0.1" in script
    assert "y: agreement >= 0.99" in script  # the gate no tool can express, as a comment
    assert subprocess.run(["bash", "-n", str(replay.commands)], check=False).returncode == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_an_existing_replay_is_never_overwritten(tmp_path):
    onnx_path = _tiny_graph(tmp_path / "tiny.onnx")
    kwargs = dict(onnx_path=onnx_path, inputs={"x": torch.zeros(2, 500)}, reference={"y": torch.zeros(2, 500)},
                  gates={"y": {"max_abs": 0.1}})
    first = save_replay(tmp_path / "leg", **kwargs)
    before = first.inputs_json.read_bytes()
    with pytest.raises(OutputExists, match="never overwritten") as info:
        save_replay(tmp_path / "leg", **kwargs)
    assert isinstance(info.value, HarnessError) and isinstance(info.value, FileExistsError)
    second = save_replay(tmp_path / "leg", on_exists="suffix", **kwargs)
    assert second.folder == tmp_path / "leg-2" and first.inputs_json.read_bytes() == before


def test_tensors_not_named_as_the_graph_names_them_are_refused(tmp_path):
    onnx_path = _tiny_graph(tmp_path / "tiny.onnx")
    with pytest.raises(InvalidArgument, match=r"not named as the graph names its tensors.*'x'"):
        save_replay(tmp_path / "leg", onnx_path=onnx_path, inputs={"imgs": torch.zeros(2, 500)},
                    reference={"y": torch.zeros(2, 500)}, gates={"y": {"max_abs": 0.1}})
    assert not (tmp_path / "leg").exists()


@pytest.mark.parametrize(("gates", "stride", "shift", "harness_passes"), [
    ({"p99_abs": 0.05}, 50, 0.2, False),    # 2 % of the elements 0.21 off: the p99 is beyond
    ({"p99_abs": 0.05, "max_abs": 0.5}, 200, 0.6, False),  # 0.5 % 0.61 off: p99 within, max beyond
    ({"mean_abs": 0.02}, 50, 0.2, True),
], ids=["p99-fail", "p99-pass-max-fail", "mean-pass"])
def test_polygraphy_agrees_with_the_harness_on_quantile_max_and_mean_gates(tmp_path, gates, stride, shift,
                                                                          harness_passes):
    """A tiny graph (y = x) against a reference that differs by 0.01 everywhere and by ``shift`` more
    at every ``stride``-th element: the harness's verdict (compare) and Polygraphy's must be the same."""
    onnx_path = _tiny_graph(tmp_path / "tiny.onnx")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 500, generator=generator)
    ref = x + 0.01
    ref.view(-1)[::stride] += shift
    # y = x exactly (the harness's runners take MVSNet feeds only, so the harness compares x itself)
    verdict = bool(all(compare({"y": ref}, {"y": x}, {"y": gates}).values()))
    assert verdict is harness_passes
    replay = save_replay(tmp_path / "replay", onnx_path=onnx_path, inputs={"x": x}, reference={"y": ref},
                         gates={"y": gates})
    steps = [s for s in ("onnxrt", "onnxrt_2") if f"{s}()" in replay.commands.read_text()]
    assert len(steps) == len(gates)  # one Polygraphy command per statistic
    assert f'ONNX="${{ONNX:-{onnx_path.resolve()}}}"' in replay.commands.read_text()  # not copied: the source
    done = _polygraphy(replay.folder, *steps)
    assert (done.returncode == 0) is harness_passes, done.stdout[-3000:] + done.stderr[-2000:]


# ------------------------------------------------------------------ the small case: faithful and nearest

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "shared-onnx-cache"
    chain = Chain(ChainConfig(device="cpu", cache_dir=cache))
    yield chain
    chain.close()


def _nearest_copy(source: Path, target: Path) -> Path:
    model = onnx.load(str(source))
    nodes = [n for n in model.graph.node if n.op_type == "GridSample"]
    assert nodes, "the export has no GridSample to switch"
    for node in nodes:
        (mode,) = [a for a in node.attribute if a.name == "mode"]
        mode.s = b"nearest"
    onnx.save(model, str(target))
    return target


def test_polygraphy_replaying_the_saved_files_agrees_with_the_harness_on_faithful_and_nearest_graphs(
        small, tmp_path):
    leg = Leg("ort-cpu", "raw", "precomputed", "torchscript", "small")
    tolerances = Tolerances.load(None)
    faithful = run_leg(small, leg, tolerances)
    assert faithful.passed, {n: d.row() for n, d in faithful.diffs.items()}
    replay = replay_leg(small, leg, faithful, tmp_path / leg.id, on_exists="refuse")
    assert (replay.folder / "model.onnx").read_bytes() == small.onnx(leg.case, leg.workaround, leg.exporter,
                                                                     leg.variant).path.read_bytes()
    done = _polygraphy(replay.folder, "onnxrt")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "PASSED" in done.stdout

    # the same graph, GridSample switched to nearest: the harness fails it, and so must Polygraphy
    source = small.onnx(leg.case, leg.workaround, leg.exporter, leg.variant).path
    nearest = _nearest_copy(source, tmp_path / "nearest.onnx")
    feed = small.workaround_feed(leg.case, leg.workaround)
    reference = small.reference_outputs(leg.case)
    gates = tolerances.lookup(leg.reference, leg.candidate, leg.precision, OUTPUT_NAMES)
    candidate = small.ort_runner_for_file(nearest).infer(feed)
    diffs = compare(reference, candidate, gates, depth_values=small.feed(leg.case)["depth_values"])
    assert not diffs["depth"], diffs["depth"].row()
    replay = save_replay(tmp_path / "nearest", onnx_path=nearest, inputs=feed, reference=reference, gates=gates,
                         depth_step=depth_step_of(small.feed(leg.case)["depth_values"]), subject="nearest")
    done = _polygraphy(replay.folder, "onnxrt")
    assert done.returncode != 0, done.stdout[-3000:]
    assert "FAILED" in done.stdout + done.stderr
    assert isinstance(replay.checks[0], Check) and replay.checks[0].output == "depth"


def test_a_trt_leg_replay_carries_the_harness_build_settings_and_honours_the_overrides(small, tmp_path):
    """No TensorRT here: the leg's gates are the trt-fp32 table, its replay is written, not run."""
    leg = Leg("trt-fp32", "raw", "precomputed", "torchscript", "small")
    gates = Tolerances.load(None).lookup(leg.reference, leg.candidate, leg.precision, OUTPUT_NAMES, machine="cuda")
    result = LegResult(leg, {n: OutputDiff(n, {}, gates[n]) for n in OUTPUT_NAMES}, {})
    script = replay_leg(small, leg, result, tmp_path / leg.id).commands.read_text()
    build = next(line for line in script.splitlines() if line.startswith("trtexec_build()"))
    assert '"--onnx=$ONNX"' in build and '"--saveEngine=$ENGINE"' in build and "--noTF32" in build
    assert "--shapes=imgs:1x3x3x128x160" in build
    trt = next(line for line in script.splitlines() if line.startswith("trt()"))
    assert "--trt --strongly-typed" in trt and "--check-error-stat depth:" in trt


def test_a_zero_limit_trtexec_cannot_take_is_named_in_commands_sh(tmp_path):
    onnx_path = _tiny_graph(tmp_path / "tiny.onnx")
    replay = save_replay(tmp_path / "leg", onnx_path=onnx_path, inputs={"x": torch.zeros(2, 500)},
                         reference={"y": torch.zeros(2, 500)}, gates={"y": {"max_abs": 0.0}})
    script = replay.commands.read_text()
    assert "--check-error-stat y:max --atol y:0.0 --rtol 0" in script
    assert "# not given to trtexec: y: max |err| <= 0" in script and "--accuracyThreshold" not in script


def test_concurrent_replays_of_one_leg_claim_distinct_folders(tmp_path):
    """pytest-xdist --dist each runs a leg once per GPU: each replay gets a folder of its own."""
    from concurrent.futures import ThreadPoolExecutor

    onnx_path = _tiny_graph(tmp_path / "tiny.onnx")

    def one(i: int) -> Path:
        return save_replay(tmp_path / "leg", onnx_path=onnx_path, inputs={"x": torch.full((2, 500), float(i))},
                           reference={"y": torch.zeros(2, 500)}, gates={"y": {"max_abs": 0.1}},
                           on_exists="suffix").folder

    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(one, range(4)))
    assert sorted(f.name for f in folders) == ["leg", "leg-2", "leg-3", "leg-4"]
    values = {float(load_json(f / "inputs.json")[0]["x"][0, 0]) for f in folders}
    assert values == {0.0, 1.0, 2.0, 3.0}  # four complete, distinct replays
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_leg_that_consumes_the_torch_model_has_nothing_to_replay(tmp_path):
    """A failing torch-aoti or torch-fast-fp16 leg gets a clear replay_error in its record, not an
    'unknown ONNX variant: model' from the exporter."""
    from harness.chain import MODEL_LEG

    leg = Leg("torch-aoti", *MODEL_LEG, "small")
    chain = Chain(ChainConfig(cache_dir=tmp_path, device="cpu"))
    with pytest.raises(InvalidArgument, match="consumes the torch model"):
        replay_leg(chain, leg, None, tmp_path / leg.id)  # type: ignore[arg-type]
    assert not (tmp_path / leg.id).exists()
