"""How many registration pairs to process together, and the chunked map that does it.

On a CPU core, vmapping 4-8 pairs of 112 x 112 keeps their working set in cache: 64 at once ran the classic method
1.6x slower a pair (docs/performance.md, "Classic registration vs SimpleITK demons"); the network's inference
(`Trainer.fields`) uses the same chunk. An accelerator wants the whole batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

CPU_PAIRS = 8


def pair_chunk(platform: str | None = None) -> int | None:
    """Pairs vmapped together: CPU_PAIRS on "cpu", None (the whole batch) on an accelerator; default: JAX's."""
    platform = jax.default_backend() if platform is None else platform
    return CPU_PAIRS if platform == "cpu" else None


def map_pairs(batched_fn, chunk: int | None, *arrays, pad: bool = False):
    """`batched_fn(*arrays)` (leading axis: pairs), `chunk` pairs at a time in sequence; in one call when `chunk` is
    None or the batch is no larger. Outputs: any pytree, pairs leading.

    A batch that is not a multiple of `chunk` has a remainder: by default it runs as its own smaller batch
    (`lax.map(batch_size=)`), which traces `batched_fn` twice; `pad=True` instead pads the batch with copies of its
    last pair (their results dropped) and traces it once. Padding pays where tracing is dear and compute cheap
    (the classic solver: trace + lower 3.1 -> 1.5 s for 10 slices); the network's inference is better without it
    (docs/performance.md, "Classic registration vs SimpleITK demons").
    """
    n = arrays[0].shape[0]
    if chunk is None or n <= chunk:
        return batched_fn(*arrays)
    if not pad:
        return jax.lax.map(lambda xs: jax.tree.map(lambda y: y[0], batched_fn(*(x[None] for x in xs))), arrays,
                           batch_size=chunk)
    extra = (-n) % chunk
    if extra:
        arrays = [jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)]) for x in arrays]
    out = jax.lax.map(lambda xs: batched_fn(*xs), [x.reshape((-1, chunk) + x.shape[1:]) for x in arrays])
    return jax.tree.map(lambda y: y.reshape((-1,) + y.shape[2:])[:n], out)
