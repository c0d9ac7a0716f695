"""`keep_freed_memory`: glibc's malloc reuses the large buffers XLA:CPU frees instead of unmapping them.

XLA:CPU mallocs each executable's temporary buffer on every run (577 MB for the training step at batch 30) and
Eigen its contraction blocks (217 MB), and frees them after. glibc serves chunks that large with a fresh `mmap`
(from a worker thread's arena always, whatever `M_MMAP_MAX` says) and unmaps them on free, so every step faults its
working memory in again page by page: ~100,000 minor faults and ~0.4 CPU s of kernel time a training step on the
2-core CPU. With one arena, no mmap-served chunks and no trimming, the memory freed is reused (no faults after the
first step) and the step is faster; the process keeps its peak memory instead. Numbers and command:
docs/performance.md, "XLA:CPU performance findings" (`benchmarks/bench_ablation.py [--glibc_malloc_defaults]`).
"""

from __future__ import annotations

import ctypes
import platform

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
NO_TRIM = -1  # M_TRIM_THRESHOLD: -1 never returns the heap's free top (mallopt(3)); the largest int, 2 GiB, is
# not enough: the stride-2 network's step frees more than that at the top and faulted it all in again every step


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to one arena, no mmap-served chunks and no trimming -> whether all three took.

    No-op returning False where the C library is not glibc (macOS, musl). Call it before JAX starts its backends:
    a thread keeps the arena it first allocated from, so XLA's worker threads must start after it (the entry points
    and `jaxreg register` call it first; `--nokeep_freed_memory` / `--no-keep-freed-memory` leave malloc as it is).
    Affects the whole process, not only JAX; results are unchanged.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all([mallopt(M_ARENA_MAX, 1) == 1, mallopt(M_MMAP_MAX, 0) == 1,
                mallopt(M_TRIM_THRESHOLD, NO_TRIM) == 1])
