"""Unit tests of harness/convert/engine.py on the CPU: profiles, build settings, network flags,
parser errors, and ``EngineFromOnnx`` building real exported graphs (small case, simplified)
through the fake ``tensorrt`` module (tests/fake_tensorrt.py) into a temporary cache.

The graphs are exported once per module; every engine cache lives under the test's tmp_path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import onnx
import pytest
import torch

from harness.backends import trt_api
from harness.chain import Chain, ChainConfig, Leg
from harness.convert import engine as engine_module
from harness.convert.cache import ArtifactCache, canonical_key
from harness.convert.engine import (
    BuildSettings,
    EngineFromOnnx,
    Profile,
    network_flags,
    parser_errors,
)
from harness.convert.workarounds import get_workaround
from harness.data.cases import Case, get_case
from harness.errors import (
    BackendUnavailable,
    EngineBuildError,
    HarnessError,
    InvalidArgument,
    UnsupportedOperator,
)

FAKE_PATH = Path(__file__).resolve().parents[1] / "fake_tensorrt.py"
fake_trt = sys.modules["fake_tensorrt"]  # registered by tests/conftest.py
FakeTensorRT = fake_trt.FakeTensorRT

SMALL = get_case("small")
NAMES = get_workaround("precomputed").input_names
STATIC = Profile.static({name: SMALL.input_shapes(True)[name] for name in NAMES})
H100_TIMING = "tensorrt-10.13.0.35-NVIDIA_H100_80GB_HBM3.cache"


# -- module fixtures: real exported graphs ------------------------------------------------------

@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    chain = Chain(ChainConfig(cache_dir=tmp_path_factory.mktemp("engine-onnx-cache"), device="cpu"))
    yield chain
    chain.close()


@pytest.fixture(scope="module")
def fp32_onnx(chain):
    return chain.onnx("small", "precomputed", "torchscript", "simplified")


@pytest.fixture(scope="module")
def fp16_onnx(chain):
    return chain.onnx("small", "precomputed", "torchscript", "simplified", precision="fp16")


@pytest.fixture(scope="module")
def dynamic_onnx(chain):
    return chain.onnx("small", "precomputed", "torchscript", "simplified", dynamic=True)


# -- per-test fixtures -----------------------------------------------------------------------

@pytest.fixture
def trt(monkeypatch):
    """The fake TensorRT 10.13 bound, on a faked H100 (compute capability 9.0)."""
    fake = FakeTensorRT("tensorrt")
    fake_trt.install(monkeypatch, fake)
    fake_trt.fake_cuda(monkeypatch)
    return fake


@pytest.fixture
def cache(tmp_path):
    return ArtifactCache(tmp_path / "cache")


def use(monkeypatch, fake, name: str = fake_trt.H100, cc: str = "9.0"):
    """Bind another fake (and GPU) for the rest of the test."""
    fake_trt.install(monkeypatch, fake)
    fake_trt.fake_cuda(monkeypatch, name=name, cc=cc)
    return fake


def build(onnx_artifact, cache, precision: str = "fp32", profile: Profile = STATIC, **settings):
    return EngineFromOnnx(onnx_artifact, BuildSettings(precision=precision, **settings), profile, cache)()


def with_findings(artifact, findings):
    return dataclasses.replace(artifact, audit={**artifact.audit, "trt_findings": findings})


# -- Profile ---------------------------------------------------------------------------------

def test_static_profile_has_equal_min_opt_max():
    profile = Profile.static({"imgs": (1, 3, 3, 128, 160), "depth_values": (1, 48)})
    assert profile.shapes == (("imgs", (1, 3, 3, 128, 160), (1, 3, 3, 128, 160), (1, 3, 3, 128, 160)),
                              ("depth_values", (1, 48), (1, 48), (1, 48)))
    assert profile.is_static
    assert profile.as_dict() == {"imgs": {"min": [1, 3, 3, 128, 160], "opt": [1, 3, 3, 128, 160],
                                          "max": [1, 3, 3, 128, 160]},
                                 "depth_values": {"min": [1, 48], "opt": [1, 48], "max": [1, 48]}}


def test_profile_around_a_case_has_min_opt_max_rows():
    low, high = Case("low", 3, 64, 96, 16), Case("high", 3, 512, 640, 192)
    profile = Profile.around(SMALL, NAMES, low, high)
    assert [row[0] for row in profile.shapes] == list(NAMES)
    rows = {name: (lo, opt, hi) for name, lo, opt, hi in profile.shapes}
    assert rows["imgs"] == ((1, 3, 3, 64, 96), (1, 3, 3, 128, 160), (1, 3, 3, 512, 640))
    assert rows["depth_values"] == ((1, 16), (1, 48), (1, 192))
    assert rows["proj_matrices"] == ((1, 3, 4, 4),) * 3
    assert rows["inverse_proj_matrices"] == ((1, 3, 4, 4),) * 3
    assert not profile.is_static


def test_profile_around_leaves_out_inputs_not_named():
    profile = Profile.around(SMALL, ("imgs", "proj_matrices", "depth_values"), SMALL, SMALL)
    assert [row[0] for row in profile.shapes] == ["imgs", "proj_matrices", "depth_values"]
    assert profile.is_static


@pytest.mark.parametrize("which", ["low", "high"])
def test_profile_bounds_must_have_the_cases_views(which):
    other = Case("other", 5, 64, 96, 16)
    low, high = (other, SMALL) if which == "low" else (SMALL, other)
    with pytest.raises(InvalidArgument) as info:
        Profile.around(SMALL, NAMES, low, high)
    assert "views differ" in str(info.value)
    assert "5 vs 3" in str(info.value)


@pytest.mark.parametrize("name, shape, inside", [
    ("imgs", (1, 3, 3, 64, 96), True),
    ("imgs", (1, 3, 3, 512, 640), True),
    ("imgs", (1, 3, 3, 200, 300), True),
    ("imgs", (1, 3, 3, 32, 96), False),
    ("imgs", (1, 3, 3, 544, 640), False),
    ("imgs", (1, 3, 3, 128), False),
    ("imgs", (1, 5, 3, 128, 160), False),
    ("depth_values", (1, 192), True),
    ("depth_values", (1, 8), False),
    ("unknown", (1,), False),
])
def test_profile_contains(name, shape, inside):
    profile = Profile.around(SMALL, NAMES, Case("low", 3, 64, 96, 16), Case("high", 3, 512, 640, 192))
    assert profile.contains(name, shape) is inside


# -- BuildSettings ---------------------------------------------------------------------------

def test_build_settings_defaults_and_key_fields():
    settings = BuildSettings()
    assert (settings.precision, settings.workspace_mib, settings.optimization_level, settings.timing_cache,
            settings.flavour) == ("fp32", 4096, 3, True, "auto")
    assert settings.as_dict() == {"precision": "fp32", "workspace_mib": 4096, "optimization_level": 3,
                                  "timing_cache": True}


@pytest.mark.parametrize("kwargs, fragment", [
    ({"precision": "int8"}, "unknown precision: int8. Expected: fp32, tf32, fp16"),
    ({"precision": "bf16"}, "unknown precision"),
    ({"optimization_level": -1}, "out of range: -1. Expected: 0..5"),
    ({"optimization_level": 6}, "out of range: 6"),
    ({"workspace_mib": 8}, "too small: 8 MiB. Expected: >= 16 MiB"),
])
def test_build_settings_refuse_bad_values(kwargs, fragment):
    with pytest.raises(InvalidArgument) as info:
        BuildSettings(**kwargs)
    assert fragment in str(info.value)
    assert "Fix: pass --harness-" in str(info.value)


@pytest.mark.parametrize("kwargs", [{"optimization_level": 0}, {"optimization_level": 5}, {"workspace_mib": 16},
                                    {"precision": "tf32"}, {"precision": "fp16"}])
def test_build_settings_accept_the_bounds(kwargs):
    BuildSettings(**kwargs)


# -- network_flags, parser_errors ------------------------------------------------------------

@pytest.mark.parametrize("flavour, version, strongly_typed, expected", [
    ("tensorrt", "10.13.0.35", "default", 1 << 1),  # STRONGLY_TYPED = 1 in 10.x
    ("tensorrt", "10.0.1.6", 3, 1 << 3),  # whatever the symbol's value is, never a literal bit
    ("tensorrt", "11.4.0.106", "default", 0),  # renumbered to 0 and ignored: always strongly typed
    ("tensorrt", "11.0.0.1", 2, 0),
    ("tensorrt_rtx", "1.7.1.116", "default", 0),
])
def test_network_flags_ask_for_strong_typing_by_name(monkeypatch, flavour, version, strongly_typed, expected):
    fake = FakeTensorRT(flavour, version, strongly_typed=strongly_typed)
    fake_trt.install(monkeypatch, fake)
    assert network_flags(trt_api.bind()) == expected


def test_network_flags_without_strongly_typed_is_a_build_error(monkeypatch):
    fake_trt.install(monkeypatch, FakeTensorRT("tensorrt", "8.6.1.6", strongly_typed=None))
    with pytest.raises(EngineBuildError) as info:
        network_flags(trt_api.bind())
    assert "no strongly typed networks" in str(info.value)
    assert "TensorRT >= 10.0" in str(info.value)
    assert "pip install 'tensorrt>=10'" in str(info.value)


def test_parser_errors_are_formatted_with_node_operator_and_fix(trt):
    parser = types.SimpleNamespace(num_errors=3, get_error=[
        fake_trt.ParserError(fake_trt.ErrorCode.UNSUPPORTED_NODE, "No importer registered for op: Inverse", 7,
                             "/model/Inverse", "Inverse"),
        fake_trt.ParserError(fake_trt.ErrorCode.UNSUPPORTED_NODE_ATTR, "mode 'linear' unknown", 12, "", "GridSample"),
        fake_trt.ParserError(fake_trt.ErrorCode.INTERNAL_ERROR, "assertion failed", 3, "/x", "Add"),
    ].__getitem__)
    errors = parser_errors(parser)
    assert errors[0] == {"code": "UNSUPPORTED_NODE", "desc": "No importer registered for op: Inverse",
                         "node": "/model/Inverse", "operator": "Inverse",
                         "fix": engine_module._PARSER_FIXES["UNSUPPORTED_NODE"]}
    assert errors[1]["node"] == "#12"  # no name: the node index
    assert "opset 17" in errors[1]["fix"]
    assert errors[2]["fix"] == "see the TensorRT log above"


def test_parser_error_code_without_a_name_is_quoted_as_text(trt):
    error = fake_trt.ParserError("ErrorCode.INVALID_NODE", "bad", 1, "n", "Conv")
    (formatted,) = parser_errors(types.SimpleNamespace(num_errors=1, get_error=lambda i: error))
    assert formatted["code"] == "ErrorCode.INVALID_NODE"


# -- EngineFromOnnx: a build and its cache entry -------------------------------------------------

@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16"])
def test_engine_builds_through_the_bound_module(monkeypatch, fp32_onnx, fp16_onnx, cache, precision):
    fake = use(monkeypatch, FakeTensorRT("tensorrt", build_delay=0.05, plan_padding=3 << 19))
    written, atomic_write_bytes = [], engine_module.atomic_write_bytes
    monkeypatch.setattr(engine_module, "atomic_write_bytes",
                        lambda path, data: written.append(path) or atomic_write_bytes(path, data))
    graph = fp16_onnx if precision == "fp16" else fp32_onnx
    engine = build(graph, cache, precision)

    assert engine.cache_status == "miss"
    assert engine.path.name == "model.engine"
    assert engine.path.parent.parent == cache.root / "engine"
    assert engine.path.read_bytes() == fake.plans[-1]  # the serialized plan, written ...
    assert engine.path in written  # ... through the atomic writer
    assert not list(engine.path.parent.glob("*.part"))
    assert fake.build_count == 1

    # strongly typed by symbol, settings as asked, TF32 only for tf32
    assert fake.called("create_network") == [(1 << int(fake.NetworkDefinitionCreationFlag.STRONGLY_TYPED),)]
    (config,) = fake.configs
    assert config.pool_limits == {fake.MemoryPoolType.WORKSPACE: 4096 << 20}
    assert config.builder_optimization_level == 3
    assert config.profiling_verbosity == fake.ProfilingVerbosity.DETAILED
    tf32 = fake.BuilderFlag.TF32
    assert config.get_flag(tf32) is (precision == "tf32")
    assert fake.called("set_flag" if precision == "tf32" else "clear_flag") == [(tf32,)]
    assert fake.called("clear_flag" if precision == "tf32" else "set_flag") == []
    assert fake.called("parse") == [(graph.path.read_bytes(), str(graph.path))]
    assert fake.called("add_optimization_profile") == []  # a static graph needs no profile
    assert isinstance(config.progress_monitor, fake.IProgressMonitor)
    assert fake.monitor_returns == [True, True, True]

    meta = engine.meta
    assert meta["trt"] == "tensorrt 10.13.0.35"
    assert meta["build_seconds_trt"] >= 0.05
    assert engine.build_seconds >= meta["build_seconds_trt"]
    assert engine.engine_bytes == engine.path.stat().st_size == len(fake.plans[-1])
    assert meta["engine_mib"] == round(engine.engine_bytes / 2**20, 2) >= 1.5
    assert meta["inputs"] == list(NAMES)
    assert meta["network_layers"] == graph.node_count
    assert (meta["onnx"], meta["onnx_config"], meta["onnx_variant"]) == (str(graph.path), graph.config.label, "simplified")
    assert engine.settings.precision == precision and engine.profile == STATIC
    assert engine.sha256 == hashlib.sha256(engine.path.read_bytes()).hexdigest()


def test_engine_is_a_cache_hit_the_second_time(trt, fp32_onnx, cache):
    first = build(fp32_onnx, cache)
    second = EngineFromOnnx(fp32_onnx, BuildSettings(), STATIC, ArtifactCache(cache.root))()
    assert (first.cache_status, second.cache_status) == ("miss", "hit")
    assert trt.build_count == 1
    assert second.path == first.path and second.sha256 == first.sha256
    assert second.meta["inspector"] == first.meta["inspector"]
    assert second.build_seconds == first.build_seconds  # recorded at build time, not the lookup's


def test_timing_cache_is_saved_and_reused_per_tensorrt_version_and_gpu(trt, fp32_onnx, cache):
    first = build(fp32_onnx, cache)
    timing = cache.root / "trt-timing" / H100_TIMING
    assert first.meta["timing_cache"] == str(timing)
    assert timing.read_bytes() == b"timing-entry;"
    assert trt.called("create_timing_cache") == [(b"",)]
    (cache_object, ignore_mismatch), = trt.called("set_timing_cache")
    assert ignore_mismatch is False
    build(fp32_onnx, cache, "tf32")  # another engine on the same GPU starts from the saved cache
    assert trt.called("create_timing_cache")[-1] == (b"timing-entry;",)
    assert timing.read_bytes() == b"timing-entry;timing-entry;"


def test_timing_cache_can_be_turned_off(trt, fp32_onnx, cache):
    engine = build(fp32_onnx, cache, timing_cache=False)
    assert trt.called("create_timing_cache") == [] and trt.called("set_timing_cache") == []
    assert "timing_cache" not in engine.meta
    assert not (cache.root / "trt-timing").exists()


def test_inspector_json_is_saved_beside_the_engine(trt, fp32_onnx, cache):
    engine = build(fp32_onnx, cache)
    assert engine.inspector_path == engine.path.parent / "inspector.json"
    assert engine.meta["inspector"] == str(engine.inspector_path)
    layers = json.loads(engine.inspector_path.read_text())["Layers"]
    assert len(layers) == engine.meta["engine_layers"] == fp32_onnx.node_count
    assert trt.called("get_engine_information") == [(trt.LayerInformationFormat.JSON,)]


def test_inspector_is_unavailable_when_the_engine_cannot_load_here(monkeypatch, fp32_onnx, cache):
    rtx = use(monkeypatch, FakeTensorRT("tensorrt_rtx", deserialize_error=fake_trt.CC_ERROR))
    engine = build(fp32_onnx, cache)  # the AOT build works on any GPU ...
    assert engine.cache_status == "miss"
    assert engine.meta["inspector"] == f"unavailable: {fake_trt.CC_ERROR}"  # ... loading it here does not
    assert "engine_layers" not in engine.meta
    assert not engine.inspector_path.exists()
    assert rtx.called("get_engine_information") == []


def test_tensorrt_rtx_builds_without_flags_or_timing_cache(monkeypatch, fp32_onnx, cache):
    rtx = use(monkeypatch, FakeTensorRT("tensorrt_rtx"), name="NVIDIA GeForce RTX 4090", cc="8.9")
    engine = build(fp32_onnx, cache)
    assert rtx.called("create_network") == [(0,)]
    assert rtx.called("create_timing_cache") == []
    assert "timing_cache" not in engine.meta
    assert not (cache.root / "trt-timing").exists()
    assert engine.meta["trt"] == "tensorrt_rtx 1.7.1.116"
    assert engine.meta["inspector"] == str(engine.inspector_path)


def test_tensorrt_11_builds_with_flags_zero(monkeypatch, fp32_onnx, cache):
    fake = use(monkeypatch, FakeTensorRT("tensorrt", "11.4.0.106"))
    build(fp32_onnx, cache)
    assert int(fake.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    assert fake.called("create_network") == [(0,)]


def test_builder_settings_reach_the_config(trt, fp32_onnx, cache):
    build(fp32_onnx, cache, workspace_mib=512, optimization_level=5)
    (config,) = trt.configs
    assert config.pool_limits[trt.MemoryPoolType.WORKSPACE] == 512 << 20
    assert config.builder_optimization_level == 5


def test_build_without_iprogressmonitor_uses_the_elapsed_ticker(monkeypatch, fp32_onnx, cache):
    fake = use(monkeypatch, FakeTensorRT("tensorrt", progress_monitor=False))
    engine = build(fp32_onnx, cache)
    assert engine.cache_status == "miss"
    assert fake.configs[0].progress_monitor is None


# -- dynamic shapes ----------------------------------------------------------------------------

def test_dynamic_inputs_get_one_profile_with_min_opt_max(trt, dynamic_onnx, cache):
    low, high = SMALL, Case("high", 3, 512, 640, 192)
    profile = Profile.around(SMALL, NAMES, low, high)
    engine = build(dynamic_onnx, cache, profile=profile)
    assert engine.cache_status == "miss"
    (network,) = trt.networks
    assert {t.name: tuple(t.shape) for t in network.inputs}["imgs"] == (1, 3, 3, -1, -1)
    assert trt.called("set_shape") == [
        ("imgs", (1, 3, 3, 128, 160), (1, 3, 3, 128, 160), (1, 3, 3, 512, 640)),
        ("depth_values", (1, 48), (1, 48), (1, 192)),
    ]  # the dynamic inputs only
    assert all(isinstance(dims, fake_trt.Dims) for call in trt.called("set_shape") for dims in call[1:])
    (added,) = trt.called("add_optimization_profile")
    assert added[0] is trt.profiles[0]
    assert len(trt.profiles) == 1


def test_dynamic_inputs_without_profile_rows_are_a_build_error(trt, dynamic_onnx, cache):
    partial = Profile.static({"proj_matrices": (1, 3, 4, 4), "imgs": (1, 3, 3, 128, 160)})
    with pytest.raises(EngineBuildError) as info:
        build(dynamic_onnx, cache, profile=partial)
    assert "dynamic inputs without a profile: ['depth_values']" in str(info.value)
    assert "Profile.around" in str(info.value)
    assert trt.called("build_serialized_network") == []


# -- the cache key ---------------------------------------------------------------------------

def _changed_onnx(artifact, tmp_path):
    proto = onnx.load(str(artifact.path))
    proto.doc_string = "one byte more"
    data = proto.SerializeToString()
    path = tmp_path / "changed.onnx"
    path.write_bytes(data)
    return dataclasses.replace(artifact, path=path, sha256=hashlib.sha256(data).hexdigest())


def _key_change(change, monkeypatch, artifact, tmp_path):
    """(graph, settings, profile) for the second build, after changing ``change``."""
    if change == "onnx bytes":
        return _changed_onnx(artifact, tmp_path), {}, STATIC
    if change == "profile":
        shapes = {name: SMALL.input_shapes(True)[name] for name in NAMES}
        return artifact, {}, Profile.static({**shapes, "depth_values": (1, 64)})
    settings = {"precision": {"precision": "tf32"}, "workspace": {"workspace_mib": 2048},
                "optimisation level": {"optimization_level": 5}, "timing cache": {"timing_cache": False}}
    if change in settings:
        return artifact, settings[change], STATIC
    environments = {
        "tensorrt version": (FakeTensorRT("tensorrt", "10.14.1.48"), fake_trt.H100, "9.0"),
        "tensorrt flavour": (FakeTensorRT("tensorrt_rtx"), fake_trt.H100, "9.0"),
        "gpu name": (FakeTensorRT("tensorrt"), "NVIDIA H200", "9.0"),
        "compute capability": (FakeTensorRT("tensorrt"), fake_trt.H100, "9.1"),
    }
    fake, name, cc = environments[change]
    use(monkeypatch, fake, name=name, cc=cc)
    return artifact, {}, STATIC


KEY_CHANGES = ("onnx bytes", "precision", "profile", "tensorrt version", "tensorrt flavour", "gpu name",
               "compute capability", "workspace", "optimisation level", "timing cache")


@pytest.mark.parametrize("change", KEY_CHANGES)
def test_engine_cache_key_changes_with(change, monkeypatch, fp32_onnx, tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    baseline = use(monkeypatch, FakeTensorRT("tensorrt"))
    first = build(fp32_onnx, cache)
    onnx_artifact, settings, profile = _key_change(change, monkeypatch, fp32_onnx, tmp_path)
    changed = build(onnx_artifact, cache, profile=profile, **settings)
    assert changed.cache_status == "miss"
    assert changed.path != first.path
    use(monkeypatch, baseline)
    again = build(fp32_onnx, cache)
    assert again.cache_status == "hit"
    assert again.path == first.path


def test_engine_cache_key_fields(trt, fp32_onnx, cache):
    device = trt_api.require_cuda()
    fields = EngineFromOnnx(fp32_onnx, BuildSettings(), STATIC, cache).key_fields(trt_api.bind(), device)
    assert fields == {
        "onnx_sha256": fp32_onnx.sha256, "trt": "tensorrt", "trt_version": "10.13.0.35",
        "gpu": fake_trt.H100, "compute_capability": "9.0", "profile": STATIC.as_dict(),
        "precision": "fp32", "workspace_mib": 4096, "optimization_level": 3, "timing_cache": True,
    }
    engine = build(fp32_onnx, cache)
    assert engine.path.parent == cache.entry_dir("engine", canonical_key(fields))


@pytest.mark.parametrize("same", ["fresh builder and cache object", "explicit flavour", "same bytes elsewhere",
                                  "another gpu of the same model"])
def test_engine_cache_hits_when_nothing_that_matters_changed(same, monkeypatch, trt, fp32_onnx, cache, tmp_path):
    first = build(fp32_onnx, cache)
    onnx_artifact, settings, target = fp32_onnx, {}, cache
    if same == "fresh builder and cache object":
        target = ArtifactCache(cache.root)
    elif same == "explicit flavour":
        settings = {"flavour": "tensorrt"}
    elif same == "same bytes elsewhere":
        copy = tmp_path / "copy.onnx"
        shutil.copyfile(fp32_onnx.path, copy)
        onnx_artifact = dataclasses.replace(fp32_onnx, path=copy, cache_status="miss")
    else:
        fake_trt.fake_cuda(monkeypatch, index=1)
    again = build(onnx_artifact, target, **settings)
    assert again.cache_status == "hit"
    assert again.path == first.path
    assert trt.build_count == 1


def test_truncated_engine_in_the_cache_is_rebuilt_with_a_warning(trt, fp32_onnx, cache):
    first = build(fp32_onnx, cache)
    plan = first.path.read_bytes()
    first.path.write_bytes(plan[: len(plan) // 2])
    with pytest.warns(UserWarning, match="truncated or modified"):
        again = build(fp32_onnx, cache)
    assert again.cache_status == "rebuilt"
    assert trt.build_count == 2
    assert again.path.read_bytes() == plan
    assert again.sha256 == first.sha256
    assert again.inspector_path.is_file()
    assert build(fp32_onnx, cache).cache_status == "hit"


RACE_SCRIPT = r"""
import importlib.util, json, os, sys, time
from pathlib import Path

fake_path, root, spec_file, counter, ready_dir, go = sys.argv[1:7]
spec = importlib.util.spec_from_file_location("fake_tensorrt", fake_path)
fake_trt = importlib.util.module_from_spec(spec)
sys.modules["fake_tensorrt"] = fake_trt
spec.loader.exec_module(fake_trt)

from harness.convert.cache import ArtifactCache
from harness.convert.engine import BuildSettings, EngineFromOnnx, Profile
from harness.convert.onnx_export import ExportConfig, OnnxArtifact

fake_trt.install(None, fake_trt.FakeTensorRT("tensorrt", build_delay=0.5, build_log=counter))
fake_trt.fake_cuda(None)
given = json.loads(Path(spec_file).read_text())
artifact = OnnxArtifact(Path(given["path"]), given["sha256"], ExportConfig(**given["config"]), True,
                        given["node_count"], given["audit"], 0.0, "hit")
profile = Profile.static({name: tuple(shape) for name, shape in given["shapes"].items()})
builder = EngineFromOnnx(artifact, BuildSettings(), profile, ArtifactCache(root))
Path(ready_dir, str(os.getpid())).touch()
while not Path(go).exists():  # line the workers up so that they really race
    time.sleep(0.005)
engine = builder()
print(engine.cache_status, engine.path)
"""


def test_four_processes_racing_on_a_cold_cache_build_the_engine_once(fp32_onnx, tmp_path):
    root, counter, ready, go = tmp_path / "cache", tmp_path / "builds.txt", tmp_path / "ready", tmp_path / "go"
    ready.mkdir()
    spec_file = tmp_path / "onnx.json"
    spec_file.write_text(json.dumps({
        "path": str(fp32_onnx.path), "sha256": fp32_onnx.sha256, "config": dataclasses.asdict(fp32_onnx.config),
        "node_count": fp32_onnx.node_count, "audit": fp32_onnx.audit,
        "shapes": {name: list(SMALL.input_shapes(True)[name]) for name in NAMES},
    }))
    args = [str(FAKE_PATH), str(root), str(spec_file), str(counter), str(ready), str(go)]
    procs = [subprocess.Popen([sys.executable, "-c", RACE_SCRIPT, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        deadline = time.time() + 120
        while len(list(ready.iterdir())) < 4 and time.time() < deadline:
            assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs if p.poll() is not None]
            time.sleep(0.05)
        go.touch()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(out.split())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert len(counter.read_text().splitlines()) == 1  # one build
    assert sorted(status for status, _ in results) == ["hit", "hit", "hit", "miss"]
    paths = {path for _, path in results}
    assert len(paths) == 1
    engine_path = Path(paths.pop())
    assert engine_path.read_bytes().startswith(fake_trt.PLAN_MAGIC)
    assert (engine_path.parent / "inspector.json").is_file()


# -- failures --------------------------------------------------------------------------------

def test_parse_failure_names_the_node_the_operator_and_the_fix(monkeypatch, fp32_onnx, cache):
    fake = use(monkeypatch, FakeTensorRT("tensorrt", unsupported_ops={"GridSample"}))
    with pytest.raises(EngineBuildError) as info:
        build(fp32_onnx, cache)
    message = str(info.value)
    assert isinstance(info.value, HarnessError) and isinstance(info.value, RuntimeError)
    assert message.startswith("engine fp32 from model.onnx (torchscript-op17-precomputed-fp32) | TensorRT's ONNX parser failed")
    assert "/model/GridSample (GridSample) UNSUPPORTED_NODE: No importer registered for op: GridSample" in message
    assert "/model/GridSample_1 (GridSample)" in message
    assert "Fix: run the operator audit" in message
    assert fake.called("build_serialized_network") == []
    assert not list(cache.root.glob("engine/*/model.engine"))


def test_parse_failure_without_parser_errors_quotes_the_log(monkeypatch, fp32_onnx, cache):
    use(monkeypatch, FakeTensorRT("tensorrt", parse_logged_error="ModelImporter.cpp:123: failed to read the model"))
    with pytest.raises(EngineBuildError) as info:
        build(fp32_onnx, cache)
    assert "failed to read the model" in str(info.value)
    assert "Fix: see the TensorRT log" in str(info.value)


def test_failed_build_quotes_the_logged_error(monkeypatch, fp32_onnx, cache):
    oom = "[optimizer] Error Code 2: Internal Error (Assertion failed: out of memory while allocating 4.2 GiB)"
    fake = use(monkeypatch, FakeTensorRT("tensorrt", build_error=oom))
    with pytest.raises(EngineBuildError) as info:
        build(fp32_onnx, cache)
    message = str(info.value)
    assert "build_serialized_network returned nothing" in message
    assert oom in message
    assert "--harness-trt-workspace" in message
    assert fake.called("build_serialized_network")
    assert not list(cache.root.glob("engine/*/model.engine"))
    assert not list(cache.root.glob("engine/*/meta.json"))


def test_failed_build_with_nothing_logged_says_so(monkeypatch, fp32_onnx, cache):
    use(monkeypatch, FakeTensorRT("tensorrt"))
    monkeypatch.setattr(fake_trt.Builder, "build_serialized_network", lambda self, network, config: None)
    with pytest.raises(EngineBuildError, match="no error logged"):
        build(fp32_onnx, cache)


@pytest.mark.parametrize("precision, graph", [("fp16", "fp32"), ("fp32", "fp16"), ("tf32", "fp16")])
def test_engine_precision_must_match_the_graph(trt, fp32_onnx, fp16_onnx, cache, precision, graph):
    artifact = fp16_onnx if graph == "fp16" else fp32_onnx
    with pytest.raises(InvalidArgument) as info:
        build(artifact, cache, precision)
    message = str(info.value)
    assert f"engine {precision} | ONNX graph precision does not match: {graph}" in message
    wanted = "fp16" if precision == "fp16" else "fp32"
    assert f"ExportConfig(precision='{wanted}')" in message
    assert trt.calls == []  # refused before TensorRT is touched
    assert not (cache.root / "engine").exists()


def test_graph_with_audit_findings_is_refused_before_the_builder_is_touched(trt, fp32_onnx, cache):
    finding = {"node": "/model/Inverse", "op": "com.microsoft::Inverse",
               "problem": "custom-domain operator 'com.microsoft::Inverse' needs a TensorRT plugin",
               "fix": "use --harness-workarounds precomputed or closed_form"}
    with pytest.raises(UnsupportedOperator) as info:
        build(with_findings(fp32_onnx, [finding]), cache)
    message = str(info.value)
    assert "/model/Inverse (com.microsoft::Inverse)" in message
    assert "Fix: use --harness-workarounds precomputed or closed_form" in message
    assert trt.calls == []
    assert not (cache.root / "engine").exists()


def test_tf32_without_the_tf32_flag_is_unavailable(monkeypatch, fp32_onnx, cache):
    fake = use(monkeypatch, FakeTensorRT("tensorrt", tf32=False))
    with pytest.raises(BackendUnavailable) as info:
        build(fp32_onnx, cache, "tf32")
    assert info.value.missing == "tensorrt 10.13.0.35 has no TF32 builder flag"
    assert info.value.backend == "trt-tf32 (tensorrt 10.13.0.35)"
    assert fake.called("build_serialized_network") == []


def test_tf32_without_the_tf32_flag_is_refused_before_any_build_work(monkeypatch, fp32_onnx, cache):
    """Like the audit, a missing capability is a precondition: checked before the cache entry is
    opened and the graph parsed, so a later session does not warn about a half-built entry."""
    fake = use(monkeypatch, FakeTensorRT("tensorrt", tf32=False))
    with pytest.raises(BackendUnavailable):
        build(fp32_onnx, cache, "tf32")
    assert fake.called("parse") == []
    assert not list(cache.root.glob("engine/*"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(BackendUnavailable):
            build(fp32_onnx, cache, "tf32")  # the next session
    assert [str(w.message) for w in caught] == []


def test_fp32_without_the_tf32_flag_builds(monkeypatch, fp32_onnx, cache):
    fake = use(monkeypatch, FakeTensorRT("tensorrt", tf32=False))
    assert build(fp32_onnx, cache).cache_status == "miss"
    assert fake.called("clear_flag") == fake.called("set_flag") == []


def test_build_without_tensorrt_is_unavailable_before_any_work(monkeypatch, fp32_onnx, cache):
    fake_trt.install(monkeypatch)
    with pytest.raises(BackendUnavailable) as info:
        build(fp32_onnx, cache)
    assert info.value.missing == "tensorrt not importable"
    assert not cache.root.exists()


def test_build_without_a_gpu_is_unavailable(monkeypatch, fp32_onnx, cache):
    fake = FakeTensorRT("tensorrt")
    fake_trt.install(monkeypatch, fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailable) as info:
        build(fp32_onnx, cache)
    assert info.value.missing == "no CUDA device"
    assert fake.calls == []


# -- through the chain -----------------------------------------------------------------------

@pytest.fixture
def fresh_chain(chain, fp32_onnx, fp16_onnx, dynamic_onnx, tmp_path):
    """A chain over a copy of the module's ONNX cache: exports are hits, engines are new."""
    shutil.copytree(chain.cache.root, tmp_path / "cache")
    fresh = Chain(ChainConfig(cache_dir=tmp_path / "cache", device="cpu"))
    yield fresh
    fresh.close()


def test_chain_builds_a_static_engine_and_a_runner_through_the_bound_module(trt, fresh_chain):
    engine = fresh_chain.engine("small", "precomputed", "torchscript", "simplified", "fp32")
    assert engine.cache_status == "miss"
    assert engine.profile == STATIC
    assert engine.path.is_relative_to(fresh_chain.cache.root)
    assert trt.called("add_optimization_profile") == []
    leg = Leg("trt-fp32", "simplified", "precomputed", "torchscript", "small")
    runner = fresh_chain.candidate_runner(leg)
    assert runner is fresh_chain.trt_runner("small", "precomputed", "torchscript", "simplified", "fp32")
    assert runner.name == "trt-fp32"
    assert runner.input_names == NAMES
    assert runner.output_names == ("depth", "photometric_confidence")
    assert runner.runtime_cache == fresh_chain.cache.root / "trt-runtime" / f"{engine.sha256[:16]}.cache"
    assert trt.build_count == 1


def test_chain_builds_a_dynamic_engine_with_a_profile_around_the_case(trt, fresh_chain):
    engine = fresh_chain.engine("small", "precomputed", "torchscript", "simplified", "fp32", dynamic=True)
    assert not engine.profile.is_static
    assert trt.called("set_shape") == [
        ("imgs", (1, 3, 3, 128, 160), (1, 3, 3, 128, 160), (1, 3, 3, 1184, 1600)),
        ("depth_values", (1, 48), (1, 48), (1, 192)),
    ]


def test_chain_trt_runner_on_an_h100_with_tensorrt_rtx_is_unavailable(monkeypatch, fresh_chain):
    use(monkeypatch, FakeTensorRT("tensorrt_rtx", deserialize_error=fake_trt.CC_ERROR))
    with pytest.raises(BackendUnavailable) as info:
        fresh_chain.trt_runner("small", "precomputed", "torchscript", "simplified", "fp16")
    assert info.value.missing == "TensorRT-RTX cannot run engines on compute capability 9.0"
    engine = fresh_chain.engine("small", "precomputed", "torchscript", "simplified", "fp16")
    assert engine.meta["inspector"].startswith("unavailable: The engine cannot run on this GPU")
