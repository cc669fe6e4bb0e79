"""Unit tests of harness/cli.py: the generators and the main job (``python -m harness run``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.chain import BUNDLED_WEIGHTS, CANDIDATES
from harness.cli import _listed, build_parser, main
from harness.data.views import load_views
from harness.model.checkpoint import load_checkpoint, state_dict_digest
from harness.report.record import load_record


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "scene"
    assert main(["make-scene", str(folder), "--seed", "3", "--height", "128", "--width", "160", "--views", "3"]) == 0
    return folder


@pytest.fixture(scope="module")
def run_argv(scene, tmp_path_factory):
    """The README's main job, on the small case and a generated scene: (argv, report folder)."""
    cache = tmp_path_factory.getbasetemp() / "shared-onnx-cache"  # shared with other modules; temporary
    reports = tmp_path_factory.mktemp("cli-reports")
    argv = ["run", "--cases", "small", "--scene", str(scene), "--cache-dir", str(cache), "--report-dir", str(reports)]
    return argv, reports


def test_make_scene_writes_a_loadable_scene(scene):
    views = load_views(scene, num_views=3)
    assert views.images.shape == (3, 3, 128, 160)
    assert views.depth is not None and views.depth.shape == (32, 40)
    assert views.mask is not None
    for name in ("pair.txt", "cams", "images", "depths", "masks"):
        assert (scene / name).exists()


def test_make_scene_is_deterministic(scene, tmp_path):
    again = tmp_path / "again"
    assert main(["make-scene", str(again), "--seed", "3", "--height", "128", "--width", "160", "--views", "3"]) == 0
    for path in sorted(scene.rglob("*")):
        if path.is_file():
            assert (again / path.relative_to(scene)).read_bytes() == path.read_bytes(), path.name


def test_make_scene_refuses_a_size_mvsnet_cannot_take(tmp_path, capsys):
    assert main(["make-scene", str(tmp_path / "s"), "--height", "130", "--width", "160", "--views", "3"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_make_weights_writes_a_loadable_checkpoint(tmp_path, capsys):
    path = tmp_path / "w.ckpt"
    assert main(["make-weights", str(path)]) == 0
    assert str(path) in capsys.readouterr().out
    model = load_checkpoint(path)
    assert not model.training


def test_make_weights_writes_the_seeded_plane_sweep_initialisation(tmp_path):
    from harness.model.init import plane_sweep_init
    from harness.model.mvsnet import MVSNet

    path = tmp_path / "w.ckpt"
    assert main(["make-weights", str(path), "--seed", "0"]) == 0
    assert state_dict_digest(load_checkpoint(path)) == state_dict_digest(plane_sweep_init(MVSNet(), 0))


def test_bundled_weights_are_trained_not_the_initialisation():
    from harness.model.init import plane_sweep_init
    from harness.model.mvsnet import MVSNet

    bundled = torch.load(BUNDLED_WEIGHTS, map_location="cpu", weights_only=True)
    assert bundled.get("trained_by") == "python -m harness train"
    assert state_dict_digest(load_checkpoint(BUNDLED_WEIGHTS)) != state_dict_digest(plane_sweep_init(MVSNet(), 0))


def test_make_weights_seed_changes_the_weights(tmp_path):
    main(["make-weights", str(tmp_path / "a.ckpt"), "--seed", "1"])
    main(["make-weights", str(tmp_path / "b.ckpt"), "--seed", "2"])
    assert state_dict_digest(load_checkpoint(tmp_path / "a.ckpt")) != state_dict_digest(load_checkpoint(tmp_path / "b.ckpt"))


def test_run_prints_a_table_and_writes_a_report(run_argv, capsys):
    argv, reports = run_argv
    # every backend but torch-aoti, whose MVSNet compile (about 25 s here) tests/test_aoti.py and the
    # suites' parity leg cover
    backends = [name for name in CANDIDATES if name != "torch-aoti"]
    assert main([*argv, "--backends", ",".join(backends)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(len(line) <= 120 for line in lines[:-1]), [line for line in lines[:-1] if len(line) > 120]
    assert any(line.startswith("gates: ") for line in lines)  # each gated metric with its limit
    leg_lines = [line for line in lines if line.startswith(("ok ", "FAIL "))]
    assert leg_lines and all(line.startswith("ok   ") for line in leg_lines)  # the verdict first
    for variant in ("raw", "simplified"):  # ort-cpu legs run everywhere: 2 workarounds x 2 variants
        for workaround in ("precomputed", "closed_form"):
            assert any(line[5:].startswith(f"ort-cpu {variant} {workaround}/torchscript small ") for line in leg_lines)
    (folder,) = list(reports.iterdir())
    verdict = lines[-1]  # the verdict at a glance closes the console and opens report.md
    assert verdict.startswith(f"PASS {len(leg_lines)} legs within their gates"), verdict
    assert f"**{verdict}**" in (folder / "report.md").read_text().splitlines()[:4]
    legs = {row["id"] for row in load_record(folder).parity}
    assert "ort-cpu-raw-vs-torch-fp32-precomputed-torchscript-small" in legs
    assert f"report: {folder / 'report.md'}" in out
    assert (folder / "report.md").is_file()
    assert (folder / "run.json").is_file()
    record = load_record(folder)
    assert record.kind == "run"
    assert len(record.parity) == len(leg_lines) and all(row["passed"] for row in record.parity)
    assert record.config["scene"] == str(argv[argv.index("--scene") + 1])
    assert record.accuracy and record.accuracy[0]["case"] == "small"  # the scene has ground truth
    json.loads((folder / "run.json").read_text())
    if not torch.cuda.is_available():
        assert "no CUDA device: ort-cuda" in verdict and record.skipped["ort-cuda"] == "no CUDA device"
        assert "skipped ort-cuda: no CUDA device" in record.notes


def test_run_twice_writes_two_report_folders(run_argv, scene, tmp_path, capsys):
    argv, _ = run_argv
    reports = tmp_path / "reports"
    argv = argv[:-1] + [str(reports), "--workarounds", "precomputed", "--variants", "raw", "--backends", "ort-cpu"]
    assert main(argv) == 0
    assert main(argv) == 0
    assert len(list(reports.iterdir())) == 2


def test_bad_weights_path_exits_2_with_an_error_line_naming_it(run_argv, tmp_path, capsys):
    argv, _ = run_argv
    missing = tmp_path / "no-such.ckpt"
    code = main(argv[:-1] + [str(tmp_path / "reports"), "--weights", str(missing)])
    assert code == 2
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1
    assert str(missing) in error_lines[0]
    assert "checkpoint not found" in error_lines[0]
    assert not (tmp_path / "reports").exists() or not list((tmp_path / "reports").iterdir())


def test_run_defaults_follow_the_readme():
    args = build_parser().parse_args(["run"])
    assert args.cases == "seed"
    assert args.backends is None  # resolved by run for its device (the next test)
    assert _listed(build_parser().parse_args(["run", "--backends", "all"]), "run", "backends") == CANDIDATES
    assert {"ort-cpu", "ort-cuda"} <= set(CANDIDATES)
    assert args.workarounds == "precomputed,closed_form,custom_op"
    assert args.exporters == "torchscript"
    assert args.variants == "raw,simplified"
    assert args.opset == 17
    assert args.weights is None and args.scene is None


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_main_job_default_leaves_out_on_a_gpu_only_the_cpu_legs_a_gpu_leg_covers(device, monkeypatch, tmp_path):
    import harness.chain as chain_module

    seen = {}

    def capture(cases, workarounds, exporters, variants, candidates):
        seen["candidates"] = candidates
        return []  # no legs: run stops with its usage error before any work

    monkeypatch.setattr(chain_module, "plan_legs", capture)
    monkeypatch.setattr(chain_module, "resolve_device", lambda name: torch.device(device))
    assert main(["run", "--report-dir", str(tmp_path)]) == 2
    if device == "cpu":
        assert seen["candidates"] == CANDIDATES
    else:
        assert seen["candidates"] == tuple(name for name in CANDIDATES if name != "ort-cpu-fp16")
        assert {"ort-cpu", "ort-cuda", "ort-cuda-fp16", "torch-fast-fp16"} <= set(seen["candidates"])
    assert main(["run", "--report-dir", str(tmp_path), "--backends", "all"]) == 2
    assert seen["candidates"] == CANDIDATES  # named: every one, on any device


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_the_main_job_offers_every_tensorrt_setting_the_gate_offers(monkeypatch, tmp_path):
    """cmd_run used to build its ChainConfig without workspace, optimisation level, buffers or CUDA
    graph: the gate and the main job could not be configured alike."""
    from harness import preflight as preflight_module
    from harness.plugin import pytest_addoption

    class Group:
        def __init__(self):
            self.flags = []

        def addoption(self, flag, **kwargs):
            self.flags.append(flag)

    class Parser:
        group = Group()

        def getgroup(self, *args, **kwargs):
            return self.group

    parser = Parser()
    pytest_addoption(parser)  # type: ignore[arg-type]
    gate = {f.removeprefix("--harness-") for f in parser.group.flags if f.startswith("--harness-trt")}
    run = next(a for a in build_parser()._actions if getattr(a, "choices", None) and "run" in a.choices).choices["run"]
    cli = {f.removeprefix("--") for a in run._actions for f in a.option_strings if f.startswith("--trt")}
    assert gate == cli
    seen = {}

    def capture(config, cases, report_dir, flags):
        seen["config"] = config
        raise preflight_module.PreflightError("stop", "captured")

    monkeypatch.setattr(preflight_module, "preflight", capture)
    main(["run", "--cases", "small", "--trt-workspace", "1024", "--trt-opt-level", "1", "--trt-buffers", "pycuda",
          "--trt-cuda-graph", "--report-dir", str(tmp_path)])
    config = seen["config"]
    assert (config.trt_workspace_mib, config.trt_opt_level, config.trt_buffers, config.trt_cuda_graph) == (
        1024, 1, "pycuda", True)


@pytest.mark.parametrize(("value", "line"), [
    ("small,huge", "error: --case | unknown case: huge. Expected: one or more of small, seed, dtu, comma separated. "
                   "Fix: pass --case small (several, e.g. --case small,seed, for a graph with dynamic axes)."),
    ("huge", "error: --case | unknown case: huge. Expected: one or more of small, seed, dtu, comma separated. "
             "Fix: pass --case small (several, e.g. --case small,seed, for a graph with dynamic axes)."),
    (",", "error: --case | empty list: ','. Expected: one or more of small, seed, dtu, comma separated. "
          "Fix: pass --case small (several, e.g. --case small,seed, for a graph with dynamic axes)."),
])
def test_check_refuses_a_case_naming_its_own_flag_not_a_pytest_one(tmp_path, capsys, value, line):
    assert main(["check", "--onnx", str(tmp_path / "mine.onnx"), "--case", value,
                 "--report-dir", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [line] and "--harness-" not in err
    assert not (tmp_path / "reports").exists()


def test_no_cli_message_in_the_model_and_data_layers_names_a_pytest_flag():
    """The low layers spell fixes with the CLI's flags (harness.preflight translates them for pytest):
    a fix naming --harness-<x> alone would reach a CLI user as a flag their command lacks."""
    import re

    root = Path(__file__).resolve().parents[1] / "harness"
    found = []
    for folder in ("model", "data"):
        for path in (root / folder).glob("*.py"):
            for number, text in enumerate(path.read_text().splitlines(), 1):
                for flag in re.findall(r"--harness-[a-z-]+", text):
                    if f"--{flag[len('--harness-'):]} / {flag}" not in text:  # both spellings named is fine
                        found.append(f"{path.name}:{number}: {flag}")
    assert found == []


def test_accuracy_measures_a_held_out_family_and_writes_its_summary(tmp_path, capsys):
    out = tmp_path / "acc.json"
    argv = ["accuracy", "--cases", "small", "--scenes", "1", "--family", "independent", "--device", "cpu",
            "--report-dir", str(tmp_path / "reports"), "--json", str(out)]
    assert main(argv) == 0
    assert "1 held-out independent scenes" in capsys.readouterr().out
    (result,) = json.loads(out.read_text())["results"]
    assert result["family"] == "independent" and result["case"] == "small" and result["seeds"] == [2_000_020, 2_000_020]
    assert {"mae_mm", "thres2mm", "thres4mm", "thres8mm"} <= set(result)


@pytest.mark.parametrize(("extra", "line"), [
    (["--family", "independent", "--first", "100"], "no held-out scene selected"),
    (["--first", "-1"], "no held-out scene selected"),
])
def test_accuracy_refuses_a_seed_selection_outside_the_family(extra, line, tmp_path, capsys):
    assert main(["accuracy", "--cases", "small", "--report-dir", str(tmp_path), *extra]) == 2
    assert line in capsys.readouterr().err


def test_accuracy_refuses_an_unknown_family_listing_the_families(capsys):
    with pytest.raises(SystemExit) as info:
        main(["accuracy", "--family", "dtu"])
    assert info.value.code == 2
    assert "classic" in capsys.readouterr().err
