"""RenamedRunner: a graph whose tensors have other names than the harness's roles."""

from __future__ import annotations

import torch

from harness.backends.base import Runner
from harness.backends.renamed import renamed


class SizesItsOutputs(Runner):
    """Stands in for ONNX Runtime on CUDA: it allocates its outputs from the feed it is given,
    which arrives under the graph's own names."""

    input_names = ("images", "projections", "hypotheses")

    def _infer(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"out_depth": torch.zeros(self.output_shape(feed, "out_depth")),
                "out_conf": torch.ones(self.output_shape(feed, "out_conf"))}


def test_the_wrapped_runner_sizes_outputs_from_a_feed_under_the_graphs_names():
    """Was a KeyError('imgs') in `harness check` of a user graph with other tensor names on
    ort-cuda: the output shapes were asked with the graph-named feed."""
    runner = renamed(SizesItsOutputs(validate_values=False), {"imgs": "images", "proj_matrices": "projections", "depth_values": "hypotheses"},
                     {"out_depth": "depth", "out_conf": "photometric_confidence"}, "user-ort-cuda")
    feed = {"imgs": torch.rand(1, 3, 3, 128, 160), "proj_matrices": torch.eye(4).repeat(1, 3, 1, 1),
            "depth_values": torch.linspace(425.0, 935.0, 48).unsqueeze(0)}
    out = runner.infer(feed)
    batch, _, _, height, width = feed["imgs"].shape
    assert set(out) == {"depth", "photometric_confidence"}
    assert tuple(out["depth"].shape) == tuple(out["photometric_confidence"].shape) == (batch, height // 4, width // 4)
