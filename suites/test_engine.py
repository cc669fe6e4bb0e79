"""TensorRT engine builds: every precision from every exported graph, through EngineFromOnnx.

Skips name what is missing (``tensorrt not importable``, ``no CUDA device``). Where an engine
builds but cannot run here (TensorRT-RTX on compute capability 9.0), the parity legs skip with
that reason; the build itself is still checked here.
"""

from __future__ import annotations

import json

import pytest

from harness.convert.engine import ENGINE_PRECISIONS
from harness.convert.workarounds import TRT_EXPORTABLE
from harness.errors import BackendUnavailable, UnsupportedOperator

pytestmark = [pytest.mark.trt, pytest.mark.gpu]


@pytest.mark.parametrize("engine_precision", ENGINE_PRECISIONS)
def test_engine_builds_from_simplified_graph(chain, case, inverse_workaround, exporter, engine_precision,
                                             record_property):
    if inverse_workaround.name not in TRT_EXPORTABLE:
        with pytest.raises((UnsupportedOperator, BackendUnavailable)) as info:
            chain.engine(case.name, inverse_workaround.name, exporter, "simplified", engine_precision)
        if isinstance(info.value, BackendUnavailable):
            pytest.skip(f"{info.value.backend}: {info.value.missing}")
        assert "TensorRT needs a plugin" in str(info.value)
        return
    try:
        engine = chain.engine(case.name, inverse_workaround.name, exporter, "simplified", engine_precision)
    except BackendUnavailable as exc:
        pytest.skip(f"{exc.backend}: {exc.missing}")
    size = engine.path.stat().st_size
    assert size > 0
    assert engine.meta["bytes"] == size
    assert ("-fp16" in engine.meta["onnx_config"]) == (engine_precision == "fp16")  # precision comes from the graph
    record_property("harness_engine", json.dumps({
        "case": case.name, "workaround": inverse_workaround.name, "exporter": exporter,
        "precision": engine_precision, "trt": engine.meta.get("trt"), "mib": engine.meta.get("engine_mib"),
        "build_seconds": engine.meta.get("build_seconds"), "cache": engine.cache_status,
        "inspector": engine.meta.get("inspector"),
    }))
    if engine.inspector_path.is_file():
        layers = json.loads(engine.inspector_path.read_text()).get("Layers", [])
        assert layers, "the inspector JSON lists the engine's layers"
