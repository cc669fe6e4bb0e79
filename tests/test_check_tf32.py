"""Unit tests of harness/check_tf32.py: the depth drift between ONNX Runtime CUDA as shipped and
with use_tf32=0, measured through stand-in runners (no CUDA needed), and the section check prints."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from harness import check_tf32
from harness.check_tf32 import Tf32Exposure, depth_drift, tf32_exposure


def _matmul_grid_graph(path: Path) -> Path:
    """x, theta -> MatMul(theta, base) -> GridSample(x, grid) -> y: a grid computed by a MatMul."""
    nodes = [helper.make_node("MatMul", ["base", "theta"], ["grid"], name="grid_mm"),
             helper.make_node("GridSample", ["x", "grid"], ["y"], name="sample")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4]),
                                           helper.make_tensor_value_info("base", TensorProto.FLOAT, [1, 4, 4, 3]),
                                           helper.make_tensor_value_info("theta", TensorProto.FLOAT, [3, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


class _Runner:
    def __init__(self, depth: torch.Tensor) -> None:
        self.depth = depth
        self.input_names = ("depth_values",)

    def infer(self, feed):  # type: ignore[no-untyped-def]
        assert set(feed) == {"depth_values"}
        return {"depth": self.depth}


def test_depth_drift_in_mm_and_steps():
    strict = torch.zeros(1, 10, 10)
    shipped = strict.clone()
    shipped[0, 0, 0] = 6.0  # one pixel 6 mm off: the max, not the p99
    drift = depth_drift(shipped, strict, step_mm=2.0)
    assert drift["max_mm"] == 6.0 and drift["max_steps"] == 3.0
    assert drift["p99_mm"] == pytest.approx(0.0, abs=0.1) and drift["step_mm"] == 2.0


def test_the_drift_is_measured_between_ort_as_shipped_and_use_tf32_0_where_cuda_is(tmp_path, monkeypatch):
    from harness.backends import registry

    monkeypatch.setattr(registry, "get", lambda name: SimpleNamespace(available=lambda: None))
    asked = []
    depths = {"default": torch.full((1, 4, 4), 501.0), "strict": torch.full((1, 4, 4), 500.0)}

    def user_onnx_runner(path, inputs, outputs, device, name, cuda_options="strict"):  # type: ignore[no-untyped-def]
        asked.append((device, cuda_options))
        return _Runner(depths[cuda_options])

    chain = SimpleNamespace(case_feed=lambda case: {"depth_values": torch.tensor([[425.0, 427.5, 430.0]])},
                            user_onnx_runner=user_onnx_runner)
    target = SimpleNamespace(path=_matmul_grid_graph(tmp_path / "user.onnx"), stem="user", case="small",
                             binding=SimpleNamespace(input_roles=dict, output_roles=dict))
    exposure = tf32_exposure(chain, target)  # type: ignore[arg-type]
    assert asked == [("cuda", "default"), ("cuda", "strict")]
    assert exposure.nodes == ("grid_mm",) and exposure.skipped is None
    assert exposure.drift["max_mm"] == 1.0 and exposure.drift["max_steps"] == pytest.approx(0.4)
    section = exposure.section()
    assert "max 1 mm (0.4 depth steps)" in section and "-> nodes: grid_mm" in section
    assert check_tf32.NO_TF32 in section and check_tf32.SAFE_EXPORT in section


def test_a_graph_tf32_cannot_touch_gets_one_line_and_no_section():
    exposure = Tf32Exposure("ours.onnx", ())
    assert not exposure.exposed and exposure.section() == ""
    assert "without MatMul/Gemm/Einsum" in exposure.verdict()
