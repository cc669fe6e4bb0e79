"""Unit tests of harness/report/plots.py: headless PNG figures for report.md and comparisons."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from harness.report.plots import cross_gpu_plot, depth_difference_maps, latency_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _timed(case: str, backend: str, median: float, parity: bool = True) -> dict:
    return {"case": case, "backend": backend, "median_ms": median, "p90_ms": median * 1.05, "p99_ms": median * 1.2,
            "parity_passed": parity}


def _is_png(path) -> bool:
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return False
    with Image.open(path) as image:
        image.verify()
    return True


def _size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


ROWS = [_timed("small", "torch-fp32", 40.0), _timed("small", "ort-cpu-raw", 30.0),
        _timed("small", "ort-cpu-simplified", 28.0, parity=False),
        {"case": "small", "backend": "ort-cuda-raw", "skipped": "ort-cuda-raw: no CUDA device"},
        _timed("seed", "torch-fp32", 400.0)]


# -- latency -------------------------------------------------------------------------------------

def test_latency_plot_writes_a_png(tmp_path):
    path = latency_plot(ROWS, "small", tmp_path / "latency-small.png")
    assert path == tmp_path / "latency-small.png"
    assert _is_png(path)


def test_latency_plot_grows_with_the_number_of_backends(tmp_path):
    one = latency_plot(ROWS, "seed", tmp_path / "one.png")
    three = latency_plot(ROWS, "small", tmp_path / "three.png")
    assert one is not None and three is not None
    assert _size(three)[1] > _size(one)[1]  # one bar per timed backend; skipped rows take no row


def test_latency_plot_returns_none_without_timed_rows(tmp_path):
    skipped = [{"case": "small", "backend": "trt-fp16", "skipped": "trt: tensorrt not importable"}]
    assert latency_plot(skipped, "small", tmp_path / "x.png") is None
    assert latency_plot(ROWS, "dtu", tmp_path / "y.png") is None
    assert latency_plot([], "small", tmp_path / "z.png") is None
    assert not list(tmp_path.iterdir())


def test_latency_plot_creates_missing_folders(tmp_path):
    path = latency_plot(ROWS, "small", tmp_path / "a" / "b" / "latency.png", title="custom")
    assert path is not None and _is_png(path)


# -- depth differences ---------------------------------------------------------------------------

def test_depth_difference_maps_write_a_png(tmp_path):
    gen = torch.Generator().manual_seed(0)
    reference = 425.0 + 500.0 * torch.rand(1, 32, 40, generator=gen)
    candidates = {"ort-cpu-raw": reference + 1e-3 * torch.randn(1, 32, 40, generator=gen),
                  "ort-cpu-simplified": reference.clone()}
    path = depth_difference_maps(reference, candidates, tmp_path / "depth-diff-small.png")
    assert path == tmp_path / "depth-diff-small.png"
    assert _is_png(path)


def test_depth_difference_maps_take_many_backends_and_identical_outputs(tmp_path):
    reference = torch.full((1, 16, 24), 600.0)
    candidates = {f"backend-{i}": reference.clone() for i in range(5)}  # 2 rows of 3 panels, all zero
    path = depth_difference_maps(reference, candidates, tmp_path / "many.png", title="all equal")
    assert path is not None and _is_png(path)


def test_depth_difference_maps_return_none_without_candidates(tmp_path):
    assert depth_difference_maps(torch.zeros(1, 8, 8), {}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


# -- cross-GPU ---------------------------------------------------------------------------------

FLAT = [{"gpu": gpu, "case": case, "backend": backend, "median_ms": median}
        for gpu, factor in (("NVIDIA H100 80GB HBM3", 1.0), ("NVIDIA H200", 0.9))
        for case in ("seed", "dtu")
        for backend, median in (("torch-fp32", 60.0), ("ort-cuda-raw", 30.0), ("torch-fast-fp16", 10.0))
        if not (gpu == "NVIDIA H200" and backend == "torch-fast-fp16" and case == "dtu")]


def test_cross_gpu_plot_writes_a_png(tmp_path):
    path = cross_gpu_plot(FLAT, ["NVIDIA H100 80GB HBM3", "NVIDIA H200"], "seed", tmp_path / "cross-gpu-seed.png")
    assert path == tmp_path / "cross-gpu-seed.png"
    assert _is_png(path)


def test_cross_gpu_plot_takes_a_gpu_without_a_backend(tmp_path):
    path = cross_gpu_plot(FLAT, ["NVIDIA H100 80GB HBM3", "NVIDIA H200"], "dtu", tmp_path / "dtu.png")
    assert path is not None and _is_png(path)


@pytest.mark.parametrize("case_name", ["small", "nonexistent"])  # "case" is the plugin's fixture
def test_cross_gpu_plot_returns_none_for_a_case_without_rows(tmp_path, case_name):
    assert cross_gpu_plot(FLAT, ["NVIDIA H200"], case_name, tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_depth_difference_panels_carry_the_legs_gate_and_verdict(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    titles: list[tuple[str, object]] = []
    original = Axes.set_title

    def spy(self, label, *args, **kwargs):
        titles.append((label, kwargs.get("color")))
        return original(self, label, *args, **kwargs)

    monkeypatch.setattr(Axes, "set_title", spy)
    reference = torch.full((1, 16, 24), 600.0)
    candidates = {"ort-cpu raw": reference + 0.01, "trt-fp16 raw": reference + 3.0}
    captions = {"ort-cpu raw": "max_intervals 0.0079 <= 0.1\nleg: pass", "trt-fp16 raw": "p99_intervals 2 <= 0.35 FAIL\nleg: FAIL"}
    path = depth_difference_maps(reference, candidates, tmp_path / "d.png", captions=captions, failed={"trt-fp16 raw"})
    assert path is not None and _is_png(path)
    assert titles[0][0].startswith("ort-cpu raw\nmax 0.01") and titles[0][0].endswith(captions["ort-cpu raw"])
    assert titles[0][1] == "black"
    assert titles[1][0].endswith("p99_intervals 2 <= 0.35 FAIL\nleg: FAIL") and titles[1][1] == "C3"  # red
