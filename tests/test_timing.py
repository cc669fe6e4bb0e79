"""Unit tests of harness/timing.py: trtexec percentiles, frozen statistics, warm-up and rounds."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time

import pytest
import torch

from harness.errors import InvalidArgument
from harness.timing import COV_WARN, PROFILES, TimingConfig, TimingStats, measure, measure_host_round_trip, percentile

CPU = torch.device("cpu")


def _trtexec_index(n: int, p: float) -> int:
    """trtexec's index, in exact integer arithmetic: n - 1 - floor((1 - p/100) * n)."""
    exclude = (100 - int(p)) * n // 100  # p is a whole number in these tests
    return max(0, n - 1 - exclude)


ONE_TO_100 = tuple(float(i) for i in range(1, 101))
ONE_TO_10 = tuple(float(i) for i in range(1, 11))


# -- percentile ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("p", "expected"), [(50, 50.0), (90, 90.0), (95, 95.0), (99, 99.0), (100, 100.0)])
def test_percentile_of_1_to_100_is_the_trtexec_element(p, expected):
    assert percentile(ONE_TO_100, p) == expected


@pytest.mark.parametrize(("p", "expected"), [(50, 5.0), (90, 9.0), (95, 10.0), (99, 10.0)])
def test_percentile_of_ten_samples_is_the_trtexec_element(p, expected):
    # n=10: p90 excludes floor(0.1 * 10) = 1 sample -> index 8; p95/p99 exclude none -> the max
    assert percentile(ONE_TO_10, p) == expected


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 20, 33, 100, 1000])
@pytest.mark.parametrize("p", [50, 90, 95, 99])
def test_percentile_follows_trtexec_index_for_any_sample_size(n, p):
    ordered = tuple(float(i) for i in range(n))
    assert percentile(ordered, p) == ordered[_trtexec_index(n, p)]


def test_percentile_of_one_sample_is_that_sample():
    assert percentile((4.5,), 99) == 4.5
    assert percentile((4.5,), 0) == 4.5


# -- TimingStats ---------------------------------------------------------------------------------

def test_from_samples_computes_every_statistic():
    samples = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0]
    stats = TimingStats.from_samples(samples, "perf_counter")
    ordered = sorted(samples)
    assert stats.clock == "perf_counter"
    assert stats.rounds == 10
    assert stats.min_ms == 1.0
    assert stats.max_ms == 9.0
    assert stats.median_ms == statistics.median(samples) == 3.5
    assert stats.mean_ms == pytest.approx(3.9)
    assert stats.std_ms == pytest.approx(statistics.stdev(samples))  # sample standard deviation (n - 1)
    assert stats.cov == pytest.approx(statistics.stdev(samples) / 3.9)
    assert stats.total_s == pytest.approx(0.039)
    assert stats.p95_ms == ordered[9] == 9.0  # n=10: p95 and p99 exclude no sample
    assert stats.p99_ms == ordered[9] == 9.0


def test_from_samples_p90_of_ten_samples_excludes_the_largest():
    samples = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0]
    assert TimingStats.from_samples(samples, "perf_counter").p90_ms == sorted(samples)[8] == 6.0


def test_from_samples_of_1_to_100_has_trtexec_percentiles():
    stats = TimingStats.from_samples(list(reversed(ONE_TO_100)), "cuda-events")
    assert (stats.p90_ms, stats.p95_ms, stats.p99_ms) == (90.0, 95.0, 99.0)
    assert stats.median_ms == 50.5
    assert stats.total_s == pytest.approx(5.05)


def test_from_samples_keeps_the_samples_in_measurement_order():
    samples = [2.0, 1.0, 3.0]
    stats = TimingStats.from_samples(samples, "perf_counter")
    assert stats.samples_ms == (2.0, 1.0, 3.0)
    assert isinstance(stats.samples_ms, tuple)


def test_one_sample_has_zero_spread():
    stats = TimingStats.from_samples([7.0], "perf_counter")
    assert stats.std_ms == 0.0 and stats.cov == 0.0
    assert stats.min_ms == stats.median_ms == stats.p99_ms == stats.max_ms == 7.0


def test_stats_are_frozen():
    stats = TimingStats.from_samples([1.0, 2.0], "perf_counter")
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.median_ms = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("empty", [[], ()])
def test_empty_samples_are_refused(empty):
    with pytest.raises(InvalidArgument, match="empty"):
        TimingStats.from_samples(empty, "perf_counter")


def test_summary_has_every_statistic_but_not_the_samples():
    summary = TimingStats.from_samples([1.0, 2.0, 3.0], "perf_counter").summary()
    assert "samples_ms" not in summary
    assert {"clock", "rounds", "min_ms", "median_ms", "mean_ms", "std_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms",
            "cov", "total_s"} == set(summary)


# -- warnings --------------------------------------------------------------------------------------

def test_steady_sample_has_no_warnings():
    stats = TimingStats.from_samples([10.0, 10.01, 9.99, 10.0] * 5, "cuda-events")
    assert stats.cov < COV_WARN
    assert stats.warnings(TimingConfig(min_rounds=20)) == []
    assert stats.warnings() == []


def test_unstable_sample_is_flagged_with_its_coefficient_of_variation():
    stats = TimingStats.from_samples([10.0, 11.0, 9.0, 10.5, 9.5] * 4, "cuda-events")
    assert stats.cov > COV_WARN
    (warning,) = stats.warnings()
    assert warning.startswith("unstable")
    assert f"{stats.cov:.1%}" in warning and "2.5%" in warning


def test_cov_just_under_the_threshold_is_not_flagged():
    # 20 samples at 10 +- d: sample std = d * sqrt(20 / 19)
    d = 0.023 * 10.0 / math.sqrt(20 / 19)
    stats = TimingStats.from_samples([10.0 - d, 10.0 + d] * 10, "cuda-events")
    assert stats.cov == pytest.approx(0.023)
    assert not any(w.startswith("unstable") for w in stats.warnings())


def test_fewer_rounds_than_configured_are_flagged():
    stats = TimingStats.from_samples([5.0] * 12, "cuda-events")
    warnings = stats.warnings(TimingConfig(min_rounds=50))
    assert warnings == ["too few rounds: 12 < 50"]


def test_fewer_than_ten_rounds_are_flagged_even_without_a_config():
    warnings = TimingStats.from_samples([5.0] * 3, "perf_counter").warnings()
    assert len(warnings) == 1 and "only 3 rounds" in warnings[0]


# -- TimingConfig ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"min_rounds": 0},
    {"min_rounds": 10, "max_rounds": 9},
    {"warmup_ms": -1.0},
    {"min_seconds": -0.5},
])
def test_timing_config_refuses_inconsistent_values(kwargs):
    with pytest.raises(InvalidArgument) as info:
        TimingConfig(**kwargs)
    assert isinstance(info.value, ValueError)


def test_timing_config_accepts_zero_durations_and_equal_round_limits():
    config = TimingConfig(warmup_ms=0, warmup_rounds=0, min_rounds=1, min_seconds=0, max_rounds=1)
    assert config.min_rounds == config.max_rounds == 1


def test_profiles_full_measures_more_than_quick():
    quick, full = PROFILES["quick"], PROFILES["full"]
    assert full.min_rounds > quick.min_rounds and full.min_seconds > quick.min_seconds
    assert quick.min_rounds >= 10  # enough for a p90 that is not the maximum


# -- measure ----------------------------------------------------------------------------------------

TICK = 2.0**-10  # seconds per fake call: exact in binary, so the clock arithmetic has no rounding
TICK_MS = TICK * 1000.0


class FakeClock:
    """Stands in for ``time`` inside harness.timing: ``perf_counter`` only moves when a call runs."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    import harness.timing

    fake = FakeClock()
    monkeypatch.setattr(harness.timing, "time", fake)
    return fake


class TickingCall:
    """A stand-in for one inference that takes exactly one TICK on the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        self.clock.now += TICK


def test_measure_warms_up_until_warmup_ms_has_passed(clock):
    fn = TickingCall(clock)
    config = TimingConfig(warmup_ms=20 * TICK_MS, warmup_rounds=2, min_rounds=3, min_seconds=0.0)
    stats = measure(fn, CPU, config)
    assert stats.rounds == 3
    assert fn.calls - stats.rounds == 20  # 20 ticks of warm-up, although 2 rounds were asked for


def test_measure_warms_up_for_warmup_rounds_when_they_outlast_warmup_ms(clock):
    fn = TickingCall(clock)
    stats = measure(fn, CPU, TimingConfig(warmup_ms=3 * TICK_MS, warmup_rounds=10, min_rounds=3, min_seconds=0.0))
    assert fn.calls - stats.rounds == 10


def test_measure_runs_until_min_seconds_have_passed(clock):
    fn = TickingCall(clock)
    stats = measure(fn, CPU, TimingConfig(warmup_ms=0.0, warmup_rounds=1, min_rounds=3, min_seconds=50 * TICK))
    assert stats.rounds == 50
    assert fn.calls == 51
    assert stats.samples_ms == (TICK_MS,) * 50  # milliseconds of the clock, per call
    assert stats.total_s == pytest.approx(50 * TICK)


def test_measure_runs_min_rounds_when_they_outlast_min_seconds(clock):
    fn = TickingCall(clock)
    stats = measure(fn, CPU, TimingConfig(warmup_ms=0.0, warmup_rounds=1, min_rounds=30, min_seconds=5 * TICK))
    assert stats.rounds == 30
    assert fn.calls == 31


def test_measure_stops_at_max_rounds(clock):
    fn = TickingCall(clock)
    stats = measure(fn, CPU, TimingConfig(warmup_ms=0.0, warmup_rounds=0, min_rounds=3, min_seconds=3600.0,
                                          max_rounds=5))
    assert stats.rounds == 5 and fn.calls == 5


class SleepyCall:
    """A stand-in for one inference on the real clock: sleeps ~1 ms and records when it started."""

    def __init__(self, seconds: float = 0.001) -> None:
        self.seconds = seconds
        self.starts: list[float] = []

    def __call__(self) -> None:
        self.starts.append(time.perf_counter())
        time.sleep(self.seconds)


def test_measure_on_the_real_clock_warms_up_and_measures_long_enough():
    fn = SleepyCall()
    config = TimingConfig(warmup_ms=20.0, warmup_rounds=2, min_rounds=3, min_seconds=0.03)
    stats = measure(fn, CPU, config)
    warmup = len(fn.starts) - stats.rounds
    assert warmup >= 2 and stats.rounds >= 3
    # the first measured call starts only once the warm-up has lasted warmup_ms
    assert fn.starts[warmup] - fn.starts[0] >= 0.019
    # and the measurement lasts min_seconds: first measured start to last measured end
    assert fn.starts[-1] + stats.samples_ms[-1] / 1000.0 - fn.starts[warmup] >= 0.029
    assert stats.min_ms >= 1.0  # each sample covers a whole ~1 ms call, in milliseconds


def test_measure_on_cpu_uses_perf_counter_and_milliseconds():
    fn = SleepyCall(0.002)
    stats = measure(fn, CPU, TimingConfig(warmup_ms=0.0, warmup_rounds=1, min_rounds=3, min_seconds=0.0))
    assert stats.clock == "perf_counter"
    assert stats.min_ms >= 2.0  # milliseconds, not seconds
    assert stats.max_ms < 1000.0


def test_measure_accepts_a_device_string():
    stats = measure(SleepyCall(0.0), "cpu", TimingConfig(warmup_ms=0.0, warmup_rounds=0, min_rounds=2,  # type: ignore[arg-type]
                                                         min_seconds=0.0))
    assert stats.clock == "perf_counter" and stats.rounds == 2


def test_measure_host_round_trip_returns_stats_and_passes_the_feed():
    host_feed = {"x": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    seen: list[torch.Tensor] = []

    def fn(feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        seen.append(feed["x"])
        return {"y": feed["x"] * 2}

    config = TimingConfig(warmup_ms=0.0, warmup_rounds=1, min_rounds=4, min_seconds=0.0)
    stats = measure_host_round_trip(fn, host_feed, CPU, config)
    assert isinstance(stats, TimingStats)
    assert stats.rounds == 4 and stats.clock == "perf_counter"
    assert len(seen) == 5
    assert all(torch.equal(x, host_feed["x"]) for x in seen)


def test_unstable_cpu_timings_advise_cpu_measures_not_gpu_clock_locks():
    from harness.timing import TimingStats

    cpu = TimingStats.from_samples([1.0, 2.0, 3.0] * 5, "perf_counter").warnings()
    gpu = TimingStats.from_samples([1.0, 2.0, 3.0] * 5, "cuda-events").warnings()
    assert any("CPU frequency governor" in w for w in cpu) and not any("GPU" in w for w in cpu)
    assert any("lock the GPU clocks" in w for w in gpu)
