"""harness.hostmem: glibc keeps the freed pages of big blocks for reuse, so a model run does not
fault every page of its tensors in again. Checked on what it changes: the page faults of
allocating, touching and freeing the same big block twice, in a fresh process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from harness import hostmem

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
#: Allocate, touch (bytearray zero-fills) and free 128 MiB three times, the last after give_back();
#: print what was set and the minor page faults of the last two rounds.
ROUNDS = """
import json, resource
from harness.hostmem import give_back, keep_freed_blocks
done = keep_freed_blocks()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = bytearray(128 << 20)
del block
before = faults()
block = bytearray(128 << 20)
del block
reused = faults() - before
give_back()  # between legs: the heap's free pages go back to the system
before = faults()
block = bytearray(128 << 20)
del block
print(json.dumps({"done": done, "faults": reused, "after_give_back": faults() - before}))
"""
PAGES = (128 << 20) // 4096


def _rounds(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in (*hostmem.GLIBC_ENV, hostmem.OPT_OUT_ENV)}
    done = subprocess.run([sys.executable, "-c", ROUNDS], env={**clean, **env}, capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only (the setting does nothing elsewhere)")
def test_a_freed_big_block_is_reused_without_faulting_its_pages_in_again():
    tuned = _rounds()
    assert tuned["done"].startswith("blocks up to 2047 MiB reused from the heap")
    assert tuned["faults"] < PAGES // 50, tuned  # reused: its pages are still mapped
    assert tuned["after_give_back"] > PAGES // 2, tuned  # given back: faulted in again
    default = _rounds(HARNESS_MALLOC="default")
    assert default["done"] == "glibc defaults (HARNESS_MALLOC=default)"
    assert default["faults"] > PAGES // 2, default  # glibc's default: unmapped on free, every page faulted again
    assert default["after_give_back"] > PAGES // 2, default  # give_back does nothing there


def test_the_users_own_glibc_settings_are_left_alone():
    assert hostmem._apply({"MALLOC_TRIM_THRESHOLD_": "0"}) == "left as set by MALLOC_TRIM_THRESHOLD_"
    assert hostmem._apply({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536",
                           "MALLOC_MMAP_THRESHOLD_": "65536"}) == \
        "left as set by MALLOC_MMAP_THRESHOLD_, GLIBC_TUNABLES"
    assert hostmem._apply({"HARNESS_MALLOC": "Default"}) == "glibc defaults (HARNESS_MALLOC=default)"


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_a_torch_built_for_cuda_keeps_glibcs_defaults(monkeypatch):
    # on the H200 the main job took 105 and 115 s with the setting, 100 and 104 s without it
    monkeypatch.setattr(hostmem, "torch_build", lambda: "2.11.0+cu130")
    assert hostmem._apply({}) == "glibc defaults (torch 2.11.0+cu130 is not a +cpu build: measured no gain beside a GPU)"
    monkeypatch.setattr(hostmem, "torch_build", lambda: "2.13.0")  # PyPI's Linux wheel: a CUDA build, untagged
    assert hostmem._apply({}).startswith("glibc defaults (torch 2.13.0 is not")


def test_once_per_process_and_doctor_says_what_was_set(capsys):
    from harness.cli import main

    first = hostmem.keep_freed_blocks()
    assert hostmem.keep_freed_blocks({"HARNESS_MALLOC": "default"}) == first  # set once: later calls report it
    assert main(["doctor", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["allocator"] == first


def test_the_chain_gives_the_heap_back_after_each_leg(tmp_path, monkeypatch):
    import harness.chain as chain_module
    from harness.chain import MODEL_LEG, Chain, ChainConfig, Leg

    calls: list[int] = []
    monkeypatch.setattr(chain_module, "give_back", lambda: calls.append(1))
    Chain(ChainConfig(device="cpu", cache_dir=tmp_path)).release(Leg("torch-aoti", *MODEL_LEG, "small"))
    assert calls == [1]


def test_doctor_reports_what_the_front_set_and_sets_nothing(tmp_path, monkeypatch):
    from harness import doctor

    monkeypatch.setattr(hostmem, "_applied", None)  # as in a process no harness front started
    monkeypatch.setattr(hostmem, "_keeping", False)
    assert doctor.probe(tmp_path)["allocator"] == "glibc defaults (not set: no harness front started this process)"
    assert hostmem._applied is None and hostmem._keeping is False
