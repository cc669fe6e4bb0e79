"""Bad inputs end to end (issue 6, part 3), through the entry points a user touches.

Every refusal must be the harness's own error type (``HarnessError`` and the matching builtin),
in the contract's shape ``<subject> | <what is wrong>: <observed>. Expected: <allowed>. Fix: <step>.``,
and must happen before the backend runs. Entry points: ``Runner.infer`` on ``TorchRunner`` and
``OrtRunner`` with a real exported small graph and on ``TrtRunner`` over the fake TensorRT,
``load_checkpoint``, ``load_views`` / ``make_feed`` and ``python -m harness run`` (``cli.main``).
The unit-level checks behind them live in tests/model/test_inputs.py, tests/model/test_checkpoint.py
and tests/data/.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.backends.onnxruntime_runner import OrtRunner
from harness.backends.tensorrt_runner import TrtRunner
from harness.backends.torch_runner import TorchRunner
from harness.chain import BUNDLED_WEIGHTS, Chain, ChainConfig
from harness.cli import main
from harness.data.dtu import read_cam_file, write_cam_file
from harness.data.pfm import read_pfm
from harness.data.scenes import write_scene
from harness.data.synthetic import SceneSpec, render_scene
from harness.data.views import fit_to_size, load_views, make_feed
from harness.errors import (
    CheckpointError,
    DataFormatError,
    HarnessError,
    InvalidArgument,
    InvalidInput,
    MissingFile,
    ShapeError,
    UnsafeCheckpoint,
)
from harness.model.checkpoint import load_checkpoint
from harness.model.inputs import check_values

Feed = dict[str, torch.Tensor]
NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------- helpers


def assert_contract(error: BaseException, subject: str, *fragments: str) -> str:
    """The message follows the DESIGN contract, starts with ``subject`` and holds ``fragments``."""
    assert isinstance(error, HarnessError), f"{type(error).__name__} is no HarnessError: {error}"
    message = str(error)
    assert message.startswith(f"{subject} | "), message
    assert " Expected: " in message and " Fix: " in message and message.endswith("."), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


fake_trt = sys.modules["fake_tensorrt"]  # registered by tests/conftest.py


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    # the small graph, in a temporary cache shared with the other modules that export it
    built = Chain(ChainConfig(cache_dir=tmp_path_factory.getbasetemp() / "shared-onnx-cache", device="cpu"))
    yield built
    built.close()


@pytest.fixture(scope="module")
def good_feed(chain) -> Feed:
    """The small case's feed for the precomputed workaround (with ``inverse_proj_matrices``)."""
    return chain.workaround_feed("small", "precomputed")


@pytest.fixture(scope="module")
def torch_runner(chain):
    with TorchRunner(chain.model, "cpu", "fp32", with_inverse=True) as runner:
        yield runner


@pytest.fixture(scope="module")
def ort_runner(chain):
    artifact = chain.onnx("small", "precomputed", "torchscript")
    with OrtRunner(artifact.path, "cpu", label="raw") as runner:
        yield runner


@pytest.fixture(params=["torch", "ort"])
def runner(request, monkeypatch):
    """Each public runner, with a backend call that fails the test if a bad feed reaches it."""
    chosen = request.getfixturevalue(f"{request.param}_runner")

    def reached(feed: Feed) -> Feed:
        raise AssertionError(f"a bad feed reached {chosen.name}'s backend")

    monkeypatch.setattr(chosen, "_infer", reached)
    return chosen


def _set(feed: Feed, name: str, index: tuple, value: float) -> Feed:
    tensor = feed[name].clone()
    tensor[index] = value
    return {**feed, name: tensor}


def _views(feed: Feed, count: int, names: tuple[str, ...] = ("imgs", "proj_matrices", "inverse_proj_matrices")) -> Feed:
    return {k: (v[:, :count] if k in names else v) for k, v in feed.items()}


def _repeat_last_plane(feed: Feed) -> Feed:
    depth = feed["depth_values"].clone()
    depth[0, 5] = depth[0, 4]
    return {**feed, "depth_values": depth}


def _other_inverse(feed: Feed) -> Feed:
    inverse = feed["inverse_proj_matrices"].clone()
    inverse[:, 0] = inverse[:, 1]
    return {**feed, "inverse_proj_matrices": inverse}


def _singular_reference(feed: Feed) -> Feed:
    proj = feed["proj_matrices"].clone()
    proj[0, 0, 1] = proj[0, 0, 0]  # two equal rows
    return {**feed, "proj_matrices": proj}


# (id, how the good feed is spoilt, error type, subject, fragments of the message)
BAD_FEEDS: list[tuple[str, Callable[[Feed], Feed], type[HarnessError], str, tuple[str, ...]]] = [
    ("nan-in-reference-image", lambda f: _set(f, "imgs", (0, 0, 1, 5, 7), NAN), InvalidInput, "imgs",
     ("holds NaN or Inf", "1 of 184320 values")),
    ("inf-in-source-image", lambda f: _set(f, "imgs", (0, 2, 0, 0, 0), INF), InvalidInput, "imgs",
     ("holds NaN or Inf",)),
    ("nan-in-projection", lambda f: _set(f, "proj_matrices", (0, 1, 0, 3), NAN), InvalidInput, "proj_matrices",
     ("holds NaN or Inf",)),
    ("inf-in-projection", lambda f: _set(f, "proj_matrices", (0, 0, 2, 2), -INF), InvalidInput, "proj_matrices",
     ("holds NaN or Inf",)),
    ("nan-in-inverse-projection", lambda f: _set(f, "inverse_proj_matrices", (0, 0, 0, 0), NAN), InvalidInput,
     "inverse_proj_matrices", ("holds NaN or Inf",)),
    ("nan-in-a-source-inverse", lambda f: _set(f, "inverse_proj_matrices", (0, 2, 3, 3), NAN), InvalidInput,
     "inverse_proj_matrices", ("holds NaN or Inf",)),
    ("inf-in-depth-values", lambda f: _set(f, "depth_values", (0, 47), INF), InvalidInput, "depth_values",
     ("holds NaN or Inf",)),
    ("nan-in-depth-values", lambda f: _set(f, "depth_values", (0, 0), NAN), InvalidInput, "depth_values",
     ("holds NaN or Inf",)),
    ("non-monotonic-depth-values", _repeat_last_plane, InvalidInput, "depth_values",
     ("not strictly monotonic", "harness.data.depth_hypotheses")),
    ("depth-values-behind-the-camera", lambda f: {**f, "depth_values": f["depth_values"] - 1000.0}, InvalidInput,
     "depth_values", ("in front of the camera",)),
    ("singular-reference-projection", _singular_reference, InvalidInput, "proj_matrices",
     ("reference projection is singular", "camera file")),
    ("inverse-of-another-view", _other_inverse, InvalidInput, "inverse_proj_matrices",
     ("is not the inverse of proj_matrices",)),
    ("imgs-rank-4", lambda f: {**f, "imgs": f["imgs"][0]}, ShapeError, "imgs", ("wrong shape", "(3, 3, 128, 160)")),
    ("imgs-one-channel", lambda f: {**f, "imgs": f["imgs"][:, :, :1]}, ShapeError, "imgs",
     ("wrong shape", "[B, N, 3, H, W]")),
    ("depth-values-rank-1", lambda f: {**f, "depth_values": f["depth_values"][0]}, ShapeError, "depth_values",
     ("wrong shape", "(48,)", "[B, D] with B=1")),
    ("projection-rank-3", lambda f: {**f, "proj_matrices": f["proj_matrices"].flatten(2)}, ShapeError,
     "proj_matrices", ("shape disagrees with imgs", "(1, 3, 16)")),
    ("height-over-4-not-divisible-by-8", lambda f: {**f, "imgs": f["imgs"][..., :120, :]}, ShapeError, "imgs",
     ("H=120 (so H/4=30)", "Fix: crop or resize the images to 128x160")),
    ("width-over-4-not-divisible-by-8", lambda f: {**f, "imgs": f["imgs"][..., :152]}, ShapeError, "imgs",
     ("W=152 (so W/4=38)", "H and W multiples of 32")),
    ("depth-count-not-a-multiple-of-8", lambda f: {**f, "depth_values": f["depth_values"][:, :44]}, ShapeError,
     "depth_values", ("D=44", "use D=48")),
    ("one-view", lambda f: _views(f, 1), ShapeError, "imgs", ("too few views", "N=1")),
    ("imgs-with-fewer-views-than-the-matrices", lambda f: _views(f, 2, ("imgs",)), ShapeError, "proj_matrices",
     ("shape disagrees with imgs", "(1, 3, 4, 4)", "[1, 2, 4, 4]")),
    ("inverse-with-fewer-views-than-imgs", lambda f: _views(f, 2, ("inverse_proj_matrices",)), ShapeError,
     "inverse_proj_matrices", ("shape disagrees with imgs", "(1, 2, 4, 4)")),
]


# ---------------------------------------------------------------- Runner.infer (torch and ONNX Runtime)


@pytest.mark.parametrize("spoil, error_type, subject, fragments", [c[1:] for c in BAD_FEEDS],
                         ids=[c[0] for c in BAD_FEEDS])
def test_runner_infer_refuses_a_bad_feed_before_the_backend_runs(runner, good_feed, spoil, error_type, subject,
                                                                 fragments):
    with pytest.raises(error_type) as info:
        runner.infer(spoil(good_feed))
    assert isinstance(info.value, ValueError)
    assert_contract(info.value, subject, *fragments)


@pytest.mark.parametrize("name, dtype", [("imgs", torch.float64), ("depth_values", torch.float16),
                                         ("proj_matrices", torch.int64)])
def test_runner_infer_refuses_a_wrong_dtype_naming_the_runner_and_input(runner, good_feed, name, dtype):
    with pytest.raises(InvalidInput) as info:
        runner.infer({**good_feed, name: good_feed[name].to(dtype)})
    assert_contract(info.value, f"{runner.name}: {name}", "wrong dtype", str(dtype), "cast with .float()")


def test_runner_infer_refuses_a_feed_without_the_inverse_naming_it(runner, good_feed):
    feed = {k: v for k, v in good_feed.items() if k != "inverse_proj_matrices"}
    with pytest.raises(InvalidInput) as info:
        runner.infer(feed)
    assert_contract(info.value, runner.name, "feed names do not match", "missing ['inverse_proj_matrices']")


def test_runner_infer_refuses_numpy_arrays(runner, good_feed):
    with pytest.raises(InvalidInput) as info:
        runner.infer({**good_feed, "imgs": good_feed["imgs"].numpy()})
    assert_contract(info.value, f"{runner.name}: imgs", "is not a torch.Tensor", "ndarray", "torch.from_numpy")


@pytest.mark.parametrize("spoil, name, observed", [
    (lambda f: _views(f, 2), "imgs", "(1, 2, 3, 128, 160)"),  # consistent, but the graph has 3 views
    (lambda f: {**f, "imgs": f["imgs"][..., :96, :]}, "imgs", "(1, 3, 3, 96, 160)"),  # valid for MVSNet
    (lambda f: {**f, "depth_values": torch.cat([f["depth_values"], f["depth_values"][:, -8:] + 200.0], 1)},
     "depth_values", "(1, 56)"),
    (lambda f: {k: torch.cat([v, v]) for k, v in f.items()}, "imgs", "(2, 3, 3, 128, 160)"),
], ids=["two-consistent-views", "96x160-image", "56-depth-planes", "batch-of-two"])
def test_ort_runner_refuses_a_valid_mvsnet_feed_of_another_static_shape(ort_runner, good_feed, monkeypatch, spoil,
                                                                        name, observed):
    monkeypatch.setattr(ort_runner, "_infer", lambda feed: pytest.fail("reached ONNX Runtime"))
    with pytest.raises(InvalidInput) as info:
        ort_runner.infer(spoil(good_feed))
    assert_contract(info.value, f"ort-cpu-raw: {name}", "shape differs from the ONNX graph's static shape", observed,
                    "export a graph for this shape")


def test_torch_runner_takes_the_same_feeds_that_ort_refuses_for_their_static_shape(torch_runner, good_feed):
    # MVSNet itself has no static shape: two views are a valid (if weaker) input
    out = torch_runner.infer(_views(good_feed, 2))
    assert out["depth"].shape == (1, 32, 40) and bool(torch.isfinite(out["depth"]).all())


# ---------------------------------------------------------------- TrtRunner.infer: shapes outside the profile


def _engine_io(imgs: list[int], depth: list[int], views: int = 3, imgs_profile=None, depth_profile=None) -> list[dict]:
    def entry(name: str, shape: list[int], profile=None) -> dict:
        item = {"name": name, "mode": "INPUT", "shape": shape, "dtype": "FLOAT"}
        return {**item, "profile": profile} if profile else item

    out_rule = [1, ["imgs", 3, 4], ["imgs", 4, 4]]
    return [
        entry("imgs", imgs, imgs_profile), entry("proj_matrices", [1, views, 4, 4]),
        entry("inverse_proj_matrices", [1, views, 4, 4]), entry("depth_values", depth, depth_profile),
        {"name": "depth", "mode": "OUTPUT", "shape": [1, -1, -1], "dtype": "FLOAT", "rule": out_rule},
        {"name": "photometric_confidence", "mode": "OUTPUT", "shape": [1, -1, -1], "dtype": "FLOAT", "rule": out_rule},
    ]


STATIC_ENGINE = _engine_io([1, 3, 3, 128, 160], [1, 48])
DYNAMIC_ENGINE = _engine_io([1, 3, 3, -1, -1], [1, -1],
                            imgs_profile=[[1, 3, 3, 64, 96], [1, 3, 3, 128, 160], [1, 3, 3, 256, 320]],
                            depth_profile=[[1, 8], [1, 48], [1, 192]])


@pytest.fixture
def make_trt_runner(monkeypatch, tmp_path):
    fake = fake_trt.FakeTensorRT("tensorrt")
    fake_trt.install(monkeypatch, fake)
    fake_trt.fake_cuda(monkeypatch)

    def make(io: list[dict]) -> tuple[TrtRunner, object]:
        path = tmp_path / "model.engine"
        path.write_bytes(fake.make_plan(io))
        runner = TrtRunner(path, label="fp32").prepare()
        runner.device = torch.device("cpu")  # no CUDA memory here: the refusal must come before any copy
        return runner, fake

    return make


def _larger_images(feed: Feed, height: int, width: int) -> Feed:
    return {**feed, "imgs": torch.rand(1, feed["imgs"].shape[1], 3, height, width)}


def _more_planes(feed: Feed, count: int) -> Feed:
    return {**feed, "depth_values": (425.0 + 2.5 * torch.arange(count, dtype=torch.float32)).unsqueeze(0)}


@pytest.mark.parametrize("engine, spoil, name, observed, bounds", [
    (STATIC_ENGINE, lambda f: _larger_images(f, 256, 320), "imgs", "(1, 3, 3, 256, 320)",
     "between (1, 3, 3, 128, 160) and (1, 3, 3, 128, 160)"),
    (STATIC_ENGINE, lambda f: _views(f, 2), "imgs", "(1, 2, 3, 128, 160)", "(1, 3, 3, 128, 160)"),
    (STATIC_ENGINE, lambda f: _more_planes(f, 64), "depth_values", "(1, 64)", "between (1, 48) and (1, 48)"),
    (DYNAMIC_ENGINE, lambda f: _larger_images(f, 512, 640), "imgs", "(1, 3, 3, 512, 640)",
     "between (1, 3, 3, 64, 96) and (1, 3, 3, 256, 320)"),
    (DYNAMIC_ENGINE, lambda f: _larger_images(f, 32, 160), "imgs", "(1, 3, 3, 32, 160)",
     "between (1, 3, 3, 64, 96) and (1, 3, 3, 256, 320)"),
    (DYNAMIC_ENGINE, lambda f: _more_planes(f, 256), "depth_values", "(1, 256)", "between (1, 8) and (1, 192)"),
], ids=["static-larger-image", "static-fewer-views", "static-more-planes", "dynamic-above-max", "dynamic-below-min",
        "dynamic-too-many-planes"])
def test_trt_runner_infer_refuses_a_shape_outside_the_engines_profile_before_tensorrt_sees_it(
        make_trt_runner, good_feed, engine, spoil, name, observed, bounds):
    runner, fake = make_trt_runner(engine)
    feed = spoil(good_feed)
    with pytest.raises(ShapeError) as info:
        runner.infer(feed)
    assert_contract(info.value, f"trt-fp32: {name}", "shape outside the engine's profile", observed, bounds,
                    "rebuild the engine with a profile that covers this case")
    assert (name, tuple(feed[name].shape)) not in fake.called("set_input_shape")
    assert fake.called("execute_async_v3") == []


def test_trt_runner_infer_checks_mvsnet_rules_before_the_profile(make_trt_runner, good_feed):
    runner, fake = make_trt_runner(DYNAMIC_ENGINE)
    with pytest.raises(ShapeError) as info:
        runner.infer({**good_feed, "imgs": good_feed["imgs"][..., :120, :]})  # inside the profile, not MVSNet-valid
    assert_contract(info.value, "imgs", "image size does not fit MVSNet's 3D U-Net")
    assert fake.called("set_input_shape") == []


# ---------------------------------------------------------------- checkpoints


class _WritesMarker:
    """Unpickling this would write a marker file (through exec, no shell needed)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _bundled_state() -> dict[str, torch.Tensor]:
    return dict(torch.load(BUNDLED_WEIGHTS, weights_only=True)["model"])


def _write_checkpoint(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.ckpt"
    if kind == "another-network":
        torch.save({"epoch": 3, "model": {"module.fc.weight": torch.zeros(10, 4), "module.fc.bias": torch.zeros(10)}}, path)
    elif kind == "missing-key":
        state = _bundled_state()
        del state["module.cost_regularization.prob.weight"]
        torch.save({"model": state}, path)
    elif kind == "wrong-shape":
        state = _bundled_state()
        state["module.cost_regularization.prob.bias"] = torch.zeros(2)
        torch.save({"model": state}, path)
    elif kind == "code-payload":
        torch.save({"epoch": 1, "model": {"module.feature.conv0.conv.weight": _WritesMarker(folder / "PAYLOAD_RAN")}},
                   path)
    elif kind == "truncated":
        path.write_bytes(BUNDLED_WEIGHTS.read_bytes()[:4096])
    else:
        raise AssertionError(kind)
    return path


CHECKPOINTS = [
    ("another-network", CheckpointError, ("keys do not match MVSNet", "missing cost_regularization.", "unexpected fc.bias, fc.weight")),
    ("missing-key", CheckpointError, ("keys do not match MVSNet", "missing cost_regularization.prob.weight")),
    ("wrong-shape", CheckpointError, ("wrong shape cost_regularization.prob.bias (2,) vs (1,)",)),
    ("code-payload", UnsafeCheckpoint, ("refused: loading it would unpickle arbitrary objects", "Fix: re-save it")),
    ("truncated", CheckpointError, ("not a readable torch checkpoint",)),
]


@pytest.mark.parametrize("kind, error_type, fragments", CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_load_checkpoint_refuses_a_bad_checkpoint_naming_it(tmp_path, kind, error_type, fragments):
    path = _write_checkpoint(kind, tmp_path)
    with pytest.raises(error_type) as info:
        load_checkpoint(path)
    assert isinstance(info.value, ValueError)
    assert_contract(info.value, str(path), *fragments)
    assert not (tmp_path / "PAYLOAD_RAN").exists(), "the checkpoint's code ran"


# ---------------------------------------------------------------- scenes: load_views and make_feed


@pytest.fixture(scope="module")
def scene_master(tmp_path_factory) -> Path:
    """A small synthetic DTU-format scene (3 views, 128x160) with ground truth."""
    return write_scene(render_scene(SceneSpec(seed=3, num_views=3, height=128, width=160)),
                       tmp_path_factory.mktemp("bad-inputs") / "scene")


@pytest.fixture
def scene(scene_master, tmp_path) -> Path:
    return Path(shutil.copytree(scene_master, tmp_path / "scene"))


def _cam_path(scene: Path, view: int) -> Path:
    return scene / "cams" / f"{view:08d}_cam.txt"


def _edit_cam_line(scene: Path, view: int, line: int, text: str) -> Path:
    path = _cam_path(scene, view)
    lines = path.read_text().splitlines()
    lines[line] = text
    path.write_text("\n".join(lines) + "\n")
    return path


def _zero_intrinsic_row(scene: Path, view: int) -> Path:
    """A camera file whose intrinsics lost their first row: a singular projection."""
    path = _cam_path(scene, view)
    camera = read_cam_file(path)
    intrinsics = camera.intrinsics.copy()
    intrinsics[0] = 0.0
    write_cam_file(path, replace(camera, intrinsics=intrinsics))
    return path


def test_load_views_refuses_nan_in_a_camera_file_naming_file_and_line(scene):
    path = _edit_cam_line(scene, 1, 2, "0 1 nan 0")
    with pytest.raises(DataFormatError) as info:
        load_views(scene, num_views=3)
    assert_contract(info.value, f"{path}:3", "non-finite extrinsic row 1", "0 1 nan 0")


def test_load_views_refuses_inf_in_the_intrinsics(scene):
    path = _edit_cam_line(scene, 0, 7, "inf 0 80")
    with pytest.raises(DataFormatError) as info:
        load_views(scene, num_views=3)
    assert_contract(info.value, f"{path}:8", "non-finite intrinsic row 0")


def test_load_views_refuses_a_zero_depth_interval(scene):
    path = _edit_cam_line(scene, 0, 11, "425 0")
    with pytest.raises(DataFormatError) as info:
        load_views(scene, num_views=3)
    assert_contract(info.value, f"{path}:12", "depth_interval is zero")


def test_load_views_refuses_more_views_than_pair_txt_lists(scene):
    with pytest.raises(InvalidArgument) as info:
        load_views(scene, num_views=5)
    assert_contract(info.value, f"{scene}/pair.txt", "too few source views for the reference", "4 for 5 views",
                    "--cases / --harness-cases")


def test_load_views_refuses_a_truncated_ground_truth_pfm(scene):
    path = scene / "depths" / "00000000.pfm"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataFormatError) as info:
        load_views(scene, num_views=3)
    assert_contract(info.value, str(path), "truncated pixel data")


def test_load_views_refuses_a_missing_scene_folder(tmp_path):
    with pytest.raises(MissingFile) as info:
        load_views(tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError)
    assert_contract(info.value, str(tmp_path / "nowhere"), "scene folder not found", "--scene")


def test_fit_to_size_refuses_a_size_whose_quarter_is_not_divisible_by_8(scene):
    views = load_views(scene, num_views=3)
    with pytest.raises(ShapeError) as info:
        fit_to_size(views, 120, 160)
    assert_contract(info.value, "imgs", "H=120 (so H/4=30)", "128x160")


@pytest.mark.parametrize("view_index", [0, 1], ids=["reference", "source"])
def test_make_feed_of_a_scene_with_a_singular_camera_gives_a_harness_error(scene, view_index):
    """A camera file whose intrinsics are singular: the harness must name the camera, not crash in
    torch.linalg.inv (the precomputed inverse is built in data preparation)."""
    views = load_views(scene, num_views=3)
    _zero_intrinsic_row(scene, views.view_ids[view_index])
    try:
        views = load_views(scene, num_views=3)  # the camera reader may refuse it already
        feed = make_feed(views, 48, 1.0, with_inverse=True)
        # accepted: then the feed must pass the checks every runner applies
        check_values(feed["imgs"], feed["proj_matrices"], feed["depth_values"], feed["inverse_proj_matrices"])
    except HarnessError as exc:
        assert_contract(exc, str(exc).split(" | ")[0], "singular")
    except Exception as exc:  # noqa: BLE001 - the point: nothing but the harness's error may escape
        pytest.fail(f"make_feed let {type(exc).__module__}.{type(exc).__name__} escape: {str(exc)[:200]}")


# ---------------------------------------------------------------- fuzzed scene files through load_views

FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_TOKENS = st.sampled_from(["nan", "inf", "-inf", "0", "-1", "1e999", "x", "", "3 2", "Pf", "PF", "-1.0", "\x00", "٣"])


def _mutate_text(text: str, data: st.DataObject) -> str:
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        index = data.draw(st.integers(0, max(len(lines) - 1, 0)), label="line")
        kind = data.draw(st.sampled_from(["delete", "replace", "token", "insert"]), label="kind")
        if not lines or kind == "insert":
            lines.insert(index, data.draw(st.text(max_size=20) | _TOKENS, label="new"))
        elif kind == "delete":
            del lines[index]
        elif kind == "replace":
            lines[index] = data.draw(st.text(max_size=30) | _TOKENS, label="text")
        else:
            tokens = lines[index].split() or [""]
            tokens[data.draw(st.integers(0, len(tokens) - 1), label="token")] = data.draw(_TOKENS, label="value")
            lines[index] = " ".join(tokens)
    return "\n".join(lines) + "\n"


def _load_views_or_harness_error(scene: Path) -> None:
    started = time.perf_counter()
    try:
        views = load_views(scene, num_views=3)
    except HarnessError as exc:
        assert " | " in str(exc)
    else:
        assert views.images.shape[0] == 3
    assert time.perf_counter() - started < 10.0, "load_views took more than 10 s on a malformed file"


@FUZZ
@given(data=st.data(), which=st.sampled_from(["reference-cam", "source-cam", "pair"]))
def test_fuzz_load_views_on_malformed_cam_and_pair_files_gives_views_or_a_harness_error(scene_master, tmp_path_factory,
                                                                                         data, which):
    scene = Path(shutil.copytree(scene_master, tmp_path_factory.mktemp("fuzz") / "scene"))
    path = {"reference-cam": _cam_path(scene, 0), "source-cam": _cam_path(scene, 1), "pair": scene / "pair.txt"}[which]
    path.write_text(_mutate_text(path.read_text(), data), encoding="utf-8")
    _load_views_or_harness_error(scene)


@FUZZ
@given(data=st.data())
def test_fuzz_load_views_on_a_malformed_ground_truth_pfm_gives_views_or_a_harness_error(scene_master, tmp_path_factory,
                                                                                         data):
    scene = Path(shutil.copytree(scene_master, tmp_path_factory.mktemp("fuzz") / "scene"))
    path = scene / "depths" / "00000000.pfm"
    content = bytearray(path.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        content = content[: data.draw(st.integers(0, len(content)), label="cut")]
    for index, value in data.draw(st.lists(st.tuples(st.integers(0, 24), st.integers(0, 255)), max_size=4),
                                  label="header flips"):
        if index < len(content):
            content[index] = value
    path.write_bytes(bytes(content))
    _load_views_or_harness_error(scene)


# ---------------------------------------------------------------- python -m harness run


@pytest.fixture
def run_argv(tmp_path, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "shared-onnx-cache"  # temporary, shared with other modules
    return ["run", "--cases", "small", "--backends", "ort-cpu", "--workarounds", "precomputed", "--variants", "raw",
            "--exporters", "torchscript", "--device", "cpu", "--cache-dir", str(cache),
            "--report-dir", str(tmp_path / "reports")]


def _run_cli_expecting_an_error(argv: list[str], capsys) -> str:
    try:
        code = main(argv)
    except Exception as exc:  # noqa: BLE001 - the point: the CLI must turn every bad input into an error line
        pytest.fail(f"python -m harness run crashed with {type(exc).__module__}.{type(exc).__name__}: {str(exc)[:200]}")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("kind, error_type, fragments", CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_cli_run_with_a_bad_weights_file_exits_2_with_one_error_line(run_argv, tmp_path, capsys, kind, error_type,
                                                                     fragments):
    path = _write_checkpoint(kind, tmp_path)
    line = _run_cli_expecting_an_error(run_argv + ["--weights", str(path)], capsys)
    assert line.startswith(f"error: {path} | ")
    for fragment in fragments:
        assert fragment in line
    assert not (tmp_path / "PAYLOAD_RAN").exists(), "the checkpoint's code ran"
    assert not (tmp_path / "reports").exists() or not list((tmp_path / "reports").iterdir())


def test_cli_run_with_a_missing_scene_exits_2_naming_it(run_argv, tmp_path, capsys):
    line = _run_cli_expecting_an_error(run_argv + ["--scene", str(tmp_path / "no-scene")], capsys)
    assert line.startswith(f"error: {tmp_path / 'no-scene'} | scene folder not found")
    assert "Fix: pass --scene PATH" in line


def test_cli_run_with_a_malformed_camera_file_exits_2_naming_file_and_line(run_argv, scene, capsys):
    path = _edit_cam_line(scene, 0, 3, "0 0 1 nan")
    line = _run_cli_expecting_an_error(run_argv + ["--scene", str(scene)], capsys)
    assert line.startswith(f"error: {path}:4 | non-finite extrinsic row 2")


def test_cli_run_with_a_malformed_pair_file_exits_2_naming_it(run_argv, scene, capsys):
    (scene / "pair.txt").write_text("3\n0\n2 1 x\n")
    line = _run_cli_expecting_an_error(run_argv + ["--scene", str(scene)], capsys)
    assert line.startswith(f"error: {scene / 'pair.txt'}")


def test_cli_run_with_a_singular_reference_camera_exits_2_with_one_error_line(run_argv, scene, capsys):
    views = load_views(scene, num_views=3)
    path = _zero_intrinsic_row(scene, views.view_ids[0])
    line = _run_cli_expecting_an_error(run_argv + ["--scene", str(scene)], capsys)
    assert "singular" in line, line
    assert str(path) in line or "reference" in line, line


def test_cli_run_with_a_singular_source_camera_runs_or_names_it_but_never_crashes(run_argv, scene, capsys):
    """check_values accepts a singular *source* projection; the CLI may run the scene or refuse it
    naming the camera, but must not die with a traceback."""
    views = load_views(scene, num_views=3)
    _zero_intrinsic_row(scene, views.view_ids[1])
    try:
        code = main(run_argv + ["--scene", str(scene)])
    except Exception as exc:  # noqa: BLE001 - the point: the CLI must turn every bad input into an error line
        pytest.fail(f"python -m harness run crashed with {type(exc).__module__}.{type(exc).__name__}: {str(exc)[:200]}")
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code != 0:
        assert code == 2 and [line for line in err.splitlines() if line.startswith("error: ") and "singular" in line]


# ---------------------------------------------------------------- the fixes the messages name exist


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute)
        return target
    raise ImportError(dotted)


def _fix_of(raise_it: Callable[[], object]) -> str:
    try:
        raise_it()
    except HarnessError as exc:
        return str(exc.fix)
    raise AssertionError("no error raised")


@pytest.mark.parametrize("scenario", ["non-monotonic-depth-values", "inverse-of-another-view", "malformed-pfm"])
def test_every_harness_function_a_fix_names_exists(torch_runner, good_feed, tmp_path, scenario):
    spoilt = {c[0]: c[1] for c in BAD_FEEDS}
    if scenario == "malformed-pfm":
        (tmp_path / "bad.pfm").write_bytes(b"Pf\n3 2\n0\n")
        fix = _fix_of(lambda: read_pfm(tmp_path / "bad.pfm"))
    else:
        fix = _fix_of(lambda: torch_runner.check_feed(spoilt[scenario](good_feed)))
    names = re.findall(r"\bharness(?:\.\w+)+", fix)
    assert names, fix
    missing = []
    for name in names:
        try:
            _resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert not missing, f"the Fix names {missing}, which do not exist: {fix!r}"


def _run_options() -> set[str]:
    """Flags a Fix may name: those of `python -m harness run` and the harness's pytest options
    (messages are shared by both fronts and may name the flag of each)."""
    from harness.cli import build_parser
    from harness.plugin import pytest_addoption

    subparsers = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    pytest_flags: set[str] = set()

    class Group:  # records what the plugin registers (from harness.options)
        def addoption(self, *opts: str, **attrs: object) -> None:
            pytest_flags.update(o for o in opts if o.startswith("--harness-"))

    class Parser:
        def getgroup(self, *args: object, **kwargs: object) -> Group:
            return Group()

    pytest_addoption(Parser())  # type: ignore[arg-type]
    assert pytest_flags, "no --harness-* options registered by harness/plugin.py"
    return set(subparsers.choices["run"]._option_string_actions) | pytest_flags


@pytest.mark.parametrize("extra, problem", [
    (lambda scene: ["--scene", str(scene.parent / "no-scene")], "scene folder not found"),
    (lambda scene: ["--scene", str(scene), "--cases", "dtu"], "too few source views"),  # dtu: 5 views, scene: 3
], ids=["missing-scene", "scene-with-fewer-views-than-the-case"])
def test_every_flag_a_cli_error_names_exists_on_python_m_harness_run(run_argv, scene, capsys, extra, problem):
    line = _run_cli_expecting_an_error(run_argv + extra(scene), capsys)
    assert problem in line
    fix = line.split(" Fix: ", 1)[1]
    flags = re.findall(r"(?<![\w-])--[a-z][a-z-]*", fix)
    assert flags, line
    unknown = sorted(set(flags) - _run_options())
    assert not unknown, f"the Fix names {unknown}, which `python -m harness run` does not have: {line}"
