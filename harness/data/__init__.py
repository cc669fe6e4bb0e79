"""Scenes and inputs: synthetic scenes with ground truth, the DTU format, cases."""

from harness.data.cases import CASES, Case, case_feed, case_views, get_case
from harness.data.dtu import Camera, read_cam_file, read_pair_file, write_cam_file, write_pair_file
from harness.data.pfm import read_pfm, write_pfm
from harness.data.synthetic import Scene, SceneSpec, render_scene
from harness.data.views import Views, depth_hypotheses, load_views, make_feed, projection_matrices

__all__ = [
    "CASES", "Camera", "Case", "Scene", "SceneSpec", "Views", "case_feed", "case_views", "depth_hypotheses",
    "get_case", "load_views", "make_feed", "projection_matrices", "read_cam_file", "read_pair_file", "read_pfm",
    "render_scene", "write_cam_file", "write_pair_file", "write_pfm",
]
