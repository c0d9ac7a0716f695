"""jaxreg.warp against scipy.ndimage.map_coordinates and exact invariants."""

import jax
from jax.test_util import check_grads
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from jaxreg import warp as W


def scipy_warp(image, u, order, mode="nearest"):
    coords = np.moveaxis(np.stack(np.meshgrid(*[np.arange(n) for n in u.shape[:-1]], indexing="ij"), -1) + u, -1, 0)
    return ndimage.map_coordinates(image.astype(np.float64), coords.astype(np.float64), order=order, mode=mode)


def test_identity_grid():
    g = W.identity_grid((3, 4))
    assert g.shape == (3, 4, 2)
    assert g[2, 1, 0] == 2 and g[2, 1, 1] == 1


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("shape", [(16, 12), (6, 7, 5)])
def test_zero_field_is_identity(order, shape):
    rng = np.random.default_rng(0)
    img = rng.random(shape).astype(np.float32)
    u = np.zeros(shape + (len(shape),), np.float32)
    np.testing.assert_allclose(W.warp(img, u, order=order), img, atol=1e-6)
    chans = rng.random(shape + (3,)).astype(np.float32)
    np.testing.assert_allclose(W.warp(chans, u, order=order), chans, atol=1e-6)


def test_integer_shift_equals_roll_inside():
    img = np.random.default_rng(1).random((20, 18)).astype(np.float32)
    u = np.zeros((20, 18, 2), np.float32)
    u[..., 0], u[..., 1] = 3, -2  # sample at (i + 3, j - 2)
    got = np.asarray(W.warp(img, u))
    ref = np.roll(img, shift=(-3, 2), axis=(0, 1))
    np.testing.assert_allclose(got[:-3, 2:], ref[:-3, 2:], atol=1e-6)


@given(seed=st.integers(0, 1000), scale=st.floats(0.1, 6.0), order=st.sampled_from([0, 1]), nd=st.sampled_from([2, 3]))
def test_matches_map_coordinates(seed, scale, order, nd):
    rng = np.random.default_rng(seed)
    shape = (11, 9) if nd == 2 else (7, 6, 5)
    img = rng.random(shape).astype(np.float32)
    u = (rng.normal(size=shape + (nd,)) * scale).astype(np.float32)
    u += 0.013  # keep off exact .5 ties for nearest rounding
    np.testing.assert_allclose(W.warp(img, u, order=order), scipy_warp(img, u, order), atol=1e-5)
    if order == 1:
        np.testing.assert_allclose(
            W.warp(img, u, order=1, mode="constant"), scipy_warp(img, u, 1, mode="grid-constant"), atol=1e-5
        )


def test_channels_equal_per_channel_warp():
    rng = np.random.default_rng(2)
    img = rng.random((10, 12, 4)).astype(np.float32)
    u = rng.normal(size=(10, 12, 2)).astype(np.float32) * 2
    got = W.warp(img, u)
    for c in range(4):
        np.testing.assert_allclose(got[..., c], scipy_warp(img[..., c], u, 1), atol=1e-5)


def test_onehot_linear_warp_is_soft_partition():
    labels = np.random.default_rng(3).integers(0, 4, (12, 12))
    onehot = jax.nn.one_hot(labels, 4)
    u = jax.random.normal(jax.random.key(0), (12, 12, 2)) * 1.5
    soft = W.warp(onehot, u)
    np.testing.assert_allclose(jnp.sum(soft, -1), 1.0, atol=1e-5)
    assert float(soft.min()) >= 0


def test_rigid_translation_of_linear_image_is_exact():
    x = np.stack(np.meshgrid(np.arange(15.0), np.arange(13.0), indexing="ij"), -1)
    img = (0.3 * x[..., 0] - 0.2 * x[..., 1] + 1).astype(np.float32)
    u = np.broadcast_to(np.array([1.25, -0.75], np.float32), (15, 13, 2))
    got = np.asarray(W.warp(img, u))
    np.testing.assert_allclose(got[:-2, 1:], (0.3 * (x[..., 0] + 1.25) - 0.2 * (x[..., 1] - 0.75) + 1)[:-2, 1:], atol=1e-5)


def test_compose_matches_sequential_warp_on_linear_image():
    x = np.stack(np.meshgrid(np.arange(30.0), np.arange(30.0), indexing="ij"), -1)
    img = (0.3 * x[..., 0] + 0.7 * x[..., 1]).astype(np.float32)
    k1, k2 = jax.random.split(jax.random.key(1))
    u1 = jax.random.uniform(k1, (30, 30, 2), minval=-2, maxval=2)
    u2 = jax.random.uniform(k2, (30, 30, 2), minval=-2, maxval=2)
    inner = (slice(5, -5), slice(5, -5))
    seq = W.warp(W.warp(img, u2), u1)
    np.testing.assert_allclose(W.warp(img, W.compose(u1, u2))[inner], seq[inner], atol=1e-4)
    np.testing.assert_allclose(W.compose(u1, jnp.zeros_like(u1)), u1, atol=1e-6)
    np.testing.assert_allclose(W.compose(jnp.zeros_like(u1), u2), u2, atol=1e-6)


def test_gradients_match_finite_differences():
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        img = jnp.asarray(rng.random((8, 9)))
        # keep every sample point at least 0.1 px away from the grid so the piecewise-linear map is smooth nearby
        u = jnp.asarray(rng.integers(-2, 3, (8, 9, 2)) + rng.uniform(0.1, 0.9, (8, 9, 2)))
        check_grads(lambda v: W.warp(img, v, mode="constant"), (u,), order=1, eps=1e-4)
        check_grads(lambda m: W.warp(m, u), (img,), order=1, eps=1e-4)
        check_grads(lambda m: W.warp(m, u, order=0), (img,), order=1, eps=1e-4)


def test_jit_and_vmap_3d():
    rng = np.random.default_rng(5)
    imgs = rng.random((2, 6, 7, 8)).astype(np.float32)
    us = rng.normal(size=(2, 6, 7, 8, 3)).astype(np.float32)
    out = jax.jit(jax.vmap(W.warp))(imgs, us)
    for b in range(2):
        np.testing.assert_allclose(out[b], scipy_warp(imgs[b], us[b], 1), atol=1e-5)


def test_bad_input_errors():
    img = np.zeros((10, 10), np.float32)
    with pytest.raises(ValueError, match=r"image must be.*got image \(10, 10, 3, 2\)"):
        W.warp(np.zeros((10, 10, 3, 2)), np.zeros((10, 10, 2)))
    with pytest.raises(ValueError, match=r"u must be .*\(10, 10, 3\)"):
        W.warp(img, np.zeros((10, 10, 3)))
    with pytest.raises(ValueError, match="order"):
        W.warp(img, np.zeros((10, 10, 2)), order=3)
    with pytest.raises(ValueError, match="mode"):
        W.warp(img, np.zeros((10, 10, 2)), mode="wrap")
    with pytest.raises(ValueError, match="same shape"):
        W.compose(np.zeros((10, 10, 2)), np.zeros((8, 10, 2)))


@given(seed=st.integers(0, 1000), mode=st.sampled_from(["border", "constant"]), nd=st.sampled_from([2, 3]))
def test_warp_labels_equals_onehot_warp(seed, mode, nd):
    rng = np.random.default_rng(seed)
    shape = (9, 10) if nd == 2 else (5, 6, 7)
    labels = rng.integers(0, 4, shape)
    u = (rng.normal(size=shape + (nd,)) * 2.5).astype(np.float32)
    ref = W.warp(jax.nn.one_hot(labels, 4), u, order=1, mode=mode)
    np.testing.assert_allclose(W.warp_labels(labels, u, 4, mode=mode), ref, atol=1e-6)
    g1 = jax.grad(lambda v: jnp.sum(W.warp_labels(labels, v, 4, mode=mode) ** 2))(u)
    g2 = jax.grad(lambda v: jnp.sum(W.warp(jax.nn.one_hot(labels, 4), v, mode=mode) ** 2))(u)
    np.testing.assert_allclose(g1, g2, atol=1e-5)


def test_constant_mode_cval_matches_scipy():
    rng = np.random.default_rng(7)
    img = rng.random((8, 9)).astype(np.float32)
    u = (rng.normal(size=(8, 9, 2)) * 4).astype(np.float32)
    coords = np.moveaxis(np.stack(np.meshgrid(np.arange(8), np.arange(9), indexing="ij"), -1) + u, -1, 0)
    ref = ndimage.map_coordinates(img.astype(np.float64), coords, order=1, mode="grid-constant", cval=0.7)
    np.testing.assert_allclose(W.warp(img, u, mode="constant", cval=0.7), ref, atol=1e-5)


def test_downsample_is_block_mean():
    x = np.arange(4 * 6 * 2, dtype=np.float32).reshape(4, 6, 2)
    got = np.asarray(W.downsample(x, 2, 2))
    np.testing.assert_allclose(got, x.reshape(2, 2, 3, 2, 2).mean((1, 3)))
    with pytest.raises(ValueError, match="divisible"):
        W.downsample(np.zeros((5, 6)), 2, 2)


def _smooth_field(shape, amplitude, seed, sigma=6.0):
    """A smooth random displacement (pixels): Gaussian-blurred noise scaled to `amplitude` px at most."""
    rng = np.random.default_rng(seed)
    comps = [ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="nearest") for _ in shape]
    v = np.stack(comps, -1)
    return jnp.asarray(amplitude * v / np.abs(v).max(), jnp.float32)


def test_exp_velocity_translation_zero_steps_and_inverse():
    v = jnp.full((24, 20, 2), jnp.asarray([1.5, -0.75]), jnp.float32)
    np.testing.assert_allclose(W.exp_velocity(v, 6), v, atol=1e-5)  # a constant flow is a translation
    w = _smooth_field((48, 48), 3.0, 0)
    np.testing.assert_array_equal(W.exp_velocity(w, 0), w)
    # exp(v) then exp(-v) is the identity (away from the border, where "border" sampling clamps)
    back = W.compose(W.exp_velocity(w, 7), W.exp_velocity(-w, 7))
    assert float(jnp.abs(back[8:-8, 8:-8]).max()) < 0.05
    # one squaring of exp(v / 2) is exp(v): the two paths of the recursion agree
    np.testing.assert_allclose(W.compose(W.exp_velocity(w / 2, 6), W.exp_velocity(w / 2, 6)), W.exp_velocity(w, 7),
                               atol=1e-4)
    with pytest.raises(ValueError, match="steps"):
        W.exp_velocity(w, -1)


@pytest.mark.parametrize("factor", [2, 4])
def test_exp_velocity_at_reduced_resolution(factor):
    # a constant flow stays exact in 2D and 3D (pooling, squaring and linear upsampling all keep constants)
    for shape in ((24, 16), (8, 12, 16)):
        v = jnp.broadcast_to(jnp.asarray([1.5, -0.75, 0.5][:len(shape)], jnp.float32), shape + (len(shape),))
        np.testing.assert_allclose(W.exp_velocity(v, 5, factor), v, atol=1e-5)
    # independent reference for the coarse path: numpy block means, the full-resolution squaring at that size,
    # and scipy's linear interpolation at the pooled pixel centres (x + 0.5) / factor - 0.5, clamped at the edges
    w = _smooth_field((48, 48), 3.0, 2)
    coarse = np.asarray(w).reshape(48 // factor, factor, 48 // factor, factor, 2).mean(axis=(1, 3)) / factor
    ec = np.asarray(W.exp_velocity(jnp.asarray(coarse), 6)) * factor
    x = (np.arange(48) + 0.5) / factor - 0.5
    grid = np.meshgrid(x, x, indexing="ij")
    ref = np.stack([ndimage.map_coordinates(ec[..., k], grid, order=1, mode="nearest") for k in range(2)], -1)
    np.testing.assert_allclose(W.exp_velocity(w, 6, factor), ref, atol=1e-4)
    # and it approximates the full-resolution flow of this smooth (3 px) field to a fraction of a pixel inside;
    # within factor / 2 px of the edge the upsampling clamps (measured 0.26 px at factor 2, 0.70 at 4)
    err = jnp.abs(W.exp_velocity(w, 6, factor) - W.exp_velocity(w, 6))
    assert float(err[factor:-factor, factor:-factor].max()) < 0.05 * factor**2  # measured 0.038 / 0.125
    with pytest.raises(ValueError, match="divisible"):
        W.exp_velocity(w[:45], 6, factor)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="factor"):
            W.exp_velocity(w, 6, bad)
    with pytest.raises(ValueError, match="steps"):
        W.exp_velocity(w, 2.5, factor)
    with pytest.raises(ValueError, match="pyramid factor"):
        W.downsample(w, 1.5, 2)


def test_exp_velocity_does_not_fold_where_the_displacement_does():
    from jaxreg import metrics

    v = _smooth_field((64, 64), 10.0, 1, sigma=3.0)  # large and sharp enough that x + v folds
    assert float(metrics.folding_fraction(v)) > 0.0
    assert float(metrics.folding_fraction(W.exp_velocity(v, 7))) == 0.0
    g = jax.grad(lambda a: jnp.sum(W.exp_velocity(a, 4) ** 2))(v)  # differentiable through the squarings
    assert g.shape == v.shape and bool(jnp.all(jnp.isfinite(g)))
