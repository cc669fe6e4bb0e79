"""Precision gate: every exported graph keeps MVSNet's FP32 regions (harness/model/precision.py):
the FP32 graph has no FP16 tensor and no weight stored through FP16 anywhere; the mixed graph
computes the projection, sampling grid, GridSample, variance, softmax and depth regression in
FP32. A TensorRT fp16 engine's layers are audited from the engine inspector's JSON (it needs a
machine that can build and inspect the engine; elsewhere the test skips naming what is missing).
"""

from __future__ import annotations

import pytest

from harness.convert.precision import audit_onnx_file, audit_precision
from harness.convert.workarounds import TRT_EXPORTABLE
from harness.errors import BackendUnavailable
from harness.model.precision import FP32_REGIONS


@pytest.mark.parametrize("variant", ["raw", "simplified"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_exported_graph_keeps_the_fp32_regions(chain, case, inverse_workaround, exporter, variant, precision):
    artifact = chain.onnx(case.name, inverse_workaround.name, exporter, variant, precision)
    audit = audit_precision(artifact.load(), FP32_REGIONS, whole_graph=precision == "fp32")
    assert all(audit.region_nodes[r["name"]] > 0 for r in FP32_REGIONS), audit.region_nodes
    audit.require(str(artifact.path))


@pytest.mark.trt
@pytest.mark.gpu
def test_fp16_engine_layers_keep_the_fp32_regions(chain, case, inverse_workaround, exporter):
    if inverse_workaround.name not in TRT_EXPORTABLE:
        pytest.skip(f"{inverse_workaround.name}: TensorRT refuses this graph (suites/test_export.py)")
    try:
        engine = chain.engine(case.name, inverse_workaround.name, exporter, "simplified", "fp16")
    except BackendUnavailable as exc:
        pytest.skip(f"{exc.backend}: {exc.missing}")
    if not engine.inspector_path.is_file():
        pytest.skip(f"no engine inspector JSON beside {engine.path} (the engine could not be inspected here)")
    graph = chain.onnx(case.name, inverse_workaround.name, exporter, "simplified", "fp16")
    audit_onnx_file(graph.path, FP32_REGIONS, inspector=engine.inspector_path).require(str(engine.path))
