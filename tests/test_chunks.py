import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg.runtime import chunks


@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("n,chunk", [(5, 2), (6, 3), (3, 8), (7, None)])
def test_map_pairs_equals_the_whole_batch(n, chunk, pad):
    traces = []

    def batched(a, b):
        traces.append(a.shape)
        return {"sum": a.sum(axis=(1, 2)) + b[:, 0], "twice": 2.0 * a}

    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, 4, 3)), jnp.float32)
    b = jnp.arange(n * 2, dtype=jnp.float32).reshape(n, 2)
    got = jax.jit(lambda a, b: chunks.map_pairs(batched, chunk, a, b, pad=pad))(a, b)
    want = {"sum": a.sum(axis=(1, 2)) + b[:, 0], "twice": 2.0 * a}
    for k in want:
        assert got[k].shape == want[k].shape
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6)
    if pad or chunk is None or n <= chunk:  # padded: one trace at the chunk's size, the remainder not traced again
        assert traces == [(n if chunk is None or n <= chunk else chunk,) + a.shape[1:]]


def test_pair_chunk_by_platform():
    assert chunks.pair_chunk("cpu") == chunks.CPU_PAIRS
    assert chunks.pair_chunk("gpu") is None
