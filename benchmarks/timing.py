"""Shared helpers for the benchmark scripts: timing, and the convolution flag the entry points apply."""

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


def add_convolution_flag(ap) -> None:
    """Adds --jaxlib_convolutions to an argparse parser (off: jaxreg.xla_cpu's Eigen convolutions, as entry points)."""
    ap.add_argument("--jaxlib_convolutions", action="store_true",
                    help="leave convolutions to jaxlib's default (YNNPACK for large ones on jaxlib 0.10.2) instead of "
                         "jaxreg.runtime.xla_cpu.prefer_eigen_convolutions, which the entry points apply")


def apply_convolution_flag(args) -> bool:
    """Applies jaxreg.runtime.xla_cpu.prefer_eigen_convolutions unless --jaxlib_convolutions; call before JAX starts."""
    from jaxreg.runtime import xla_cpu

    return False if args.jaxlib_convolutions else xla_cpu.prefer_eigen_convolutions()
