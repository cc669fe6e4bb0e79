"""MVSNet (checkpoint-compatible with MVSNet_pytorch) and what the harness needs around it."""

from harness.model.checkpoint import extract_state_dict, load_checkpoint, save_checkpoint, state_dict_digest
from harness.model.geometry import inverse_closed_form, inverse_precomputed, warp_source_volume
from harness.model.init import plane_sweep_init
from harness.model.mvsnet import OUTPUT_NAMES, MVSNet, depth_regression, photometric_confidence, to_mixed_precision

__all__ = [
    "MVSNet", "OUTPUT_NAMES", "depth_regression", "extract_state_dict", "inverse_closed_form", "inverse_precomputed",
    "load_checkpoint", "photometric_confidence", "plane_sweep_init", "save_checkpoint", "state_dict_digest",
    "to_mixed_precision", "warp_source_volume",
]
