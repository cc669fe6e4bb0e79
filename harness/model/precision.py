"""What must stay FP32 in MVSNet's graphs, as data for the model-neutral precision audit
(``harness/convert/precision.py``).

Each region names the tensors it starts from and ends at with the audit's selectors:
``input:<name>`` / ``output:<name>`` (graph inputs and outputs, MVSNet's names; a user graph maps
them), ``<Op>.in<k>`` / ``<Op>.out<k>`` (tensor k of every node of that op type; ``A|B`` for
several), and ``first:<Op>.in<k>`` (only the nearest such nodes downstream of the region's start).
A region holds every node on a data path from a start to an end; ``ops`` regions hold every node
of those op types. Why each stays FP32 (TENSORRT_NOTES.md, FP16 pitfalls): FP16 grid coordinates
lose sub-pixel precision, the variance E[x^2] - E[x]^2 cancels, and the softmax over D and the
depth regression are long reductions.
"""

from __future__ import annotations

FP32_REGIONS: tuple[dict[str, object], ...] = (
    {"name": "projection and sampling grid",
     "from": ("input:proj_matrices", "input:inverse_proj_matrices", "input:depth_values"),
     "to": ("GridSample.in1",)},
    {"name": "GridSample", "ops": ("GridSample",)},
    {"name": "variance", "from": ("GridSample.out0",), "to": ("first:Conv|ConvTranspose.in0",)},
    {"name": "softmax and depth regression", "from": ("Softmax.in0",),
     "to": ("output:depth", "output:photometric_confidence")},
)

#: What MVSNet's FP16 graph computes in half precision (``harness/convert/mixed.py`` derives it
#: from the FP32 graph): every convolution (``seeds``), and every node of the ``follow`` op types
#: whose computed inputs all come from half-precision nodes: the batch norms, ReLUs and U-Net skip
#: Adds of FeatureNet and CostRegNet. Everything else (projection, grid, GridSample, the variance,
#: softmax, depth regression, confidence) stays FP32, as in ``to_mixed_precision``'s torch model.
FP16_OPS: dict[str, tuple[str, ...]] = {
    "seeds": ("Conv", "ConvTranspose"),
    "follow": ("BatchNormalization", "Relu", "Add"),
}
