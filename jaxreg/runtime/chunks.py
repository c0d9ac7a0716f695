"""How many registration pairs to process together, and the chunked map that does it.

On a CPU core, vmapping 4-8 pairs of 112 x 112 keeps their working set in cache: 64 at once ran the classic method
1.6x slower a pair (docs/performance.md, "Classic registration vs SimpleITK demons"); the network's inference
(`Trainer.fields`) uses the same chunk. An accelerator wants the whole batch.
"""

from __future__ import annotations

import jax

CPU_PAIRS = 8


def pair_chunk(platform: str | None = None) -> int | None:
    """Pairs vmapped together: CPU_PAIRS on "cpu", None (the whole batch) on an accelerator; default: JAX's."""
    platform = jax.default_backend() if platform is None else platform
    return CPU_PAIRS if platform == "cpu" else None


def map_pairs(batched_fn, chunk: int | None, *arrays):
    """`batched_fn(*arrays)` (leading axis: pairs), `chunk` pairs at a time in sequence (`lax.map`, remainder
    included); in one call when `chunk` is None or the batch is no larger. Outputs: any pytree, pairs leading."""
    if chunk is None or arrays[0].shape[0] <= chunk:
        return batched_fn(*arrays)
    return jax.lax.map(lambda xs: jax.tree.map(lambda y: y[0], batched_fn(*(x[None] for x in xs))), arrays,
                       batch_size=chunk)
