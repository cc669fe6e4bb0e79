"""The model seam, proven with a second model (tests/toymodel.py, a small CNN that is not MVSNet):
it goes through export, the artifact cache, the ONNX Runtime runner, compare, timing and the
report writer with its own ``ModelSpec``, and that path loads none of MVSNet's modules."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.errors import InvalidInput, ShapeError
from harness.report.record import load_record

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _load_toymodel():
    """tests/ is no package (pytest runs with --import-mode=importlib): load the module by path."""
    if "toymodel" in sys.modules:
        return sys.modules["toymodel"]
    spec = importlib.util.spec_from_file_location("toymodel", TESTS / "toymodel.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["toymodel"] = module
    spec.loader.exec_module(module)
    return module


toymodel = _load_toymodel()
TOY_SPEC = toymodel.TOY_SPEC
#: The brief of the seam: the toy on ONNX Runtime CPU matches torch eager to well within this.
MAX_ABS = 1e-4


@pytest.fixture(scope="module")
def fresh_process_run(tmp_path_factory):
    """The whole toy path in a fresh interpreter (so other tests' imports cannot hide an import
    of MVSNet's modules): its JSON summary line and the work folder."""
    work = tmp_path_factory.mktemp("toy")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(TESTS / "toymodel.py"), str(work)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), work


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory):
    model = toymodel.toy_model()
    path, _ = toymodel.toy_onnx(model, tmp_path_factory.mktemp("toy-cache"))
    return model, path


def test_the_toy_path_loads_nothing_of_mvsnet(fresh_process_run):
    result, _ = fresh_process_run
    assert result["mvsnet_before"] == [] and result["mvsnet_after"] == []
    # and it really went through the neutral layers
    assert {"harness.backends.base", "harness.backends.onnxruntime_runner", "harness.compare", "harness.timing",
            "harness.convert.cache", "harness.gates.limits", "harness.report.write",
            "harness.report.markdown"} <= set(result["harness"])
    assert "harness.backends.registry" not in result["harness"]  # it imports every backend, torch's too


def test_the_toy_on_onnx_runtime_matches_torch_eager(fresh_process_run):
    result, _ = fresh_process_run
    summary = result["summary"]
    assert summary["passed"] is True and summary["cache"] == "miss"
    assert summary["shapes"] == {"mask": [2, 1, 16, 24], "features": [2, 4, 16, 24]}
    for name in TOY_SPEC.output_names:
        metrics = summary["metrics"][name]
        assert metrics["nan"] == 0.0
        assert 0.0 <= metrics["max_abs"] < MAX_ABS, name
    assert summary["metrics"]["mask"]["agreement"] == 1.0  # the confidence kind's metric
    assert "agreement" not in summary["metrics"]["features"]  # plain kind: absolute statistics only
    assert summary["median_ms"] > 0


def test_the_toy_run_leaves_a_record_holding_the_comparison(fresh_process_run):
    result, work = fresh_process_run
    folder = Path(result["summary"]["folder"])
    assert folder.parent == work / "reports" and (folder / "run.json").is_file()
    record = load_record(folder)
    (row,) = record.parity
    assert row["metrics"] == result["summary"]["metrics"]
    assert row["tolerance"] == {"mask": {"max_abs": 1e-5, "agreement": 1.0}, "features": {"max_abs": 1e-5}}
    assert row["passed"] is True and record.config["model"] == "toy"
    assert record.timing[0]["backend"] == "ort-cpu" and record.timing[0]["rounds"] >= 5
    report = (folder / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# Toy CNN conversion report (run, ")
    assert "mask gate (limit)" in report and "features gate (limit)" in report
    assert "MVSNet" not in report and "depth" not in report
    assert "mask max abs" in (folder / "parity.csv").read_text(encoding="utf-8")


def test_the_runner_checks_the_toys_feed_with_the_toys_rules(toy_onnx):
    from harness.backends.onnxruntime_runner import OrtRunner

    _, path = toy_onnx
    with OrtRunner(path, "cpu", model_spec=TOY_SPEC) as runner:
        with pytest.raises(ShapeError, match=r"ort-cpu: image \| wrong shape: \(2, 3, 32\)"):
            runner.infer({"image": torch.rand(2, 3, 32)})
        with pytest.raises(InvalidInput, match="feed names do not match") as info:
            runner.infer({"imgs": torch.rand(*toymodel.SHAPE)})
        assert "Fix: feed one tensor named image ([B, 3, H, W])." in str(info.value)
        bad = torch.rand(*toymodel.SHAPE)
        bad[0, 0, 0, 0] = float("nan")
        with pytest.raises(InvalidInput, match=r"ort-cpu: image \| holds NaN or Inf"):
            runner.infer({"image": bad})


def test_the_factory_passes_the_spec_to_the_runner(toy_onnx):
    from harness.backends.registry import make_runner

    model, path = toy_onnx
    feed = toymodel.toy_feed()
    with make_runner("ort-cpu", path, model_spec=TOY_SPEC) as runner:
        assert runner.model_spec is TOY_SPEC
        outputs = runner.infer(feed)
        # the shapes the spec gives (what ONNX Runtime on CUDA allocates) are the graph's
        assert {n: runner.output_shape(feed, n) for n in outputs} == {n: tuple(t.shape) for n, t in outputs.items()}
    reference = toymodel.eager(model, feed)
    assert max(float((outputs[n] - reference[n]).abs().max()) for n in reference) < MAX_ABS
