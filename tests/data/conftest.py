"""Shared fixtures of the harness.data tests: one small rendered scene and its DTU-format folder.

Rendering is the expensive part, so the scene is rendered once per session (64x96, 4 views) and
tests that change the folder work on a copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.data.scenes import write_scene
from harness.data.synthetic import Scene, SceneSpec, render_scene

SMALL_SPEC = SceneSpec(seed=3, num_views=4, height=64, width=96)


@pytest.fixture(scope="session")
def small_scene() -> Scene:
    """A 4-view 64x96 synthetic scene (ground truth 16x24)."""
    return render_scene(SMALL_SPEC)


@pytest.fixture(scope="session")
def small_scene_dir(small_scene: Scene, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small_scene`` written as a DTU-format folder. Read-only by convention: copy it to change it."""
    return write_scene(small_scene, tmp_path_factory.mktemp("scenes") / "small")


@pytest.fixture
def scene_copy(small_scene_dir: Path, tmp_path: Path) -> Path:
    """A private, writable copy of ``small_scene_dir``."""
    return Path(shutil.copytree(small_scene_dir, tmp_path / "scene"))
