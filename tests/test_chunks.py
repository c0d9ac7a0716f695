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
    assert chunks.pair_chunk("cpu", kind="solver") == chunks.CPU_SOLVER_PAIRS == 1
    assert chunks.pair_chunk("gpu") is None and chunks.pair_chunk("gpu", kind="solver") is None
    with pytest.raises(ValueError, match="kind"):
        chunks.pair_chunk("cpu", kind="classic")


@pytest.mark.parametrize("n,chunk", [(5, 1), (5, 2), (3, 8), (4, None)])
def test_map_pair_fn_maps_a_one_pair_function(n, chunk):
    seen = []

    def one(a, b):  # written for one pair: a (4, 3), b (2,)
        seen.append(a.shape)
        return {"sum": a.sum() + b[0], "twice": 2.0 * a}

    a = jnp.asarray(np.random.default_rng(1).normal(size=(n, 4, 3)), jnp.float32)
    b = jnp.arange(n * 2, dtype=jnp.float32).reshape(n, 2)
    got = jax.jit(lambda a, b: chunks.map_pair_fn(one, chunk, a, b))(a, b)
    np.testing.assert_allclose(got["sum"], a.sum(axis=(1, 2)) + b[:, 0], rtol=1e-6)
    np.testing.assert_allclose(got["twice"], 2.0 * a, rtol=1e-6)
    assert seen == [(4, 3)]  # traced once, on one pair's shapes (vmapped or not)
