"""A second model for the model seam: a small CNN that is not MVSNet, with its own ``ModelSpec``.

``run_toy_chain(work)`` takes it along the harness's model-neutral path: ``torch.onnx.export``
through the artifact cache, the ONNX Runtime runner with the toy's spec injected, ``compare``
against torch eager with gates from a tolerance table, ``timing.measure``, and a run record
written by ``harness.report.write.write_run``. Run as a script (``python tests/toymodel.py WORK``)
it does that in a fresh process and prints one JSON line: the summary, and which of MVSNet's
modules were loaded before and after (tests/test_second_model.py asserts there are none).

Nothing here imports MVSNet's modules (harness.model, harness.data, harness.convert.workarounds),
nor the backend registry (which imports every backend module, the torch runner among them).
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.backends.onnxruntime_runner import OrtRunner
from harness.compare import compare
from harness.convert.cache import ArtifactCache
from harness.errors import InvalidInput, ShapeError
from harness.gates.limits import Tolerances
from harness.modelspec import ModelSpec, OutputSpec
from harness.report.record import RunRecord
from harness.report.write import write_run
from harness.timing import TimingConfig, measure

#: What is MVSNet's, by module prefix (the seam's import check).
MVSNET_MODULES = ("harness.model", "harness.data", "harness.convert.workarounds")
OPSET = 17
SHAPE = (2, 3, 32, 48)  # [B, 3, H, W]
FEATURES = 4  # channels of the features output

#: The toy's parity gates, in the harness's format (fixtures/tolerances.toml holds MVSNet's).
#: Measured on CPU (torch 2.13 / onnxruntime 1.32), max |err|: mask 6e-8, features 3e-8; gate 1e-5.
TOLERANCES = """
[cpu."torch-vs-ort".fp32.mask]
max_abs = 1e-5
agreement = 1.0

[cpu."torch-vs-ort".fp32.features]
max_abs = 1e-5
"""


class ToyNet(nn.Module):
    """Image ``[B, 3, H, W]`` in; a mask ``[B, 1, H/2, W/2]`` in (0, 1) and features
    ``[B, 4, H/2, W/2]`` out (a tuple, in ``OUTPUT_NAMES`` order, so the export names them)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.mask_head = nn.Conv2d(16, 1, 1)
        self.feature_head = nn.Conv2d(16, FEATURES, 3, padding=1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.stem(image)
        return torch.sigmoid(self.mask_head(hidden)), self.feature_head(hidden)


def toy_model(seed: int = 0) -> ToyNet:
    torch.manual_seed(seed)
    return ToyNet().eval()


def validate_toy(feed: Mapping[str, torch.Tensor], *, subject: str, input_names: tuple[str, ...],
                 values: bool) -> None:
    """The toy's rules: one RGB image batch with even height and width; finite when ``values``."""
    image = feed["image"]
    if image.dim() != 4 or image.shape[1] != 3:
        raise ShapeError(f"{subject}: image", "wrong shape", observed=tuple(image.shape), expected="[B, 3, H, W]",
                         fix="stack RGB images on dim 0, channels first")
    if image.shape[2] % 2 or image.shape[3] % 2:
        raise ShapeError(f"{subject}: image", "odd image size", observed=tuple(image.shape[2:]), expected="even H and W",
                         fix="crop one row or column")
    if values and not bool(torch.isfinite(image).all()):
        raise InvalidInput(f"{subject}: image", "holds NaN or Inf", observed=int((~torch.isfinite(image)).sum()),
                           expected="finite values only", fix="check the image decoding")


def toy_output_shape(feed: Mapping[str, torch.Tensor], name: str | None = None) -> tuple[int, ...]:
    batch, _, height, width = feed["image"].shape
    return int(batch), FEATURES if name == "features" else 1, int(height) // 2, int(width) // 2


TOY_SPEC = ModelSpec(
    name="toy", title="Toy CNN", inputs=("image",),
    outputs=(OutputSpec("mask", "confidence", columns=(("max_abs", "mask max abs"), ("agreement", "mask agreement"))),
             OutputSpec("features")),
    validate=validate_toy, output_shape=toy_output_shape,
    feed_fix="feed one tensor named image ([B, 3, H, W])",
)


def eager(model: ToyNet, feed: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch eager outputs by name: the reference."""
    with torch.inference_mode():
        return dict(zip(TOY_SPEC.output_names, model(feed["image"])))


def toy_feed(seed: int = 1) -> dict[str, torch.Tensor]:
    return {"image": torch.rand(*SHAPE, generator=torch.Generator().manual_seed(seed))}


def export_onnx(model: ToyNet, path: Path) -> dict[str, Any]:
    """``torch.onnx.export`` (TorchScript exporter) at the toy's static shape; returns metadata."""
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (toy_feed()["image"],), str(path), dynamo=False, opset_version=OPSET,
                          input_names=list(TOY_SPEC.inputs), output_names=list(TOY_SPEC.output_names))
    return {"exporter": "torchscript", "opset": OPSET}


def weights_digest(model: nn.Module) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def toy_onnx(model: ToyNet, cache_root: Path) -> tuple[Path, str]:
    """The exported graph from the artifact cache (built on a miss); ``(path, cache status)``."""
    fields = {"model": TOY_SPEC.name, "weights": weights_digest(model), "opset": OPSET, "shape": list(SHAPE),
              "torch": torch.__version__}
    entry = ArtifactCache(cache_root).get_or_build("toy-onnx", fields, "toy.onnx", lambda p: export_onnx(model, p))
    return entry.path, entry.status


def run_toy_chain(work: Path) -> dict[str, Any]:
    """Export, run on ONNX Runtime CPU, compare with torch eager, time, and write a record."""
    work.mkdir(parents=True, exist_ok=True)
    model = toy_model()
    onnx_path, status = toy_onnx(model, work / "cache")
    feed = toy_feed()
    reference = eager(model, feed)
    with OrtRunner(onnx_path, "cpu", model_spec=TOY_SPEC) as runner:
        candidate = runner.infer(feed)
        table = work / "toy-tolerances.toml"
        table.write_text(TOLERANCES, encoding="utf-8")
        gates = Tolerances.load(table).lookup("torch-fp32", runner.name, "fp32", TOY_SPEC.output_names)
        diffs = compare(reference, candidate, gates, model_spec=TOY_SPEC)
        stats = measure(lambda: runner.infer(feed), runner.device,
                        TimingConfig(warmup_ms=0, warmup_rounds=1, min_rounds=5, min_seconds=0))
        passed = all(diffs.values())
        row = {"id": f"toy-{runner.name}-vs-torch-fp32", "case": "toy", "candidate": runner.name,
               "reference": "torch-fp32", "exporter": "torchscript", "variant": "raw", "precision": "fp32",
               "passed": passed,
               "metrics": {n: dict(d.metrics) for n, d in diffs.items()},
               "tolerance": {n: dict(d.tolerance) for n, d in diffs.items()},
               "artifact": {"onnx": str(onnx_path), "cache": status, "runner": runner.describe()}}
        timing = {"case": "toy", "backend": runner.name, "device": str(runner.device), "clock": stats.clock,
                  **stats.summary()}
    record = RunRecord(kind="run", profile="toy", config={"model": TOY_SPEC.name, "shape": list(SHAPE)},
                       parity=[row], timing=[timing])
    folder = write_run(record, work / "reports", model_spec=TOY_SPEC)
    return {"folder": str(folder), "passed": passed, "cache": status, "metrics": row["metrics"],
            "shapes": {n: list(t.shape) for n, t in candidate.items()}, "median_ms": stats.median_ms}


def loaded(prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in prefixes))


if __name__ == "__main__":
    before = loaded(MVSNET_MODULES)
    summary = run_toy_chain(Path(sys.argv[1]))
    print(json.dumps({"summary": summary, "mvsnet_before": before, "mvsnet_after": loaded(MVSNET_MODULES),
                      "harness": loaded(("harness",))}))
