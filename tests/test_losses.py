"""jaxreg.losses against plain numpy loops, finite differences and invariants."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

from jaxreg import losses


def ngf_loop(f, m, eps, h, squared=True):
    """NGF with an explicit loop over interior pixels and central differences."""
    nd = f.ndim
    total = 0.0
    for x in itertools.product(*[range(1, n - 1) for n in f.shape]):
        gf, gm = np.zeros(nd), np.zeros(nd)
        for k in range(nd):
            up, dn = list(x), list(x)
            up[k] += 1
            dn[k] -= 1
            gf[k] = (f[tuple(up)] - f[tuple(dn)]) / (2 * h[k])
            gm[k] = (m[tuple(up)] - m[tuple(dn)]) / (2 * h[k])
        inner = gf @ gm + eps**2
        nf, nm = np.sqrt(gf @ gf + eps**2), np.sqrt(gm @ gm + eps**2)
        r = inner / (nf * nm)
        total += 1 - (r**2 if squared else r)
    return 0.5 * np.prod(h) * total


def curvature_loop(u, h):
    """Curvature with an explicit loop; Neumann boundary = mirror the edge value (replicate)."""
    nd = u.ndim - 1
    shape = u.shape[:-1]
    total = 0.0
    for x in itertools.product(*[range(n) for n in shape]):
        for k in range(nd):
            lap = 0.0
            for j in range(nd):
                up, dn = list(x), list(x)
                up[j] = min(x[j] + 1, shape[j] - 1)
                dn[j] = max(x[j] - 1, 0)
                lap += (u[tuple(up)][k] * h[k] - 2 * u[x][k] * h[k] + u[tuple(dn)][k] * h[k]) / h[j] ** 2
            total += lap**2
    return 0.5 * np.prod(h) * total


@pytest.mark.parametrize("shape,h", [((9, 8), (1.0, 1.0)), ((7, 6), (1.5, 0.7)), ((5, 6, 7), (2.0, 1.0, 1.2))])
@pytest.mark.parametrize("squared", [True, False])
def test_ngf_equals_loop(shape, h, squared):
    rng = np.random.default_rng(0)
    f, m = rng.random(shape), rng.random(shape)
    got = losses.ngf(f.astype(np.float32), m.astype(np.float32), eps=0.1, spacing=h, squared=squared)
    np.testing.assert_allclose(got, ngf_loop(f, m, 0.1, h, squared), rtol=1e-4)


@given(seed=st.integers(0, 10_000), eps=st.floats(0.01, 2.0))
def test_ngf_self_zero_and_bounds(seed, eps):
    img = np.random.default_rng(seed).random((12, 10)).astype(np.float32)
    assert abs(float(losses.ngf(img, img, eps=eps))) < 1e-4
    other = np.random.default_rng(seed + 1).random((12, 10)).astype(np.float32)
    value = float(losses.ngf(img, other, eps=eps))
    assert 0 <= value <= 0.5 * 10 * 8 + 1e-3  # integrand in [0, 1]


def test_ngf_orders_alignment():
    x = np.stack(np.meshgrid(np.arange(40.0), np.arange(40.0), indexing="ij"), -1)
    disc = (np.hypot(x[..., 0] - 18, x[..., 1] - 22) < 9).astype(np.float32)
    moved = np.roll(disc, 2, axis=0)
    rotated = np.rot90(np.roll(disc, 7, axis=1)).copy()
    unrelated = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    d0 = float(losses.ngf(disc, disc))
    d_move, d_rot, d_rand = (float(losses.ngf(disc, m)) for m in (moved, rotated, unrelated))
    assert d0 == pytest.approx(0.0, abs=1e-5)
    assert 0 < d_move < d_rot and d_move < d_rand


def test_ngf_constant_image_finite_with_gradient():
    const = jnp.full((10, 10), 0.5)
    value, grad = jax.value_and_grad(lambda m: losses.ngf(const, m))(const)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert float(value) == pytest.approx(0.0, abs=1e-6)


def test_ngf_gradients():
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        f, m = jnp.asarray(rng.random((7, 8))), jnp.asarray(rng.random((7, 8)))
        check_grads(lambda w: losses.ngf(f, w), (m,), order=2, eps=1e-5)
        check_grads(lambda w: losses.ngf(f, w, squared=False, spacing=(1.3, 0.8)), (m,), order=1, eps=1e-5)


@pytest.mark.parametrize("shape,h", [((6, 7), (1.0, 1.0)), ((5, 6), (1.4, 0.6)), ((4, 5, 3), (1.0, 2.0, 0.5))])
def test_curvature_equals_loop(shape, h):
    u = np.random.default_rng(2).normal(size=shape + (len(shape),))
    np.testing.assert_allclose(losses.curvature(u.astype(np.float32), spacing=h), curvature_loop(u, h), rtol=1e-4)


def test_curvature_invariants():
    zero = jnp.zeros((12, 12, 2))
    value, grad = jax.value_and_grad(losses.curvature)(zero)
    assert float(value) == 0.0 and np.all(np.isfinite(grad))
    shift = jnp.broadcast_to(jnp.array([2.0, -3.0]), (12, 12, 2))
    assert float(losses.curvature(shift)) == pytest.approx(0.0, abs=1e-8)
    u = jax.random.normal(jax.random.key(0), (16, 16, 2))
    # 2D, isotropic: scale invariant in the pixel size
    np.testing.assert_allclose(losses.curvature(u, spacing=1.7), losses.curvature(u), rtol=1e-5)
    # quadratic field: interior Laplacian is 2a per axis
    x = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0), indexing="ij"), -1)
    quad = np.stack([0.1 * x[..., 0] ** 2, 0.05 * x[..., 1] ** 2], -1).astype(np.float32)
    np.testing.assert_allclose(losses.laplacian(quad)[1:-1, 1:-1], np.broadcast_to([0.2, 0.1], (8, 8, 2)), atol=1e-5)


def test_curvature_gradients():
    with jax.enable_x64(True):
        u = jax.random.normal(jax.random.key(1), (6, 5, 2), dtype=jnp.float64)
        check_grads(losses.curvature, (u,), order=2, eps=1e-4)
        check_grads(lambda v: losses.curvature(v, spacing=(0.5, 2.0)), (u,), order=1, eps=1e-4)


def test_label_ssd_and_dice_loss():
    rng = np.random.default_rng(3)
    a = jax.nn.one_hot(rng.integers(0, 4, (9, 8)), 4)
    b = jax.nn.one_hot(rng.integers(0, 4, (9, 8)), 4)
    ref = 0.5 * 1.5 * 2.0 * np.sum((np.asarray(b) - np.asarray(a)) ** 2)
    np.testing.assert_allclose(losses.label_ssd(a, b, spacing=(1.5, 2.0)), ref, rtol=1e-6)
    assert float(losses.label_ssd(a, a)) == 0.0
    assert float(losses.dice_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    disjoint = jnp.roll(jnp.eye(4)[jnp.array([1, 2, 3, 1])], 0, 0)
    assert float(losses.dice_loss(disjoint, jnp.eye(4)[jnp.array([2, 3, 1, 2])])) == pytest.approx(1.0, abs=1e-4)
    with jax.enable_x64(True):
        soft = jax.nn.softmax(jnp.asarray(rng.normal(size=(5, 6, 4))))
        check_grads(lambda w: losses.dice_loss(jnp.asarray(a[:5, :6], jnp.float64), w), (soft,), order=1, eps=1e-5)
        check_grads(lambda w: losses.label_ssd(jnp.asarray(a[:5, :6], jnp.float64), w), (soft,), order=2, eps=1e-5)


def test_jit_vmap_3d():
    rng = np.random.default_rng(4)
    f = rng.random((3, 6, 7, 8)).astype(np.float32)
    m = rng.random((3, 6, 7, 8)).astype(np.float32)
    u = rng.normal(size=(3, 6, 7, 8, 3)).astype(np.float32)
    batched = jax.jit(jax.vmap(lambda a, b, v: (losses.ngf(a, b), losses.curvature(v))))(f, m, u)
    for i in range(3):
        np.testing.assert_allclose(batched[0][i], losses.ngf(f[i], m[i]), rtol=1e-5)
        np.testing.assert_allclose(batched[1][i], losses.curvature(u[i]), rtol=1e-5)
    # per-sample spacing under vmap
    sp = np.array([[1.0, 1.0, 1.0], [2.0, 1.0, 1.0], [1.0, 1.0, 3.0]], np.float32)
    per = jax.vmap(lambda a, b, s: losses.ngf(a, b, spacing=s))(f, m, sp)
    np.testing.assert_allclose(per[1], losses.ngf(f[1], m[1], spacing=(2.0, 1.0, 1.0)), rtol=1e-5)


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"fixed and warped must have the same shape; got \(8, 8\) and \(8, 9\)"):
        losses.ngf(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="eps"):
        losses.ngf(np.zeros((8, 8)), np.zeros((8, 8)), eps=0.0)
    with pytest.raises(ValueError, match="spacing"):
        losses.ngf(np.zeros((8, 8)), np.zeros((8, 8)), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="at least 3 pixels"):
        losses.ngf(np.zeros((2, 8)), np.zeros((2, 8)))
    with pytest.raises(ValueError, match="u must be"):
        losses.curvature(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="fixed_onehot and warped_onehot"):
        losses.label_ssd(np.zeros((8, 8, 4)), np.zeros((8, 8, 3)))
