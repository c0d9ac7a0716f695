"""Shared timing helper for the benchmark scripts."""

import statistics
import time


def wall_times(fn, warmup: int, repeats: int) -> list[float]:
    """Wall times of `fn()` in seconds for `repeats` calls after `warmup` calls (fn must block)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def median_time(fn, warmup: int, repeats: int) -> float:
    """Median wall time of `fn()` in seconds over `repeats` calls after `warmup` calls (fn must block)."""
    return statistics.median(wall_times(fn, warmup, repeats))
