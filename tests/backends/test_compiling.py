"""Unit tests of harness/backends/compiling.py: where Inductor caches, with fakes (no compile)."""

from __future__ import annotations

import os

import pytest

from harness.backends.compiling import INDUCTOR_CACHE_ENV, inductor_cache, inductor_cache_dir


def test_inductor_caches_under_the_harness_cache_when_the_chain_gives_one(tmp_path, monkeypatch):
    monkeypatch.delenv(INDUCTOR_CACHE_ENV, raising=False)
    assert inductor_cache_dir(tmp_path) == tmp_path / "inductor"
    assert inductor_cache_dir(None) is None


def test_a_folder_the_user_set_wins_but_inductors_own_default_does_not(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv(INDUCTOR_CACHE_ENV, str(tmp_path / "mine"))
    assert inductor_cache_dir(tmp_path) is None
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, default_cache_dir())  # what Inductor writes at its first compile
    assert inductor_cache_dir(tmp_path) == tmp_path / "inductor"


@pytest.mark.parametrize("before", [None, "/somewhere/else"])
def test_the_cache_folder_holds_for_the_block_and_is_put_back(tmp_path, monkeypatch, before):
    if before is None:
        monkeypatch.delenv(INDUCTOR_CACHE_ENV, raising=False)
    else:
        monkeypatch.setenv(INDUCTOR_CACHE_ENV, before)
    folder = tmp_path / "cache" / "inductor"
    with pytest.raises(RuntimeError, match="compile failed"), inductor_cache(folder):
        assert os.environ[INDUCTOR_CACHE_ENV] == str(folder.resolve()) and folder.is_dir()
        raise RuntimeError("compile failed")
    assert os.environ.get(INDUCTOR_CACHE_ENV) == before
    with inductor_cache(None):  # no folder: nothing changes
        assert os.environ.get(INDUCTOR_CACHE_ENV) == before
