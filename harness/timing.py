"""Measurement only: warm-up, rounds, clocks; statistics computed once from the finished samples.

On CUDA the clock is a pair of CUDA events recorded on the caller's stream around the call (the
runners make their own streams wait on it and it on them, so the events bracket all their work);
on the CPU it is ``time.perf_counter``. Percentiles follow trtexec: sort ascending and take the
element at index ``n - 1 - floor((1 - p/100) * n)``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from harness.errors import InvalidArgument

COV_WARN = 0.025  # trtexec's "unstable" threshold for GPU compute time


@dataclass(frozen=True)
class TimingConfig:
    """Warm-up by time *and* count; measure at least ``min_rounds`` and ``min_seconds``."""

    warmup_ms: float = 200.0
    warmup_rounds: int = 3
    min_rounds: int = 10
    min_seconds: float = 1.0
    max_rounds: int = 2000

    def __post_init__(self) -> None:
        if self.min_rounds < 1 or self.max_rounds < self.min_rounds:
            raise InvalidArgument("timing rounds", "inconsistent", observed=f"min {self.min_rounds}, max {self.max_rounds}",
                                  expected="1 <= min_rounds <= max_rounds")
        if self.warmup_ms < 0 or self.min_seconds < 0:
            raise InvalidArgument("timing", "negative duration", observed=f"{self.warmup_ms} ms / {self.min_seconds} s", expected=">= 0")


PROFILES: dict[str, TimingConfig] = {
    "quick": TimingConfig(warmup_ms=200, warmup_rounds=3, min_rounds=10, min_seconds=1.0),
    "full": TimingConfig(warmup_ms=500, warmup_rounds=5, min_rounds=20, min_seconds=3.0),
}


def percentile(sorted_ms: tuple[float, ...], p: float) -> float:
    """trtexec's percentile of an ascending sample."""
    n = len(sorted_ms)
    # round before floor: (1 - 0.9) * 100 is 9.999... in binary floating point
    index = n - 1 - int(math.floor(round((100.0 - p) * n / 100.0, 9)))
    return sorted_ms[max(0, min(n - 1, index))]


@dataclass(frozen=True)
class TimingStats:
    """Statistics of one measurement; build with ``from_samples``. Times in milliseconds."""

    clock: str
    rounds: int
    min_ms: float
    median_ms: float
    mean_ms: float
    std_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    cov: float
    total_s: float
    samples_ms: tuple[float, ...] = field(repr=False, default=())

    @classmethod
    def from_samples(cls, samples_ms: list[float] | tuple[float, ...], clock: str) -> TimingStats:
        if not samples_ms:
            raise InvalidArgument("timing samples", "empty", observed=0, expected="at least one sample")
        ordered = tuple(sorted(float(s) for s in samples_ms))
        mean = statistics.fmean(ordered)
        std = statistics.stdev(ordered) if len(ordered) > 1 else 0.0
        return cls(
            clock=clock, rounds=len(ordered), min_ms=ordered[0], median_ms=statistics.median(ordered), mean_ms=mean,
            std_ms=std, p90_ms=percentile(ordered, 90), p95_ms=percentile(ordered, 95), p99_ms=percentile(ordered, 99),
            max_ms=ordered[-1], cov=std / mean if mean > 0 else 0.0, total_s=sum(ordered) / 1000.0,
            samples_ms=tuple(float(s) for s in samples_ms),
        )

    def warnings(self, config: TimingConfig | None = None) -> list[str]:
        """Health warnings in trtexec's spirit."""
        found = []
        if self.cov > COV_WARN:
            advice = ("lock the GPU clocks, close other GPU work" if self.clock == "cuda-events"
                      else "close other CPU work; pin the CPU frequency governor to performance")
            found.append(f"unstable: coefficient of variation {self.cov:.1%} > {COV_WARN:.1%} ({advice})")
        if config is not None and self.rounds < config.min_rounds:
            found.append(f"too few rounds: {self.rounds} < {config.min_rounds}")
        if self.rounds < 10:
            found.append(f"only {self.rounds} rounds: percentiles above p90 are the maximum")
        return found

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("samples_ms")
        return data


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, config: TimingConfig = TimingConfig()) -> TimingStats:
    """Time ``fn`` (one inference) after warm-up; CUDA events on the current stream on CUDA."""
    device = torch.device(device)
    started = time.perf_counter()
    rounds = 0
    while rounds < config.warmup_rounds or (time.perf_counter() - started) * 1000.0 < config.warmup_ms:
        fn()
        rounds += 1
        _sync(device)
    samples: list[float] = []
    began = time.perf_counter()
    while len(samples) < config.max_rounds and (
        len(samples) < config.min_rounds or time.perf_counter() - began < config.min_seconds
    ):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1000.0)
    return TimingStats.from_samples(samples, "cuda-events" if device.type == "cuda" else "perf_counter")


def measure_host_round_trip(
    fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    host_feed: dict[str, torch.Tensor],
    device: torch.device,
    config: TimingConfig = TimingConfig(),
) -> TimingStats:
    """End-to-end time with the copies: host inputs -> device, ``fn``, outputs -> host."""
    pinned = {k: v.pin_memory() if device.type == "cuda" else v for k, v in host_feed.items()}

    def round_trip() -> None:
        feed = {k: v.to(device, non_blocking=True) for k, v in pinned.items()}
        out = fn(feed)
        for value in out.values():
            value.to("cpu")

    return measure(round_trip, device, config)
