"""Shared by the unit tests: the fake ``tensorrt`` module (tests/fake_tensorrt.py) registered as
``fake_tensorrt`` (pytest runs with --import-mode=importlib and tests/ is no package), and the
bundled checkpoint's model (a fresh one per test module)."""

import importlib.util
import sys
from pathlib import Path

import pytest

from harness.chain import BUNDLED_WEIGHTS
from harness.model.checkpoint import load_checkpoint


def _register_fake_tensorrt() -> None:
    if "fake_tensorrt" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("fake_tensorrt", Path(__file__).resolve().parent / "fake_tensorrt.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_tensorrt"] = module
    spec.loader.exec_module(module)


_register_fake_tensorrt()


def _import_pandas_string_arrays() -> None:
    """pytester's in-process runs drop the modules a run imported; pandas 3 imports its string
    arrays lazily, so a second run made a second StringArray class and the report's DataFrame
    failed pandas's own isinstance check. Imported here, before any pytester snapshot."""
    import pandas as pd

    pd.DataFrame([{"text": "x", "number": 1.0}])


_import_pandas_string_arrays()


@pytest.fixture(scope="module")
def model():
    """The torch MVSNet with the bundled weights, loaded once per test module."""
    return load_checkpoint(BUNDLED_WEIGHTS)
