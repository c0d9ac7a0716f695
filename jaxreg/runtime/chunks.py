"""How many registration pairs to process together, and the chunked maps that do it.

On a CPU core, the network's inference (`Trainer.fields`) vmaps 8 pairs of 112 x 112 at a time: their working set
stays in cache. The classic solver (`jaxreg.classic`) runs one pair at a time there, not vmapped: under `vmap` its
L-BFGS and line-search loops run until the slowest pair stops, selecting over the batch every iteration, and a
chunk's residuals can leave the cache: 8 vmapped took 1.6x (displacement) to 3.2x (diffeomorphic) longer a pair
(docs/performance.md, "Classic registration vs SimpleITK demons"). An accelerator wants the whole batch vmapped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

CPU_PAIRS = 8  # the network's inference
CPU_SOLVER_PAIRS = 1  # iterative solvers: one pair at a time, unbatched


def pair_chunk(platform: str | None = None, kind: str = "network") -> int | None:
    """Pairs processed together on `platform` (default: JAX's) by `kind` "network" (CPU_PAIRS on "cpu") or
    "solver" (CPU_SOLVER_PAIRS); None (the whole batch) on an accelerator."""
    if kind not in ("network", "solver"):
        raise ValueError(f'kind must be "network" or "solver"; got {kind!r}')
    platform = jax.default_backend() if platform is None else platform
    if platform != "cpu":
        return None
    return CPU_PAIRS if kind == "network" else CPU_SOLVER_PAIRS


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


def map_pair_fn(fn, chunk: int | None, *arrays):
    """`fn` of ONE pair (arrays without the leading pairs axis) over a batch: chunk 1 maps it pair by pair with no
    `vmap` (`lax.map`: each pair's loops stop on their own); otherwise `map_pairs(jax.vmap(fn), chunk, ...,
    pad=True)`."""
    if chunk == 1:
        return jax.lax.map(lambda xs: fn(*xs), arrays)
    return map_pairs(jax.vmap(fn), chunk, *arrays, pad=True)
