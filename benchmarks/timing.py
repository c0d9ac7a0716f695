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


def add_runtime_flags(ap) -> None:
    """Adds --jaxlib_convolutions and --glibc_malloc_defaults to an argparse parser (off: jaxreg.runtime's Eigen
    convolutions and malloc settings, as the entry points apply them)."""
    ap.add_argument("--jaxlib_convolutions", action="store_true",
                    help="leave convolutions to jaxlib's default (YNNPACK for large ones on jaxlib 0.10.2) instead of "
                         "jaxreg.runtime.xla_cpu.prefer_eigen_convolutions, which the entry points apply")
    ap.add_argument("--glibc_malloc_defaults", action="store_true",
                    help="leave glibc's malloc as it is instead of jaxreg.runtime.malloc.keep_freed_memory, which the "
                         "entry points apply (one process: it affects the peers too)")


def apply_runtime_flags(args) -> bool:
    """Applies jaxreg.runtime.malloc.keep_freed_memory unless --glibc_malloc_defaults, then
    jaxreg.runtime.xla_cpu.prefer_eigen_convolutions unless --jaxlib_convolutions (-> whether the latter is in
    effect); call before JAX starts."""
    from jaxreg.runtime import malloc, xla_cpu

    if not args.glibc_malloc_defaults:
        malloc.keep_freed_memory()
    return False if args.jaxlib_convolutions else xla_cpu.prefer_eigen_convolutions()


def add_torch_device_flag(ap) -> None:
    """Adds --torch_device to an argparse parser (default: the device JAX runs on, cuda for a GPU)."""
    ap.add_argument("--torch_device", default=None,
                    help="device of the PyTorch peers (cpu, cuda); default: cuda when JAX runs on a GPU and torch "
                         "sees one, else cpu: both sides on the same device")


def torch_device(requested=None) -> str:
    """The PyTorch peers' device: `requested`, else the kind JAX computes on (cuda for a GPU, else cpu)."""
    import jax
    import torch

    if requested:
        return requested
    return "cuda" if jax.devices()[0].platform == "gpu" and torch.cuda.is_available() else "cpu"


def torch_synchronize(device: str) -> None:
    """Waits for the device's queued work (CUDA kernels run asynchronously; a timing must include them)."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
