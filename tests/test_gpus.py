"""Unit tests of harness/gpus.py: GPU lists, worker -> GPU assignment, pinning a worker through its
environment, and the merged per-GPU table with its spread."""

from __future__ import annotations

import math
import os

import pytest
import torch

from harness.errors import HarnessError, InvalidArgument
from harness.gpus import (
    CPU_THREADS_ENV,
    PHYSICAL_GPU_ENV,
    ROW_FIELD,
    CudaAlreadyInitialised,
    check_worker_count,
    cpu_share,
    gpu_for_worker,
    merge_by_gpu,
    parse_gpus,
    physical_gpu,
    pin_worker,
    spread,
    worker_index,
)

H200 = "NVIDIA H200"


def _message(exc: pytest.ExceptionInfo[BaseException]) -> str:
    return str(exc.value)


# -- parse_gpus ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "available", "expected"), [
    ("all", 2, (0, 1)), ("ALL", 1, (0,)), (" all ", 4, (0, 1, 2, 3)),
    ("0,1,3", 4, (0, 1, 3)), ("3, 0", 4, (3, 0)), ("1", 2, (1,)), ("0,1,", 2, (0, 1)),
])
def test_parse_gpus_reads_all_and_comma_lists(text, available, expected):
    assert parse_gpus(text, available) == expected


def test_parse_gpus_refuses_all_without_a_cuda_device():
    with pytest.raises(InvalidArgument) as exc:
        parse_gpus("all", 0)
    assert _message(exc) == ("--harness-gpus | no CUDA device: 'all' with 0 GPUs visible. Expected: a machine with a "
                             "CUDA GPU. Fix: run without --harness-gpus, or on a GPU machine.")


def test_parse_gpus_refuses_duplicates():
    with pytest.raises(InvalidArgument, match=r"^--harness-gpus \| duplicate GPU index: 1 in 0,1,1\. "
                                              r"Expected: each GPU once .* Fix: list each GPU once\.$"):
        parse_gpus("0,1,1", 4)


def test_parse_gpus_refuses_negative_indices():
    with pytest.raises(InvalidArgument, match=r"^--harness-gpus \| GPU index out of range: -1\. "
                                              r"Expected: 0\.\.1: 2 GPU\(s\) visible\. Fix: "):
        parse_gpus("0,-1", 2)


def test_parse_gpus_refuses_an_index_beyond_the_visible_gpus_naming_how_many_are_visible():
    with pytest.raises(InvalidArgument) as exc:
        parse_gpus("0,2", 2)
    assert _message(exc) == ("--harness-gpus | GPU index out of range: 2. Expected: 0..1: 2 GPU(s) visible. "
                             "Fix: pass --harness-gpus all, or check CUDA_VISIBLE_DEVICES.")


def test_parse_gpus_out_of_range_on_a_machine_without_gpus_names_no_cuda_device():
    with pytest.raises(InvalidArgument) as exc:
        parse_gpus("0", 0)
    assert _message(exc) == ("--harness-gpus | GPU index out of range: 0. Expected: a GPU: no CUDA device. "
                             "Fix: pass --harness-gpus all, or check CUDA_VISIBLE_DEVICES.")


@pytest.mark.parametrize("text", ["", " ", ",", " , ,"])
def test_parse_gpus_refuses_empty_lists(text):
    with pytest.raises(InvalidArgument, match=r"^--harness-gpus \| empty list: .* Fix: pass --harness-gpus all\.$"):
        parse_gpus(text, 2)


@pytest.mark.parametrize("text", ["a", "0,one", "1.5", "cuda:0"])
def test_parse_gpus_refuses_what_is_not_an_index(text):
    with pytest.raises(InvalidArgument, match=r"not a GPU index: '.+'\. Expected: all, or integers"):
        parse_gpus(text, 2)


def test_parse_gpus_errors_are_value_errors_of_the_harness():
    with pytest.raises(ValueError):
        parse_gpus("", 1)
    with pytest.raises(HarnessError):
        parse_gpus("", 1)


# -- worker_index, gpu_for_worker, check_worker_count -------------------------------------------

@pytest.mark.parametrize(("worker_id", "expected"), [("gw0", 0), ("gw1", 1), ("gw12", 12), ("master", 0)])
def test_worker_index_reads_xdist_ids(worker_id, expected):
    assert worker_index(worker_id) == expected


@pytest.mark.parametrize("worker_id", ["", "gw", "gw-1", "gwx", "worker0", "gw1 ", "Master"])
def test_worker_index_refuses_other_ids(worker_id):
    with pytest.raises(InvalidArgument, match=r"^worker id \| not a pytest-xdist worker id: .* "
                                              r"Expected: gw0, gw1, \.\.\. or master\.$"):
        worker_index(worker_id)


def test_all_with_two_gpus_gives_worker_gw0_gpu_0_and_gw1_gpu_1():
    gpus = parse_gpus("all", 2)
    assert [gpu_for_worker(w, gpus) for w in ("gw0", "gw1")] == [0, 1]


def test_worker_n_owns_the_nth_listed_gpu():
    gpus = parse_gpus("3,1", 4)
    assert gpu_for_worker("gw0", gpus) == 3
    assert gpu_for_worker("gw1", gpus) == 1
    assert gpu_for_worker("master", gpus) == 3


def test_more_workers_than_gpus_is_refused_saying_how_many_workers_to_use():
    with pytest.raises(InvalidArgument) as exc:
        gpu_for_worker("gw2", (0, 1))
    assert _message(exc) == ("--harness-gpus | more workers than GPUs: worker gw2 with 2 GPU(s) [0, 1]. "
                             "Expected: each worker owns one GPU. Fix: run with -n 2.")


def test_check_worker_count_accepts_one_worker_per_gpu():
    check_worker_count(2, (0, 1))
    check_worker_count(1, (3,))


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_check_worker_count_refuses_another_number_of_workers(workers):
    with pytest.raises(InvalidArgument, match=rf"worker count differs from GPU count: {workers} worker\(s\) for 2 "
                                              r"GPU\(s\) \[0, 1\]\. Expected: one worker per GPU\. Fix: run with -n 2\.$"):
        check_worker_count(workers, (0, 1))


# -- pin_worker, physical_gpu -------------------------------------------------------------------

def test_pin_worker_makes_the_workers_gpu_the_only_visible_one_and_records_it():
    environ: dict[str, str] = {"PATH": "/bin"}
    assert pin_worker("gw1", (0, 1), environ) == 1
    assert environ == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1", PHYSICAL_GPU_ENV: "1"}
    assert physical_gpu(environ) == 1


def test_pin_worker_changes_only_the_mapping_it_is_given():
    before = dict(os.environ)
    environ: dict[str, str] = {}
    pin_worker("gw0", (2,), environ)
    assert environ == {"CUDA_VISIBLE_DEVICES": "2", PHYSICAL_GPU_ENV: "2"}
    assert dict(os.environ) == before


def test_pin_worker_maps_through_an_inherited_cuda_visible_devices():
    environ = {"CUDA_VISIBLE_DEVICES": "4, 6"}  # the controller saw two GPUs: physical 4 and 6
    assert pin_worker("gw1", parse_gpus("all", 2), environ) == 6
    assert environ == {"CUDA_VISIBLE_DEVICES": "6", PHYSICAL_GPU_ENV: "6"}


@pytest.mark.parametrize("inherited", ["4", "", "GPU-8a1b,GPU-77c2"])
def test_pin_worker_refuses_an_inherited_list_it_cannot_map(inherited):
    environ = {"CUDA_VISIBLE_DEVICES": inherited}
    with pytest.raises(InvalidArgument, match=r"^CUDA_VISIBLE_DEVICES \| cannot map GPU index to a physical GPU: "
                                              r"index 1 in .* Fix: unset CUDA_VISIBLE_DEVICES"):
        pin_worker("gw1", (0, 1), environ)
    assert environ == {"CUDA_VISIBLE_DEVICES": inherited}


def test_pin_worker_refuses_more_workers_than_gpus_and_leaves_the_environment_alone():
    environ: dict[str, str] = {}
    with pytest.raises(InvalidArgument, match="more workers than GPUs"):
        pin_worker("gw1", (0,), environ)
    assert environ == {}


def test_pin_worker_refuses_once_torch_has_initialised_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    environ: dict[str, str] = {}
    with pytest.raises(CudaAlreadyInitialised) as exc:
        pin_worker("gw0", (0,), environ)
    assert isinstance(exc.value, RuntimeError) and isinstance(exc.value, HarnessError)
    assert _message(exc) == ("gw0 | CUDA already initialised before pinning the worker to its GPU: "
                             "torch.cuda.is_initialized() is True. Expected: pin_worker before any CUDA call. "
                             "Fix: call harness.gpus.pin_worker first in pytest_configure.")
    assert environ == {}


def test_physical_gpu_is_none_in_a_process_that_was_not_pinned():
    assert physical_gpu({}) is None
    assert physical_gpu({PHYSICAL_GPU_ENV: ""}) is None


# -- merge_by_gpu, spread -----------------------------------------------------------------------

def _row(index: int | None, case: str, backend: str, median_ms: float | None, gpu: str | None = H200) -> dict:
    return {"gpu": gpu, ROW_FIELD: index, "case": case, "backend": backend, "median_ms": median_ms}


ROWS = [
    _row(1, "seed", "torch-fp32", 11.0), _row(0, "seed", "torch-fp32", 10.0),
    _row(0, "seed", "ort-cuda-raw", 4.0), _row(0, "seed", "ort-cuda-raw", 6.0), _row(0, "seed", "ort-cuda-raw", 5.0),
    _row(1, "seed", "ort-cuda-raw", 5.5),
    _row(1, "dtu", "torch-fp32", None),  # skipped on GPU 1: no timing
    {"gpu": H200, ROW_FIELD: 1, "case": "seed", "candidate": "ort-cpu", "passed": True},  # a parity row
]


def test_merge_by_gpu_gives_one_row_per_physical_gpu_with_the_median_per_case_and_backend():
    assert merge_by_gpu(ROWS) == [
        {"gpu": H200, ROW_FIELD: 0, "seed ort-cuda-raw median ms": 5.0, "seed torch-fp32 median ms": 10.0},
        {"gpu": H200, ROW_FIELD: 1, "seed ort-cuda-raw median ms": 5.5, "seed torch-fp32 median ms": 11.0},
    ]


def test_merge_by_gpu_keeps_identical_gpu_models_apart_and_puts_unpinned_rows_last():
    rows = [_row(None, "small", "torch-fp32", 100.0, gpu=None), _row(7, "small", "torch-fp32", 2.0),
            _row(2, "small", "torch-fp32", 3.0)]
    merged = merge_by_gpu(rows)
    assert [(r["gpu"], r[ROW_FIELD]) for r in merged] == [(H200, 2), (H200, 7), ("cpu", None)]
    assert merged[2]["small torch-fp32 median ms"] == 100.0


def test_merge_by_gpu_reads_parity_rows_timed_under_candidate():
    rows = [{"gpu": H200, ROW_FIELD: 0, "case": "small", "candidate": "trt-fp16", "median_ms": 1.5}]
    assert merge_by_gpu(rows) == [{"gpu": H200, ROW_FIELD: 0, "small trt-fp16 median ms": 1.5}]


def test_merge_by_gpu_of_no_timed_rows_is_empty():
    assert merge_by_gpu([]) == []
    assert merge_by_gpu([_row(0, "seed", "torch-fp32", None)]) == []


def test_spread_is_max_minus_min_over_the_median_of_the_per_gpu_medians():
    result = spread(ROWS)
    assert set(result) == {("seed", "ort-cuda-raw"), ("seed", "torch-fp32")}
    assert result[("seed", "torch-fp32")] == pytest.approx((11.0 - 10.0) / 10.5)
    assert result[("seed", "ort-cuda-raw")] == pytest.approx((5.5 - 5.0) / 5.25)


def test_spread_over_three_gpus_uses_the_middle_gpu_as_median():
    rows = [_row(i, "seed", "torch-fp32", ms) for i, ms in enumerate((9.0, 10.0, 12.0))]
    assert spread(rows) == {("seed", "torch-fp32"): pytest.approx(0.3)}


def test_spread_on_one_gpu_is_zero():
    assert spread([_row(0, "seed", "torch-fp32", 10.0), _row(0, "seed", "torch-fp32", 12.0)]) == {
        ("seed", "torch-fp32"): 0.0}


def test_spread_with_a_zero_median_is_zero_when_equal_and_infinite_otherwise():
    assert spread([_row(0, "s", "b", 0.0), _row(1, "s", "b", 0.0)]) == {("s", "b"): 0.0}
    assert math.isinf(spread([_row(0, "s", "b", 0.0), _row(1, "s", "b", 0.0), _row(2, "s", "b", 1.0)])[("s", "b")])


# -- the host's CPU cores shared among xdist workers ----------------------------------------------

@pytest.mark.parametrize(("workers", "cores", "expected"), [("4", 16, 4), ("3", 16, 5), ("8", 4, 1), ("1", 2, 2)])
def test_cpu_share_divides_the_cores_among_xdist_workers(workers, cores, expected):
    assert cpu_share({"PYTEST_XDIST_WORKER_COUNT": workers}, cores=cores) == expected


def test_cpu_share_outside_xdist_leaves_the_libraries_defaults():
    assert cpu_share({}, cores=16) is None


def test_cpu_share_takes_harness_cpu_threads_over_the_worker_count():
    assert cpu_share({CPU_THREADS_ENV: "3", "PYTEST_XDIST_WORKER_COUNT": "4"}, cores=16) == 3
    assert cpu_share({CPU_THREADS_ENV: "6"}, cores=2) == 6


@pytest.mark.parametrize("text", ["0", "-2", "four", "1.5"])
def test_cpu_share_refuses_a_thread_count_that_is_not_a_positive_whole_number(text):
    with pytest.raises(InvalidArgument) as info:
        cpu_share({CPU_THREADS_ENV: text})
    assert CPU_THREADS_ENV in _message(info) and repr(text) in _message(info) and "unset" in _message(info)


def test_an_xdist_worker_gives_torch_its_share_of_the_cores(monkeypatch):
    from harness import plugin

    before = torch.get_num_threads()
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv(CPU_THREADS_ENV, "1")
    try:
        plugin._share_cpus()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
