"""Unit tests of harness/backends/trt_api.py on the CPU, with a fake ``tensorrt`` module
(tests/fake_tensorrt.py), plus a static check that harness/ uses only TensorRT 10's name-based API.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from harness.backends import trt_api
from harness.errors import BackendUnavailable, HarnessError, InvalidArgument

fake_trt = sys.modules["fake_tensorrt"]  # registered by tests/conftest.py
FakeTensorRT = fake_trt.FakeTensorRT
HARNESS = Path(trt_api.__file__).resolve().parents[1]


@pytest.fixture
def both(monkeypatch):
    """A full TensorRT and a TensorRT-RTX, both importable."""
    full, rtx = FakeTensorRT("tensorrt"), FakeTensorRT("tensorrt_rtx")
    return full, rtx, fake_trt.install(monkeypatch, full, rtx)


@pytest.fixture
def nothing_importable(monkeypatch):
    """The real ``_import``, with neither module importable (None in sys.modules halts an import)."""
    monkeypatch.setattr(trt_api, "_bound", None)
    monkeypatch.setattr(trt_api, "trt", None)
    monkeypatch.delenv(trt_api.ENV_FLAVOUR, raising=False)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)


# -- bind ------------------------------------------------------------------------------------

def test_bind_auto_prefers_tensorrt_and_publishes_it(both):
    full, _, imports = both
    info = trt_api.bind("auto")
    assert info == trt_api.TrtInfo("tensorrt", "10.13.0.35")
    assert trt_api.trt is full
    assert imports.imports == ["tensorrt"]
    assert trt_api.bound() is info


def test_bind_auto_falls_back_to_tensorrt_rtx(monkeypatch):
    rtx = FakeTensorRT("tensorrt_rtx")
    imports = fake_trt.install(monkeypatch, rtx)
    info = trt_api.bind()
    assert (info.flavour, info.version, info.is_rtx) == ("tensorrt_rtx", "1.7.1.116", True)
    assert trt_api.trt is rtx
    assert imports.imports == ["tensorrt", "tensorrt_rtx"]


def test_bind_reuses_the_binding_without_importing_again(both):
    _, _, imports = both
    first = trt_api.bind()
    assert trt_api.bind() is first
    assert trt_api.bind("tensorrt") is first
    assert trt_api.bound() is first
    assert imports.imports == ["tensorrt"]


def test_bind_of_the_other_flavour_rebinds(both):
    full, rtx, _ = both
    assert trt_api.bind().flavour == "tensorrt"
    assert trt_api.bind("tensorrt_rtx").flavour == "tensorrt_rtx"
    assert trt_api.trt is rtx
    assert trt_api.bind("tensorrt").flavour == "tensorrt"
    assert trt_api.trt is full


def test_bound_binds_on_first_use(both):
    full, _, _ = both
    assert trt_api.bound().flavour == "tensorrt"
    assert trt_api.trt is full


def test_bind_raises_backend_unavailable_when_neither_module_imports(nothing_importable):
    with pytest.raises(BackendUnavailable) as info:
        trt_api.bind("auto")
    error = info.value
    assert error.missing == "tensorrt not importable"
    assert error.backend == "trt"
    assert isinstance(error, HarnessError) and isinstance(error, RuntimeError)
    message = str(error)
    assert "tried tensorrt: ModuleNotFoundError" in message
    assert "tensorrt_rtx: ModuleNotFoundError" in message
    assert "pip install tensorrt" in message
    assert trt_api.trt is None
    assert trt_api._bound is None


def test_bind_of_one_flavour_tries_only_that_module(monkeypatch):
    imports = fake_trt.install(monkeypatch, FakeTensorRT("tensorrt_rtx"))
    with pytest.raises(BackendUnavailable) as info:
        trt_api.bind("tensorrt")
    assert info.value.missing == "tensorrt not importable"
    assert "tensorrt_rtx:" not in str(info.value)
    assert imports.imports == ["tensorrt"]


def _namespace_package(root: Path, name: str) -> types.ModuleType:
    """What ``pip install tensorrt-stubs`` alone leaves: a folder of .pyi files, importable as a
    namespace package, with no Builder and no Runtime."""
    folder = root / name
    folder.mkdir()
    (folder / "__init__.pyi").write_text("class Builder: ...\nclass Runtime: ...\n")
    spec = importlib.machinery.PathFinder.find_spec(name, [str(root)])
    assert spec is not None and spec.origin in (None, "namespace")  # a namespace package
    return importlib.util.module_from_spec(spec)


def test_stub_only_namespace_package_counts_as_not_importable(nothing_importable, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", _namespace_package(tmp_path, "tensorrt"))
    assert importlib.import_module("tensorrt").__spec__ is not None  # it does import ...
    with pytest.raises(ImportError, match="no Builder/Runtime"):
        trt_api._import("tensorrt")  # ... but is no TensorRT
    with pytest.raises(BackendUnavailable) as info:
        trt_api.bind("auto")
    assert info.value.missing == "tensorrt not importable"
    assert "tensorrt: ImportError: tensorrt is importable but has no Builder/Runtime" in str(info.value)
    assert trt_api.trt is None


@pytest.mark.parametrize("present", ["Builder", "Runtime"])
def test_module_with_only_half_of_the_api_is_not_importable(nothing_importable, monkeypatch, present):
    partial = types.ModuleType("tensorrt")
    setattr(partial, present, object)
    monkeypatch.setitem(sys.modules, "tensorrt", partial)
    with pytest.raises(ImportError, match="no Builder/Runtime"):
        trt_api._import("tensorrt")


def test_real_import_returns_a_module_with_builder_and_runtime(nothing_importable, monkeypatch):
    full = FakeTensorRT("tensorrt")
    monkeypatch.setitem(sys.modules, "tensorrt", full)
    assert trt_api._import("tensorrt") is full
    assert trt_api.bind().flavour == "tensorrt"
    assert trt_api.trt is full


def test_broken_install_reads_as_not_importable_with_its_reason(monkeypatch):
    fake_trt.install(monkeypatch)

    def broken(flavour):
        raise OSError(f"lib{flavour}.so: cannot open shared object file")

    monkeypatch.setattr(trt_api, "_import", broken)
    with pytest.raises(BackendUnavailable) as info:
        trt_api.bind()
    assert info.value.missing == "tensorrt not importable"
    assert "tensorrt: OSError: libtensorrt.so: cannot open shared object file" in str(info.value)


@pytest.mark.parametrize("flavour", ["tensorrt_lean", "trt", "TensorRT", ""])
def test_unknown_flavour_is_an_invalid_argument(both, flavour):
    _, _, imports = both
    with pytest.raises(InvalidArgument) as info:
        trt_api.bind(flavour)
    assert isinstance(info.value, ValueError)
    assert "auto, tensorrt or tensorrt_rtx" in str(info.value)
    assert imports.imports == []


def test_env_flavour_is_honoured_for_auto(both, monkeypatch):
    _, rtx, imports = both
    monkeypatch.setenv(trt_api.ENV_FLAVOUR, "tensorrt_rtx")
    assert trt_api.bind().flavour == "tensorrt_rtx"
    assert trt_api.trt is rtx
    assert imports.imports == ["tensorrt_rtx"]


def test_explicit_flavour_wins_over_env(both, monkeypatch):
    full, _, _ = both
    monkeypatch.setenv(trt_api.ENV_FLAVOUR, "tensorrt_rtx")
    assert trt_api.bind("tensorrt").flavour == "tensorrt"
    assert trt_api.trt is full


def test_unknown_env_flavour_is_an_invalid_argument(both, monkeypatch):
    monkeypatch.setenv(trt_api.ENV_FLAVOUR, "tensorrt_lean")
    with pytest.raises(InvalidArgument, match="tensorrt_lean"):
        trt_api.bind()


# -- TrtInfo, devices --------------------------------------------------------------------------

@pytest.mark.parametrize("flavour, version, major, label", [
    ("tensorrt", "10.13.0.35", 10, "tensorrt 10.13.0.35"),
    ("tensorrt", "11.4.0.106", 11, "tensorrt 11.4.0.106"),
    ("tensorrt_rtx", "1.7.1.116", 1, "tensorrt_rtx 1.7.1.116"),
    ("tensorrt", "unknown", 0, "tensorrt unknown"),
])
def test_trt_info(flavour, version, major, label):
    info = trt_api.TrtInfo(flavour, version)
    assert (info.major, info.label, info.is_rtx) == (major, label, flavour == "tensorrt_rtx")


def test_require_cuda_raises_no_cuda_device_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailable) as info:
        trt_api.require_cuda("trt-fp16")
    assert (info.value.backend, info.value.missing) == ("trt-fp16", "no CUDA device")
    assert "NVIDIA GPU" in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_require_cuda_raises_here():
    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        trt_api.require_cuda()


def test_compute_capability_is_major_dot_minor(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (12, 0))
    assert trt_api.compute_capability(torch.device("cuda", 0)) == "12.0"


@pytest.mark.parametrize("flavour, cc, blocker", [
    ("tensorrt_rtx", "9.0", "TensorRT-RTX cannot run engines on compute capability 9.0"),
    ("tensorrt_rtx", "10.0", "TensorRT-RTX cannot run engines on compute capability 10.0"),
    ("tensorrt_rtx", "8.9", None),
    ("tensorrt_rtx", "8.6", None),
    ("tensorrt_rtx", "12.0", None),
    ("tensorrt", "9.0", None),
    ("tensorrt", "8.9", None),
])
def test_runtime_blocker(monkeypatch, flavour, cc, blocker):
    monkeypatch.setattr(trt_api, "compute_capability", lambda device=None: cc)
    info = trt_api.TrtInfo(flavour, fake_trt.DEFAULT_VERSIONS[flavour])
    assert trt_api.runtime_blocker(info, torch.device("cuda", 0)) == blocker


# -- types -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, dtype", [
    ("FLOAT", torch.float32), ("HALF", torch.float16), ("BF16", torch.bfloat16), ("INT8", torch.int8),
    ("INT32", torch.int32), ("INT64", torch.int64), ("BOOL", torch.bool), ("UINT8", torch.uint8),
    ("FP8", torch.float8_e4m3fn),
])
def test_torch_dtype_follows_nvidias_table(name, dtype):
    assert trt_api.torch_dtype(fake_trt.DataType[name]) is dtype


def test_torch_dtype_reads_the_name_from_str_when_there_is_no_name_attribute():
    class Plain:
        def __str__(self) -> str:
            return "DataType.HALF"

    assert trt_api.torch_dtype(Plain()) is torch.float16


@pytest.mark.parametrize("name", ["FP4", "INT4"])
def test_torch_dtype_refuses_packed_types(name):
    with pytest.raises(InvalidArgument) as info:
        trt_api.torch_dtype(fake_trt.DataType[name])
    assert name in str(info.value)
    assert "no torch equivalent" in str(info.value)


def test_dims_tuple_keeps_runtime_dimensions():
    assert trt_api.dims_tuple(fake_trt.Dims([1, 3, -1, -1])) == (1, 3, -1, -1)
    assert trt_api.dims_tuple([2, 4]) == (2, 4)
    assert trt_api.dims_tuple(()) == ()
    assert all(type(d) is int for d in trt_api.dims_tuple(torch.Size([5, 6])))


def test_to_dims_builds_the_bound_modules_dims(both):
    trt_api.bind()
    dims = trt_api.to_dims((1, 3, 128, 160))
    assert isinstance(dims, fake_trt.Dims)
    assert tuple(dims) == (1, 3, 128, 160)


# -- CapturingLogger ---------------------------------------------------------------------------

def test_capturing_logger_is_an_ilogger_of_the_bound_module_and_keeps_errors(both):
    trt_api.bind()
    logger = trt_api.CapturingLogger()
    assert isinstance(logger, fake_trt.ILogger)
    for severity, text in [(fake_trt.Severity.INFO, "info"), (fake_trt.Severity.ERROR, "bad"),
                           (fake_trt.Severity.WARNING, "careful"), (fake_trt.Severity.INTERNAL_ERROR, "worse")]:
        logger.log(severity, text)
    assert logger.errors() == ["bad", "worse"]
    assert logger.messages[0] == ("INFO", "info")


def test_capturing_logger_keeps_the_last_200_messages(both):
    trt_api.bind()
    logger = trt_api.CapturingLogger()
    for i in range(250):
        logger.log(fake_trt.Severity.ERROR, f"error {i}")
    assert len(logger.messages) == 200
    assert logger.errors()[0] == "error 50"
    assert logger.errors()[-1] == "error 249"


def test_capturing_logger_prints_warnings_and_errors_unless_quiet(both, capsys):
    trt_api.bind()
    loud, quiet = trt_api.CapturingLogger(quiet=False), trt_api.CapturingLogger()
    for logger in (loud, quiet):
        logger.log(fake_trt.Severity.VERBOSE, "chatter")
        logger.log(fake_trt.Severity.WARNING, "careful")
        logger.log(fake_trt.Severity.ERROR, "bad")
    out = capsys.readouterr().out
    assert out.splitlines() == ["[TensorRT WARNING] careful", "[TensorRT ERROR] bad"]


# -- static check: TensorRT 10 name-based API only ---------------------------------------------

REMOVED_IN_TRT10 = frozenset({
    "get_binding_index", "get_binding_name", "binding_is_input", "num_bindings", "get_binding_shape",
    "get_binding_dtype", "execute_async_v2", "execute_async", "build_engine", "max_workspace_size",
    "set_binding_shape", "get_profile_shape",
})
NAME_BASED = ("num_io_tensors", "get_tensor_mode", "set_input_shape", "set_tensor_address", "execute_async_v3")


def api_uses(source: str) -> list[tuple[str, int]]:
    """(attribute, line) for every attribute the code touches: ``x.name`` and
    ``getattr/hasattr/setattr(x, "name")``; docstrings and comments do not count."""
    uses = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            uses.append((node.attr, node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            uses.append((node.args[1].value, node.lineno))
    return uses


def test_api_check_catches_removed_calls_and_ignores_prose():
    source = '''
"""Docs may name get_binding_index and execute_async_v2."""
def run(engine, context, config, builder, network):
    # a comment about build_engine( is fine too
    index = engine.get_binding_index("imgs")
    context.execute_async_v2([], 0)
    config.max_workspace_size = 1 << 30
    n = getattr(engine, "num_bindings", 0)
    builder.build_engine(network, config)
    context.execute_async_v3(0)
'''
    found = {name for name, _ in api_uses(source)} & REMOVED_IN_TRT10
    assert found == {"get_binding_index", "execute_async_v2", "max_workspace_size", "num_bindings", "build_engine"}


def test_harness_uses_no_tensorrt_api_removed_in_10():
    offenders = []
    for path in sorted(HARNESS.rglob("*.py")):
        for name, line in api_uses(path.read_text()):
            if name in REMOVED_IN_TRT10:
                offenders.append(f"{path.relative_to(HARNESS.parent)}:{line}: {name}")
    assert not offenders, "TensorRT API removed in 10.0 (use the name-based API):\n" + "\n".join(offenders)


def test_tensorrt_runner_uses_the_name_based_api():
    used = {name for name, _ in api_uses((HARNESS / "backends" / "tensorrt_runner.py").read_text())}
    assert set(NAME_BASED) <= used
    assert {"get_tensor_name", "get_tensor_dtype", "get_tensor_shape", "get_tensor_profile_shape"} <= used


def test_the_fake_has_no_removed_api_either():
    """So a harness call to removed API fails the fake-backed tests too, not only mypy."""
    fake = FakeTensorRT()
    engine = fake.Runtime(fake_trt.ILogger()).deserialize_cuda_engine(fake.make_plan([]))
    for obj in (fake, engine, engine.create_execution_context(), fake.Builder(fake_trt.ILogger()),
                fake.Builder(fake_trt.ILogger()).create_builder_config()):
        assert not {name for name in REMOVED_IN_TRT10 if hasattr(obj, name)}
    config = fake.Builder(fake_trt.ILogger()).create_builder_config()
    with pytest.raises(AttributeError):
        config.max_workspace_size = 1 << 30
