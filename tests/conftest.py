"""Shared by the unit tests: the fake ``tensorrt`` module (tests/fake_tensorrt.py) registered as
``fake_tensorrt`` (pytest runs with --import-mode=importlib and tests/ is no package)."""

import importlib.util
import sys
from pathlib import Path


def _register_fake_tensorrt() -> None:
    if "fake_tensorrt" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("fake_tensorrt", Path(__file__).resolve().parent / "fake_tensorrt.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_tensorrt"] = module
    spec.loader.exec_module(module)


_register_fake_tensorrt()
