"""``python -m harness check`` on real small graphs, exported the source article's way by
examples/export_article.py (the README's walkthrough): the faithful graph and benign rewrites
pass (exit 0); nearest sampling, the other align_corners, swapped inputs and a graph exported for
another shape fail and say where (exit 1, or 2 for the refused shape)."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from harness.check import inspect_onnx
from harness.cli import main
from harness.report.record import load_record

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("export_article", ROOT / "examples" / "export_article.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("check")


@pytest.fixture(scope="module")
def walkthrough(work, capsys_module=None):
    """The README walkthrough, as CI runs it: export the article's way, print trtexec, check."""
    example = _example()
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = example.main(["--out", str(work), "--case", "small", "--report-dir", str(work / "reports"),
                               "--backends", "ort-cpu"])
    return example, status, out.getvalue()


def check(work, *argv):
    return main(["check", "--report-dir", str(work / "reports"), "--backends", "ort-cpu", *argv])


def edited(source: Path, target: Path, edit) -> Path:
    model = onnx.load(str(source))
    edit(model)
    onnx.save(model, str(target))
    return target


def set_grid_attr(name, value):
    def edit(model):
        for node in model.graph.node:
            if node.op_type == "GridSample":
                for attribute in node.attribute:
                    if attribute.name == name:
                        if attribute.type == onnx.AttributeProto.STRING:
                            attribute.s = value
                        else:
                            attribute.i = value
    return edit


def rename_tensors(mapping):
    def edit(model):
        for value in (*model.graph.input, *model.graph.output):
            value.name = mapping.get(value.name, value.name)
        for node in model.graph.node:
            node.input[:] = [mapping.get(n, n) for n in node.input]
            node.output[:] = [mapping.get(n, n) for n in node.output]
            node.name = f"renamed_{node.name}"
    return edit


def test_walkthrough_exports_the_articles_graph_prints_trtexec_and_passes(walkthrough, work):
    _, status, text = walkthrough
    assert status == 0, text
    assert f"trtexec --onnx={work / 'mvsnet.onnx'} --saveEngine={work / 'mvsnet.trt'} --memPoolSize=workspace:6000" \
        in text
    assert "opset 16, producer pytorch" in text and "TensorRT audit ok" in text
    assert "tensors bound (by article names)" in text and "case small (3x128x160xD48)" in text
    lines = text.splitlines()
    assert any(line.startswith("ok   mvsnet.onnx ort-cpu small ") for line in lines) and "FAIL" not in text
    assert any(line.startswith(("gates: depth: ", "  depth: ")) for line in lines)  # the gated metrics and limits, as run
    assert lines[-1].startswith("PASS 1 leg within its gates")  # the verdict closes the console
    facts = inspect_onnx(work / "mvsnet.onnx")
    assert [i.name for i in facts.inputs] == ["in_imgs", "in_proj_matrices", "in_inverse_proj_matrices",
                                              "in_depth_values"]
    assert facts.opset == 16 and {g["mode"] for g in facts.grid_samples} == {"bilinear"}


def test_report_folder_holds_the_leg_and_the_graph_facts(walkthrough, work):
    record = load_record(sorted((work / "reports").iterdir())[0])
    assert record.kind == "check"
    (row,) = record.parity
    assert row["id"] == "user-onnx-mvsnet-ort-cpu-vs-torch-fp32-small" and row["passed"]
    assert record.artifacts[0]["opset"] == 16 and record.artifacts[0]["io_bound_by"] == "by article names"
    assert any("skipped" not in n for n in record.notes)


def test_nearest_sampling_fails_and_names_the_gridsample_nodes(walkthrough, work, capsys):
    graph = edited(work / "mvsnet.onnx", work / "nearest.onnx", set_grid_attr("mode", b"nearest"))
    assert check(work, "--onnx", str(graph)) == 1
    text = capsys.readouterr().out
    assert "user-onnx-nearest-ort-cpu-vs-torch-fp32-small" in text and "FAIL" in text
    assert "GridSample node /model/GridSample samples with mode 'nearest'" in text
    # the graph's own stages against the harness MVSNet's: the warped volumes are where it starts
    assert "stage errors of nearest.onnx (warped_1 = /model/GridSample_output_0" in text
    assert "-> first stage over its tolerance: warped_1" in text


def test_flipped_align_corners_fails_naming_the_convention_and_passes_with_its_flag(walkthrough, work, capsys):
    # align_corners is only GridSample's attribute in the exported graph: the same bytes as an export
    # with MVSNet(align_corners=False) (examples/export_article.py --align-corners false)
    graph = edited(work / "mvsnet.onnx", work / "ac0.onnx", set_grid_attr("align_corners", 0))
    assert check(work, "--onnx", str(graph)) == 1
    text = capsys.readouterr().out
    assert "passes against the reference with align_corners=False" in text
    assert "--align-corners false (pytest: --harness-align-corners false)" in text
    assert "align_corners=0" in text  # where: the graph's GridSample attribute
    assert check(work, "--onnx", str(graph), "--align-corners", "false") == 0


def test_inputs_in_the_wrong_order_fail_with_the_io_map_that_gates_them(walkthrough, work, capsys):
    # input_names=[in_imgs, in_inverse_proj_matrices, in_proj_matrices, in_depth_values] at export
    swap = {"in_proj_matrices": "in_inverse_proj_matrices", "in_inverse_proj_matrices": "in_proj_matrices"}
    graph = edited(work / "mvsnet.onnx", work / "swapped.onnx", rename_tensors(swap))
    assert check(work, "--onnx", str(graph)) == 1
    text = capsys.readouterr().out
    assert "inputs in the wrong order: the graph's 'in_proj_matrices' takes the inverse projections" in text
    fix = text.split("gate it as exported with --io-map ")[1].split()[0]
    assert check(work, "--onnx", str(graph), "--io-map", fix) == 0


def test_graph_exported_for_another_shape_is_refused_naming_the_input(walkthrough, work, capsys):
    assert check(work, "--onnx", str(work / "mvsnet.onnx"), "--case", "seed") == 2
    err = capsys.readouterr().err
    assert "in_imgs (imgs) | the graph was exported for another shape than case seed: [1, 3, 3, 128, 160]" in err
    assert "Expected: [1, 3, 3, 512, 640]" in err and "Fix:" in err


def test_benign_rewrites_pass(walkthrough, work, capsys):
    example = walkthrough[0]
    raw = example.export(work / "raw.onnx", "small", simplify=False)  # onnxsim left out
    ours = {"in_imgs": "imgs", "in_proj_matrices": "proj_matrices", "in_inverse_proj_matrices": "inverse_proj_matrices",
            "in_depth_values": "depth_values", "out_depth": "depth", "out_confidence": "photometric_confidence"}
    renamed = edited(work / "mvsnet.onnx", work / "harness-names.onnx", rename_tensors(ours))
    unnamed = edited(work / "mvsnet.onnx", work / "unnamed.onnx",
                     rename_tensors({k: f"t{i}" for i, k in enumerate(ours)}))
    for graph in (raw, renamed, unnamed):
        assert check(work, "--onnx", str(graph)) == 0, capsys.readouterr().out
    assert "positional (MVSNet_pytorch order)" in capsys.readouterr().out


def test_unmappable_graph_is_refused_with_its_names_shapes_and_the_fix(walkthrough, work, capsys):
    graph = edited(work / "mvsnet.onnx", work / "odd.onnx",
                   rename_tensors({"in_imgs": "images", "in_depth_values": "planes"}))
    assert check(work, "--onnx", str(graph)) == 2
    err = capsys.readouterr().err
    assert "graph inputs not recognised: unresolved images, planes" in err
    assert "images [1, 3, 3, 128, 160] float32" in err
    assert "Fix: say which is which with --io-map images=imgs,in_proj_matrices=proj_matrices," in err


def test_opset_20_gridsample_trap_is_reported_on_a_user_graph(walkthrough, work):
    def to_opset_20(model):
        model.opset_import[0].version = 20
        set_grid_attr("mode", b"linear")(model)

    facts = inspect_onnx(edited(work / "mvsnet.onnx", work / "opset20.onnx", to_opset_20))
    assert facts.opset == 20
    assert "NVIDIA/TensorRT#4646" in facts.summary()


def test_engine_header_facts_reach_the_report_when_no_tensorrt_runs_it(walkthrough, work, capsys):
    engine = work / "mvsnet.trt"
    engine.write_bytes(struct.pack("<II", 0x74727466, 0) + bytes(16) + bytes((10, 3, 0, 26)) + bytes(100))
    reports = work / "engine-reports"
    assert main(["check", "--onnx", str(work / "mvsnet.onnx"), "--engine", str(engine), "--backends", "ort-cpu",
                 "--report-dir", str(reports)]) == 0
    text = capsys.readouterr().out
    assert "plan header: built with TensorRT 10.3.0.26 (serialization 0)" in text
    verdict = text.splitlines()[-1]  # the last line: every skipped backend with its reason
    assert verdict.startswith("PASS 1 leg within its gates; 1 backend skipped (tensorrt not importable (the engine's "
                              "plan header: built with TensorRT 10.3.0.26"), verdict
    record = load_record(next(reports.iterdir()))
    engine_facts = [a for a in record.artifacts if a["kind"] == "user-engine"]
    assert engine_facts and engine_facts[0]["built_with_tensorrt"] == "10.3.0.26"
    onnx_file = work / "mvsnet.onnx"
    assert main(["check", "--engine", str(onnx_file), "--report-dir", str(reports)]) == 2  # not a plan


def test_pytest_front_runs_user_legs_into_the_session_record(walkthrough, work):
    reports = work / "pytest-reports"
    nearest = work / "nearest.onnx"
    if not nearest.exists():
        edited(work / "mvsnet.onnx", nearest, set_grid_attr("mode", b"nearest"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_user_artifacts.py", "-p", "no:randomly", "-p", "no:cacheprovider",
         "-q", "-rs", "--harness-onnx", str(work / "mvsnet.onnx"), "--harness-onnx", str(nearest),
         "--harness-report-dir", str(reports)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 1, out  # the nearest graph fails the gate
    assert "test_user_artifact_parity[user-onnx-mvsnet-ort-cpu-vs-torch-fp32-small] PASSED" in out or \
        "1 failed, 1 passed" in out, out
    assert "GridSample node /model/GridSample samples with mode 'nearest'" in out
    assert "ort-cuda: no CUDA device" in out and "tensorrt not importable" in out
    record = json.loads((next(reports.iterdir()) / "run.json").read_text())
    assert sorted(r["id"] for r in record["parity"]) == ["user-onnx-mvsnet-ort-cpu-vs-torch-fp32-small",
                                                         "user-onnx-nearest-ort-cpu-vs-torch-fp32-small"]
    assert {a["path"] for a in record["artifacts"]} == {str(work / "mvsnet.onnx"), str(nearest)}


def _user_package(work, monkeypatch, name: str, source: str) -> None:
    """A package ``name`` with a module ``mvsnet`` holding ``source``, importable by ``--model``."""
    package = work / name
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "mvsnet.py").write_text(source)
    monkeypatch.syspath_prepend(str(work))


def test_user_model_code_is_the_reference(walkthrough, work, capsys, monkeypatch):
    _user_package(work, monkeypatch, "mymodels",
        "from harness.model.mvsnet import MVSNet\n\n\n"
        "class Patched(MVSNet):  # the article's patch: the inverse fed, a (depth, confidence) tuple\n"
        "    def forward(self, imgs, proj_matrices, inverse_proj_matrices, depth_values):\n"
        "        out = super().forward(imgs, proj_matrices, depth_values, inverse_proj_matrices)\n"
        "        return out['depth'], out['photometric_confidence']\n\n\n"
        "def old_default():  # MVSNet_pytorch's code on torch >= 1.3\n"
        "    return MVSNet(align_corners=False)\n")
    graph = str(work / "mvsnet.onnx")
    assert check(work, "--onnx", graph, "--model", "mymodels.mvsnet:Patched") == 0
    assert "reference torch-fp32 (--model mymodels.mvsnet:Patched)" in capsys.readouterr().out
    assert check(work, "--onnx", graph, "--model", "mymodels.mvsnet:old_default") == 1
    assert check(work, "--onnx", graph, "--model", "mymodels.nothere:X") == 2
    assert "--model | cannot import the module" in capsys.readouterr().err


def test_align_corners_with_model_is_refused_and_the_record_leaves_the_convention_to_the_code(walkthrough, work,
                                                                                                capsys, monkeypatch):
    _user_package(work, monkeypatch, "acmodels",
                  "from harness.model.mvsnet import MVSNet\n\n\ndef default():\n    return MVSNet()\n")
    graph = str(work / "mvsnet.onnx")
    for value in ("true", "false"):  # either value: the user's grid_sample call decides, not the flag
        assert check(work, "--onnx", graph, "--model", "acmodels.mvsnet:default", "--align-corners", value) == 2
        err = capsys.readouterr().err
        assert "--align-corners | cannot be combined with --model" in err
        assert "whatever your code's grid_sample uses" in err
    reports = work / "reports-ac"
    assert main(["check", "--report-dir", str(reports), "--backends", "ort-cpu", "--onnx", graph,
                 "--model", "acmodels.mvsnet:default"]) == 0
    assert load_record(next(reports.iterdir())).config["align_corners"] is None
    assert check(work, "--onnx", graph) == 0  # without --model: the harness's convention, true by default
    assert "reference torch-fp32 (harness MVSNet, align_corners=true)" in capsys.readouterr().out


def test_diagnosis_with_model_names_only_the_checks_it_ran(walkthrough, work, capsys, monkeypatch):
    _user_package(work, monkeypatch, "diagmodels",
                  "from harness.model.mvsnet import MVSNet\n\n\ndef old_default():\n    return MVSNet(align_corners=False)\n")
    assert check(work, "--onnx", str(work / "mvsnet.onnx"), "--model", "diagmodels.mvsnet:old_default") == 1
    text = capsys.readouterr().out
    assert "no known conversion bug of those checked (sampling mode, swapped 4x4 inputs)" in text
    assert "not checked: align_corners (with --model the convention is your code's)" in text
    assert "(sampling mode, align_corners" not in text  # never claims the check it did not run


#: A tiny user package laid out like MVSNet_pytorch's code (models/mvsnet.py): ``MVSNet(refine=True)``
#: by default, with a RefineNet the published checkpoints do not hold, and grid_sample called without
#: align_corners (False since torch 1.3); the network itself is the harness's, so the test stays small.
ORIGINAL_LAYOUT = """
from torch import nn

from harness.model.mvsnet import MVSNet as _HarnessMVSNet


class RefineNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 32, 3, padding=1)


class MVSNet(_HarnessMVSNet):
    def __init__(self, refine=True):
        super().__init__(align_corners=False)  # F.grid_sample's default on torch >= 1.3
        self.refine = refine
        if self.refine:
            self.refine_network = RefineNet()

    def forward(self, imgs, proj_matrices, depth_values):
        return super().forward(imgs, proj_matrices, depth_values)


class Trained(MVSNet):  # grid_sample(..., align_corners=True): what the checkpoints were trained with
    def __init__(self, refine=True):
        super().__init__(refine)
        self.align_corners = True


class Shifted(MVSNet):  # computes something else than MVSNet
    def forward(self, imgs, proj_matrices, depth_values):
        out = super().forward(imgs, proj_matrices, depth_values)
        return {"depth": out["depth"] + 1.0, "photometric_confidence": out["photometric_confidence"]}
"""


@pytest.fixture
def original_layout(work, monkeypatch):
    _user_package(work, monkeypatch, "models", ORIGINAL_LAYOUT)
    yield "models.mvsnet"
    for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
        del sys.modules[name]


def test_the_help_examples_run_as_written(walkthrough, work, original_layout, monkeypatch, capsys, tmp_path):
    """Every `python -m harness check ...` line of check --help, typed in a folder holding what the
    help says they need (build/mvsnet.onnx from examples/export_article.py, MVSNet_pytorch's
    models/ package); only --report-dir is added, to keep reports/ clean."""
    import shlex
    import shutil

    from harness.cli import COMMANDS, examples

    (tmp_path / "build").mkdir()
    shutil.copy(work / "mvsnet.onnx", tmp_path / "build" / "mvsnet.onnx")
    monkeypatch.chdir(tmp_path)
    command = next(c for c in COMMANDS if c.name == "check")
    lines = examples(command)
    assert any("--model 'models.mvsnet:MVSNet(refine=False)'" in line for line in lines)
    capsys.readouterr()
    for line in lines:
        argv = shlex.split(line)
        assert argv[:3] == ["python", "-m", "harness"], line
        assert main([*argv[3:], "--report-dir", str(tmp_path / "reports")]) == 0, line
        out = capsys.readouterr().out
        assert out.splitlines()[-1].startswith("PASS "), (line, out)
    # the --model example (seed, the bundled scene's ground truth): the convention and what the other costs
    assert "PASS your model matches the harness MVSNet with align_corners=False on seed" in out
    assert "matches  align_corners=False" in out and "differs  align_corners=True" in out
    conclusion = next(t for t in out.splitlines() if t.strip().startswith("-> your model samples with"))
    assert "align_corners=False 4.22 mm, 52.4%, 29.4%, align_corners=True 1.51 mm, 5.8%, 2.1%" in conclusion
    assert "align_corners=True is more accurate by 2.71 mm" in conclusion
    record = load_record(max((tmp_path / "reports").iterdir()))
    assert record.config["model"] == "models.mvsnet:MVSNet(refine=False)" and record.config["case"] == "seed"
    rows = {r["backend"]: r for r in record.accuracy}
    assert rows["torch-fp32 harness MVSNet align_corners=False"]["matches_your_model"] is True
    assert rows["torch-fp32 harness MVSNet align_corners=True"]["matches_your_model"] is False
    assert abs(rows["torch-fp32 --model models.mvsnet:MVSNet(refine=False)"]["mae_mm"] - 4.22) < 0.01


def test_model_alone_names_the_convention_it_matches_or_fails_when_neither(walkthrough, work, original_layout,
                                                                        capsys):
    spec = f"{original_layout}:Trained(refine=False)"
    assert check(work, "--model", spec, "--case", "small") == 0
    out = capsys.readouterr().out
    assert "matches: within the FP32 torch-vs-torch gates (cpu): depth: max_intervals_confident <= " in out
    assert "-> your model samples with align_corners=True (within the FP32 torch-vs-torch gates)" in out
    assert "yours is the more accurate by 3.19 mm with these weights" in out  # small: 14.17 mm vs 17.37 mm
    assert out.splitlines()[-1] == "PASS your model matches the harness MVSNet with align_corners=True on small"
    assert check(work, "--model", f"{original_layout}:Shifted(refine=False)", "--case", "small") == 1
    out = capsys.readouterr().out
    assert "differs  align_corners=True" in out and "differs  align_corners=False" in out
    assert "your model matches neither convention: nearest is align_corners=False" in out
    assert "max |depth diff| 1 mm" in out
    assert out.splitlines()[-1] == "FAIL your model matches neither sampling convention on small"


@pytest.mark.parametrize(("spec", "line"), [
    ("{pkg}:MVSNet", "error: --model {pkg}:MVSNet | the network has a RefineNet, which the harness does not "
                     "evaluate: 2 refine_network.* weights in MVSNet(); 0 in mvsnet-default.ckpt."),
    ("{pkg}:MVSNet(False)", "error: --model | the factory's arguments are not keyword=literal pairs: (False)."),
    ("{pkg}:MVSNet(refine=print('x'))", "error: --model | a factory argument is not a Python literal: "
                                        "refine=print('x')."),
    ("{pkg}:MVSNet(refine=False", "error: --model | the factory's arguments are not keyword=literal pairs"),
    ("{pkg}:MVSNet(bogus=1)", "error: --model | the factory raised: MVSNet(bogus=1): TypeError:"),
])
def test_bad_model_specs_are_one_line_exit_2(work, original_layout, capsys, spec, line):
    assert check(work, "--model", spec.format(pkg=original_layout), "--case", "small") == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(line.format(pkg=original_layout)), err
    if spec.endswith(":MVSNet"):
        assert f"Fix: pass --model '{original_layout}:MVSNet(refine=False)' (quoted for the shell)." in err


def test_several_cases_run_a_dynamic_graph_at_each_and_a_static_graph_is_refused_naming_its_shape(
        walkthrough, work, capsys, tmp_path, monkeypatch):
    from harness.chain import Chain, ChainConfig
    from harness.data.cases import CASES, Case

    assert check(work, "--onnx", str(work / "mvsnet.onnx"), "--case", "small,huge") == 2
    assert "--case | unknown case: huge. Expected: one or more of small, seed, dtu, comma separated." in \
        capsys.readouterr().err
    static = work / "mvsnet.onnx"  # exported at the small case; refused before anything runs
    assert check(work, "--onnx", str(static), "--case", "small,seed") == 2
    err = capsys.readouterr().err
    assert "the graph was exported for another shape than case seed: [1, 3, 3, 128, 160]" in err
    assert "Fix: the graph is static, exported for 3x128x160xD48 (views x H x W x D): leave out --case (its static " \
           "shapes are used: case small), or re-export it with dynamic_axes over H, W and D to run case seed" in err
    # a second shape, 1/12 of the seed case's work (the seed case made this test 45-65 s on 2 cores):
    # the dynamic graph runs at each case named, whatever its size
    monkeypatch.setitem(CASES, "mid", Case("mid", 3, 256, 320, 64))
    chain = Chain(ChainConfig(device="cpu", cache_dir=tmp_path / "cache"))
    dynamic = chain.onnx("small", "precomputed", "torchscript", "raw", "fp32", dynamic=True).path
    chain.close()
    replays = tmp_path / "replays"
    assert check(work, "--onnx", str(dynamic), "--case", "small,mid", "--save-polygraphy", str(replays)) == 0
    out = capsys.readouterr().out
    assert out.count("precision audit:") == 1  # the graph's facts once, each case named
    assert "  case small (3x128x160xD48)" in out and "  case mid (3x256x320xD64)" in out
    assert "ok   model.onnx ort-cpu small" in out and "ok   model.onnx ort-cpu mid" in out
    assert out.splitlines()[-1] == "PASS 2 legs within their gates"
    assert (replays / "small" / "commands.sh").is_file() and (replays / "mid" / "commands.sh").is_file()


def test_no_bug_found_lists_what_ran_and_what_did_not():
    from harness.check import no_bug_found

    both = no_bug_found(["sampling mode", "align_corners"], ["swapped 4x4 inputs (no inverse)"])
    assert both.startswith("no known conversion bug of those checked (sampling mode, align_corners)")
    assert "not checked: swapped 4x4 inputs (no inverse)" in both
    assert no_bug_found([], ["sampling mode (engine)"]).startswith(
        "no known conversion bug could be checked; not checked: sampling mode (engine)")
    assert "not checked" not in no_bug_found(["sampling mode"], [])


def test_a_graph_exported_with_other_weights_is_named_before_any_stage(walkthrough, work, capsys):
    from harness.chain import BUNDLED_WEIGHTS
    from harness.convert.user_graph import conv_weights_differing
    from harness.model.checkpoint import read_state_dict

    graph = work / "mvsnet.onnx"  # exported with the bundled checkpoint (BatchNorms folded into the convolutions)
    bundled = {k: v.numpy() for k, v in read_state_dict(BUNDLED_WEIGHTS).items() if v.is_floating_point()}
    differing, total = conv_weights_differing(graph, bundled)
    assert total > 0 and differing == 0
    other = work / "seed1.ckpt"
    assert main(["make-weights", str(other), "--seed", "1"]) == 0
    capsys.readouterr()
    assert check(work, "--onnx", str(graph), "--weights", str(other)) == 1
    text = capsys.readouterr().out
    line = next(t for t in text.splitlines() if "the graph's weights are not the checkpoint's" in t)
    assert f"(--weights {other}): " in line and f" of {total} convolution weights differ" in line
    assert "stage errors of" not in text.split("the graph's weights are not the checkpoint's")[0]
    assert "no known conversion bug" not in text


def test_pytest_planning_keeps_a_refused_graph_as_a_failing_leg(walkthrough, work):
    from harness.chain import ChainConfig
    from harness.errors import HarnessError
    from harness.plugin import NO_USER_ARTIFACT, HarnessOptions, RefusedArtifact, UserArtifacts, _user_legs

    odd = work / "odd.onnx"
    if not odd.exists():
        edited(work / "mvsnet.onnx", odd, rename_tensors({"in_imgs": "images", "in_depth_values": "planes"}))
    base = dict(profile="quick", cases=("small",), exporters=(), workarounds=(), variants=(), candidates=(),
                chain=ChainConfig(), tolerances=None, report_dir=None)
    (none,) = _user_legs(HarnessOptions(**base))
    assert none.marks[0].kwargs["reason"] == NO_USER_ARTIFACT
    legs = _user_legs(HarnessOptions(**base, user=UserArtifacts(onnx=(odd, work / "mvsnet.onnx"))))
    assert [leg.id for leg in legs] == [
        "user-onnx-odd-refused", "user-onnx-mvsnet-ort-cpu-vs-torch-fp32-small",
        "user-onnx-mvsnet-ort-cuda-vs-torch-fp32-small", "user-onnx-mvsnet-trt-fp32-vs-torch-fp32-small"]
    assert isinstance(legs[0], RefusedArtifact) and isinstance(legs[0].error, HarnessError)
    assert "unresolved images, planes" in str(legs[0].error)


def test_dynamic_axes_over_constants_baked_for_another_shape_fail_naming_the_node(walkthrough, work, capsys):
    def declare_dynamic(model):  # what dynamic_axes= at export declares; the constants stay traced
        for value in model.graph.input:
            dims = value.type.tensor_type.shape.dim
            if value.name == "in_imgs":
                dims[3].dim_param, dims[4].dim_param = "H", "W"
            elif value.name == "in_depth_values":
                dims[1].dim_param = "D"
        for value in model.graph.output:
            dims = value.type.tensor_type.shape.dim
            dims[1].dim_param, dims[2].dim_param = "h", "w"

    graph = edited(work / "mvsnet.onnx", work / "dynamic.onnx", declare_dynamic)
    assert check(work, "--onnx", str(graph)) == 2  # no static shapes: a case is needed
    assert "the graph's input shapes are dynamic and no case was given" in capsys.readouterr().err
    assert check(work, "--onnx", str(graph), "--case", "seed") == 1
    text = capsys.readouterr().out
    assert "FAIL user-onnx-dynamic-ort-cpu-vs-torch-fp32-seed" in text
    assert "the runtime failed on the graph" in text and "Reshape node" in text


def test_opset_20_graph_fails_the_tensorrt_leg_before_any_build(walkthrough, work, capsys):
    graph = work / "opset20.onnx"
    if not graph.exists():
        test_opset_20_gridsample_trap_is_reported_on_a_user_graph(walkthrough, work)
    assert check(work, "--onnx", str(graph), "--backends", "trt-fp32") == 1
    text = capsys.readouterr().out
    assert "FAIL user-onnx-opset20-trt-fp32-vs-torch-fp32-small" in text
    assert "TensorRT's ONNX parser cannot take this graph" in text and "NVIDIA/TensorRT#4646" in text


def test_a_raw_runner_over_a_user_graph_names_the_binding_instead_of_a_key_error(walkthrough, work):
    from harness.backends.onnxruntime_runner import OrtRunner
    from harness.chain import Chain, ChainConfig
    from harness.errors import InvalidInput

    feed = Chain(ChainConfig(device="cpu")).feed("small")
    article = dict(zip(["in_imgs", "in_proj_matrices", "in_inverse_proj_matrices", "in_depth_values"],
                       [feed[k] for k in ("imgs", "proj_matrices", "inverse_proj_matrices", "depth_values")]))
    with OrtRunner(work / "mvsnet.onnx") as runner, pytest.raises(InvalidInput, match="user_onnx_runner"):
        runner.infer(article)


def test_usage_errors_exit_2_before_any_work(work, capsys):
    assert main(["check", "--report-dir", str(work / "reports")]) == 2
    assert "check | nothing to check: no --onnx, no --engine and no --model" in capsys.readouterr().err
    assert check(work, "--onnx", str(work / "absent.onnx"), "--backends", "ort-cpu,trt-fp16") == 2
    assert "--backends | unknown or no backend: trt-fp16" in capsys.readouterr().err
    assert check(work, "--onnx", str(work / "absent.onnx")) == 2
    assert "absent.onnx | ONNX file not found" in capsys.readouterr().err


def test_probe_copy_exposes_the_warped_volumes_and_the_probability(walkthrough, work):
    from harness.check import probe_graph

    stages = probe_graph(work / "mvsnet.onnx", work / "probe" / "mvsnet-probes.onnx")
    assert sorted(stages.values()) == ["prob", "warped_1", "warped_2"]  # 3 views: 2 source volumes
    outputs = [o.name for o in onnx.load(str(work / "probe" / "mvsnet-probes.onnx")).graph.output]
    assert outputs[:2] == ["out_depth", "out_confidence"] and set(stages) <= set(outputs)


def _polygraphy_replay(commands: Path) -> subprocess.CompletedProcess:
    """Polygraphy's ONNX Runtime runner on the saved files, through the written commands.sh."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(commands), "onnxrt"], capture_output=True, text=True, env=env, timeout=180,
                          check=False)


@pytest.mark.parametrize(("graph", "status"), [("faithful", 0), ("nearest", 1)])
def test_polygraphy_replaying_check_s_files_agrees_with_check(walkthrough, work, capsys, graph, status):
    """The issue's check: `harness check --save-polygraphy DIR` on the article's export and on the
    same graph with nearest sampling; Polygraphy replays DIR on ONNX Runtime and agrees."""
    pytest.importorskip("polygraphy", reason="polygraphy not installed (pip install -e '.[polygraphy]')")
    source = work / "mvsnet.onnx"
    path = source if graph == "faithful" else edited(source, work / "nearest-replayed.onnx",
                                                     set_grid_attr("mode", b"nearest"))
    folder = work / f"replay-{graph}"
    assert check(work, "--onnx", str(path), "--save-polygraphy", str(folder)) == status
    out = capsys.readouterr().out
    assert f"replay for Polygraphy / trtexec: {folder / 'commands.sh'}" in out
    for name in ("inputs.json", "reference_outputs.json", "commands.sh"):
        assert (folder / name).is_file(), name
    inputs = json.loads((folder / "inputs.json").read_text())
    assert set(inputs[0]) == {"in_imgs", "in_proj_matrices", "in_inverse_proj_matrices", "in_depth_values"}
    replayed = _polygraphy_replay(folder / "commands.sh")
    assert (replayed.returncode == 0) is (status == 0), replayed.stdout[-2000:] + replayed.stderr[-2000:]
    assert ("PASSED" if status == 0 else "FAILED") in replayed.stdout + replayed.stderr


ARTICLE_NAMES = {"imgs": "in_imgs", "proj_matrices": "in_proj_matrices",
                 "inverse_proj_matrices": "in_inverse_proj_matrices", "depth_values": "in_depth_values",
                 "depth": "out_depth", "photometric_confidence": "out_confidence"}


@pytest.mark.parametrize(("name", "status"), [
    # bugs below the shared gates: caught by the case's own gates, the stage gates, the precision audit
    ("bias-x1.01-last-feature-conv", 1), ("depth-values-offset-regression", 1),
    # inside the calibrated margin since the property suite's rigs joined the CPU record (2026-12-03):
    # depth 0.0103 steps against 0.011 then (worst benign 0.0036), against 0.022 since 230 rigs
    # (worst benign 0.0070), 0.044 since the DTU case (worst 0.0145); check passes it, measured, not hidden
    ("bn-epsilon", 0),
    ("all-weights-fp16", 1), ("softmax-fp16", 1),
    ("identity-inserted", 0), ("views-swapped-consistently", 0),  # benign rewrites pass
])
def test_catalogue_bugs_in_the_articles_export_fail_check_and_benign_rewrites_pass(walkthrough, work, capsys,
                                                                                    name, status):
    """Issue 15's check on a user's graph: the mutation catalogue applied to the article's export
    (its tensor names mapped), judged by `harness check` alone."""
    from harness.mutate import CATALOGUE

    example = walkthrough[0]
    mutation = CATALOGUE[name]
    source = work / "mvsnet.onnx"
    if mutation.variant == "raw":
        source = work / "mvsnet-unsimplified.onnx"
        if not source.exists():
            example.export(source, "small", simplify=False)
    path = work / f"mutated-{name}.onnx"
    onnx.save(mutation(onnx.load(str(source)), ARTICLE_NAMES), str(path))
    assert check(work, "--onnx", str(path)) == status, capsys.readouterr().out[-3000:]


def _grid_through_matmul(model):
    """The grid of every GridSample through a MatMul with the 2x2 identity (exact in FP32, so the
    graph still passes on CPU; TF32 would round the grid's coordinates)."""
    from onnx import helper, numpy_helper

    eye = numpy_helper.from_array(__import__("numpy").eye(2, dtype="float32"), "grid_eye")
    model.graph.initializer.append(eye)
    for k, node in enumerate([n for n in model.graph.node if n.op_type == "GridSample"]):
        index = list(model.graph.node).index(node)
        out = f"grid_mm_{k}"
        model.graph.node.insert(index, helper.make_node("MatMul", [node.input[1], "grid_eye"], [out],
                                                        name=f"grid_matmul_{k}"))
        node.input[1] = out


def test_a_grid_exposed_to_tf32_is_named_with_both_fixes_and_the_drift_skipped_without_cuda(walkthrough, work,
                                                                                             capsys):
    _, status, text = walkthrough
    assert "TF32: sampling grid computed without MatMul/Gemm/Einsum" in text  # the harness's geometry
    graph = edited(work / "mvsnet.onnx", work / "tf32grid.onnx", _grid_through_matmul)
    assert main(["check", "--report-dir", str(work / "reports-tf32"), "--backends", "ort-cpu,ort-cuda",
                 "--onnx", str(graph)]) == 0  # a warning, not a failure
    out = capsys.readouterr().out
    assert "TF32: WARNING: 2 MatMul/Gemm/Einsum node(s) compute the sampling grid" in out
    assert "WARNING TF32 exposure of tf32grid.onnx" in out and "-> nodes: grid_matmul_0, grid_matmul_1" in out
    assert "trtexec --noTF32" in out and "use_tf32=0" in out and "elementwise multiply-adds" in out
    import torch

    if not torch.cuda.is_available():
        assert "depth drift not measured: no CUDA execution provider here" in out
    record = load_record(sorted((work / "reports-tf32").iterdir())[-1])
    assert record.artifacts[0]["tf32_exposure"]["nodes"] == ["grid_matmul_0", "grid_matmul_1"]
    assert check(work, "--onnx", str(graph)) == 0
    assert "depth drift not measured: --backends has no ONNX Runtime CUDA leg" in capsys.readouterr().out
