"""TF32 exposure of a user's graph, for ``python -m harness check``.

TF32 (allowed by default in ONNX Runtime's CUDA provider, ``use_tf32=1``, and in trtexec unless
``--noTF32``) rounds the inputs of FP32 MatMul/Gemm/Einsum to 10 mantissa bits. A graph exported
from MVSNet_pytorch's ``homo_warping`` computes its sampling grid with two MatMuls
(``src_proj @ inv_ref_proj`` and ``rot @ [x, y, 1]``), so there the rounding moves every sample
by a fraction of a pixel and the bilinear warp turns that into millimetres of depth.

``tf32_exposure`` names those nodes (``harness.convert.precision.tf32_exposed_nodes``) and, where
ONNX Runtime's CUDA provider is available, runs the graph twice on the case's feed, as shipped and
with ``use_tf32=0``, and measures the depth drift between the two. It is a warning, never a
failure: whether TF32 rounds the grid is the runtime's setting, not the graph's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from harness.chain import Chain
from harness.convert.precision import tf32_exposed_nodes
from harness.errors import HarnessError

#: what turning TF32 off costs, where it was measured (issue 22: one H200, onnxruntime-gpu 1.31.1,
#: the harness's seed-shape graphs)
TF32_OFF_COST = ("measured on an H200 at the seed shape: the harness bench's FP32 graph 22.0 ms with use_tf32=0 "
                 "against 14.8 ms as shipped, its FP16 graph 34.3 ms against 12.8 ms (2.7x); trtexec --noTF32 "
                 "not measured")
NO_TF32 = ("build and run without TF32: trtexec --noTF32; ONNX Runtime CUDA provider option use_tf32=0 "
           f"(every FP32 MatMul and convolution loses TF32's speed: {TF32_OFF_COST})")
SAFE_EXPORT = ("export the geometry TF32-safe: compute the projection (src_proj @ inv_ref_proj) and the grid "
               "(rot @ [x, y, 1]) with elementwise multiply-adds instead of matmul, e.g. rot[:, :, 0:1] * x + "
               "rot[:, :, 1:2] * y + rot[:, :, 2:3], as harness/model/geometry.py does (sampling_grid); the "
               "convolutions keep TF32's speed")


@dataclass(frozen=True)
class Tf32Exposure:
    """The TF32 exposure of one graph: the nodes, and the measured depth drift or why none was
    measured (``drift``: ``max_mm``, ``p99_mm``, ``max_steps``, ``p99_steps``, ``step_mm``)."""

    graph: str
    nodes: tuple[str, ...]
    drift: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def exposed(self) -> bool:
        return bool(self.nodes)

    def verdict(self) -> str:
        """One line for the graph's summary."""
        if not self.nodes:
            return "sampling grid computed without MatMul/Gemm/Einsum (TF32 cannot round it)"
        return (f"WARNING: {len(self.nodes)} MatMul/Gemm/Einsum node(s) compute the sampling grid; ONNX Runtime CUDA "
                "and trtexec run them in TF32 by default")

    def drift_line(self) -> str:
        if self.drift:
            d = self.drift
            return (f"depth drift, ONNX Runtime CUDA as shipped (TF32) against use_tf32=0: max {d['max_mm']:.3g} mm "
                    f"({d['max_steps']:.3g} depth steps), p99 {d['p99_mm']:.3g} mm ({d['p99_steps']:.3g} steps); "
                    f"one step = {d['step_mm']:.3g} mm")
        return f"depth drift not measured: {self.skipped}"

    def section(self) -> str:
        """The warning block printed after the legs (empty for a graph TF32 cannot touch)."""
        if not self.nodes:
            return ""
        listed = ", ".join(self.nodes[:8]) + (f" (+{len(self.nodes) - 8} more)" if len(self.nodes) > 8 else "")
        return "\n".join([
            f"WARNING TF32 exposure of {self.graph}: the sampling grid is computed by nodes that TF32 rounds to 10 "
            "mantissa bits (ONNX Runtime's CUDA provider and trtexec allow TF32 by default); a fraction of a pixel "
            "of grid error becomes millimetres of depth through the bilinear warp",
            f"  -> nodes: {listed}",
            f"  -> {self.drift_line()}",
            f"  -> fix: {NO_TF32}",
            f"  -> or fix: {SAFE_EXPORT}",
        ])

    def as_dict(self) -> dict[str, Any]:
        return {"graph": self.graph, "nodes": list(self.nodes), "drift": dict(self.drift), "skipped": self.skipped}


def depth_drift(shipped: torch.Tensor, strict: torch.Tensor, step_mm: float) -> dict[str, float]:
    """Max and 99th percentile of |shipped - strict| depth (mm, and in depth steps of ``step_mm``)."""
    diff = (shipped.detach().double().cpu() - strict.detach().double().cpu()).abs().flatten()
    max_mm, p99_mm = float(diff.max()), float(torch.quantile(diff, 0.99))
    return {"max_mm": max_mm, "p99_mm": p99_mm, "max_steps": max_mm / step_mm, "p99_steps": p99_mm / step_mm,
            "step_mm": step_mm}


def tf32_exposure(chain: Chain, target: Any, measure: bool = True) -> Tf32Exposure:
    """The exposure of ``target`` (a ``harness.check.UserTarget`` of kind onnx, bound), with the
    drift measured on ONNX Runtime CUDA when ``measure`` and the CUDA provider is available."""
    import onnx

    from harness.backends import registry
    from harness.report.replay_gates import depth_step_of

    nodes = tuple(tf32_exposed_nodes(onnx.load(str(target.path))))
    name = target.path.name
    if not nodes:
        return Tf32Exposure(name, ())
    if not measure:
        return Tf32Exposure(name, nodes, skipped="--backends has no ONNX Runtime CUDA leg (add ort-cuda to measure it)")
    missing = registry.get("ort-cuda-default").available()
    if missing is not None:
        return Tf32Exposure(name, nodes, skipped=f"no CUDA execution provider here ({missing}); run check on a machine "
                            "with an NVIDIA GPU and onnxruntime-gpu to measure it")
    inputs, outputs = target.binding.input_roles(), target.binding.output_roles()
    feed = chain.case_feed(target.case)
    depths = {}
    try:
        for options in ("default", "strict"):
            runner = chain.user_onnx_runner(target.path, inputs, outputs, "cuda", f"tf32-{target.stem}-{options}",
                                            options)
            depths[options] = runner.infer({role: feed[role] for role in runner.input_names})["depth"]
    except HarnessError as exc:  # the graph's own faults are the legs' to report
        return Tf32Exposure(name, nodes, skipped=f"ONNX Runtime CUDA could not run it: {str(exc)[:200]}")
    return Tf32Exposure(name, nodes, depth_drift(depths["default"], depths["strict"],
                                                 depth_step_of(feed["depth_values"])))
