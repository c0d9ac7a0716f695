"""jaxreg.runtime.conv: its stride-2 gradient and single-channel forward equal XLA's convolution; the rest falls through."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax
from jax.test_util import check_grads

from jaxreg.runtime import conv


def _dn(nd):
    sp = "HWD"[:nd]
    return ("N" + sp + "C", sp + "IO", "N" + sp + "C")


def _grads(fn, x, w, g):
    return jax.grad(lambda x, w: jnp.vdot(fn(x, w), g), (0, 1))(x, w)


def _compare(x_shape, cin, cout, seed, strides=2, padding="SAME", ksize=3, custom=True):
    nd = len(x_shape)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((2,) + tuple(x_shape) + (cin,), np.float32))
    w = jnp.asarray(rng.standard_normal((ksize,) * nd + (cin, cout), np.float32))
    args = ((strides,) * nd, padding)
    ref = lambda x, w: lax.conv_general_dilated(x, w, *args, dimension_numbers=_dn(nd))  # noqa: E731
    new = lambda x, w: conv.conv_general_dilated(x, w, *args, dimension_numbers=_dn(nd))  # noqa: E731
    assert ("custom_vjp" in str(jax.make_jaxpr(new)(x, w))) == custom  # which path it took
    y = ref(x, w)
    if strides == 2 or not custom:
        np.testing.assert_array_equal(np.asarray(new(x, w)), np.asarray(y))  # the forward is XLA's
    else:  # single channel: a sum of shifted planes, another summation order
        np.testing.assert_allclose(np.asarray(new(x, w)), np.asarray(y), rtol=1e-5, atol=1e-5 * float(jnp.abs(y).max()))
    g = jnp.asarray(rng.standard_normal(y.shape, np.float32))
    (gx_ref, gw_ref), (gx, gw) = _grads(ref, x, w, g), _grads(new, x, w, g)
    scale = float(jnp.abs(gx_ref).max())
    np.testing.assert_allclose(np.asarray(gx), np.asarray(gx_ref), rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(np.asarray(gw), np.asarray(gw_ref), rtol=1e-5, atol=1e-5 * float(jnp.abs(gw_ref).max()))


@settings(max_examples=8)  # each example compiles four programs
@given(h=st.integers(1, 7), w=st.integers(1, 7), cin=st.integers(1, 4), cout=st.integers(1, 4), seed=st.integers(0, 99))
def test_input_gradient_equals_xla_2d(h, w, cin, cout, seed):
    _compare((2 * h, 2 * w), cin, cout, seed)


@pytest.mark.parametrize("shape,cin,cout", [((8, 6, 4), 3, 2), ((2, 4, 10), 1, 5), ((112, 112), 16, 32)])
def test_input_gradient_equals_xla_3d_and_network_shape(shape, cin, cout):
    _compare(shape, cin, cout, seed=1)


@pytest.mark.parametrize("shape", [(9, 7), (28, 20), (5, 6, 7)])
def test_single_channel_forward_and_gradients_equal_xla(shape):
    _compare(shape, 1, 16 if len(shape) == 2 else 3, seed=6, strides=1)


@pytest.mark.parametrize("kwargs", [dict(strides=1), dict(padding="VALID"), dict(ksize=5), dict(strides=3)])
def test_other_convolutions_fall_through(kwargs):
    _compare((8, 10), 2, 3, seed=2, custom=False, **kwargs)


def test_odd_sizes_fall_through():
    _compare((7, 8), 2, 3, seed=3, custom=False)


def test_check_grads_finite_differences():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((1, 6, 4, 2)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 2, 3)), jnp.float32)
    f = lambda x, w: conv.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=_dn(2))  # noqa: E731
    check_grads(f, (x, w), order=1, modes=["rev"], atol=5e-2, rtol=5e-2, eps=1e-2)


def test_flax_conv_jit_and_vmap():
    x = jnp.asarray(np.random.default_rng(5).standard_normal((3, 2, 8, 8, 1)), jnp.float32)  # (vmap, B, H, W, C)
    plain = nn.Conv(4, (3, 3), strides=(2, 2), padding="SAME")
    phased = nn.Conv(4, (3, 3), strides=(2, 2), padding="SAME", conv_general_dilated=conv.conv_general_dilated)
    params = plain.init(jax.random.key(0), x[0])
    assert jax.tree.structure(params) == jax.tree.structure(phased.init(jax.random.key(0), x[0]))

    def loss(module, params, x):
        return jnp.sum(jnp.sin(module.apply(params, x)))

    for fn in (lambda m: jax.jit(jax.vmap(jax.grad(lambda p, x: loss(m, p, x)), (None, 0))),):
        ref, got = fn(plain)(params, x), fn(phased)(params, x)
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    gx_ref = jax.grad(lambda x: loss(plain, params, x))(x[0])
    gx = jax.grad(lambda x: loss(phased, params, x))(x[0])
    np.testing.assert_allclose(np.asarray(gx), np.asarray(gx_ref), rtol=1e-5, atol=1e-6)
