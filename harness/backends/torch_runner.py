"""PyTorch eager runner: the reference. CPU, or CUDA when present.

Precisions: ``fp32`` is strict (TF32 off for cuDNN convolutions and matmuls), ``tf32`` is
PyTorch's default on CUDA (TF32 convolutions), ``fp16`` is autocast. The global TF32 flags are
set around each call and restored, so one runner cannot change another's numbers.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any, Literal

import torch

from harness.backends.base import Runner
from harness.convert.workarounds import INPUTS_WITH_INVERSE, INPUTS_WITHOUT_INVERSE
from harness.errors import BackendUnavailable, InvalidArgument
from harness.model.mvsnet import MVSNet

Precision = Literal["fp32", "tf32", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "tf32", "fp16")


@contextlib.contextmanager
def tf32_state(enabled: bool) -> Iterator[None]:
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class TorchRunner(Runner):
    """Runs ``MVSNet`` eagerly.

    Args:
        model: the network (moved to ``device``; not copied).
        device: ``"cpu"`` or ``"cuda[:i]"``.
        precision: see module docstring; ``tf32``/``fp16`` need CUDA.
        with_inverse: accept ``inverse_proj_matrices`` (the precomputed workaround) instead of
            inverting inside the model (``torch.inverse``, the original three-input call).
    """

    def __init__(
        self,
        model: MVSNet,
        device: str | torch.device = "cpu",
        precision: Precision = "fp32",
        with_inverse: bool = False,
        validate_values: bool = True,
    ) -> None:
        super().__init__(validate_values)
        if precision not in PRECISIONS:
            raise InvalidArgument("torch precision", "unknown precision", precision, " / ".join(PRECISIONS))
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"torch-{precision}", "no CUDA device", "run on a machine with an NVIDIA GPU")
        if precision != "fp32" and self.device.type != "cuda":
            raise BackendUnavailable(f"torch-{precision}", f"{precision} needs a CUDA device (no CUDA device)",
                                     "run on a GPU machine; on CPU only torch-fp32 exists")
        # a runner owns its copy on another device: moving the caller's model in place would
        # break everyone else holding it (the exporters, other runners)
        on_device = next(model.parameters()).device
        self.model = model if on_device == self.device else copy.deepcopy(model)
        self.precision = precision
        self.with_inverse = with_inverse
        self.input_names = INPUTS_WITH_INVERSE if with_inverse else INPUTS_WITHOUT_INVERSE
        self.name = f"torch-{precision}" + ("" if self.device.type == "cpu" else "-cuda")

    def _prepare(self) -> None:
        self.model.to(self.device).eval()

    def _infer(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        autocast = (
            torch.autocast("cuda", dtype=torch.float16) if self.precision == "fp16" else contextlib.nullcontext()
        )
        with torch.inference_mode(), tf32_state(self.precision == "tf32"), autocast:
            out = self.model(
                feed["imgs"], feed["proj_matrices"], feed["depth_values"], feed.get("inverse_proj_matrices")
            )
        return {k: v.float() for k, v in out.items()}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(), "runtime": "torch", "torch": torch.__version__, "precision": self.precision,
            "tf32": self.precision == "tf32", "inverse": "input" if self.with_inverse else "torch.inverse",
        }
