"""How many registration pairs to process together: all at once on an accelerator, a few at a time on a CPU.

On a CPU core, vmapping 4-8 pairs of 112 x 112 keeps their working set in cache; 64 at once runs the classic
method and the network's inference slower a pair (docs/performance.md, "Classic registration vs SimpleITK
demons"). An accelerator wants the whole batch.
"""

from __future__ import annotations

import jax

CPU_PAIRS = 8


def pair_chunk(platform: str | None = None) -> int | None:
    """Pairs vmapped together: CPU_PAIRS on "cpu", None (the whole batch) on an accelerator; default: JAX's."""
    platform = jax.default_backend() if platform is None else platform
    return CPU_PAIRS if platform == "cpu" else None
