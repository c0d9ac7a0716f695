"""jaxreg.bspline against a plain sum of basis functions and B-spline invariants."""

import itertools

import jax
from jax.test_util import check_grads
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxreg import bspline


def beta3(t):
    """Cubic B-spline written out piece by piece (independent of the library)."""
    t = abs(t)
    if t < 1:
        return (4 - 6 * t**2 + 3 * t**3) / 6
    if t < 2:
        return (2 - t) ** 3 / 6
    return 0.0


def naive_field(control, image_shape, stride):
    """u(x) = sum_k c_k prod_d beta3(x_d / s_d - (k_d - 1)), looping over every pixel and control point."""
    ndim = len(image_shape)
    out = np.zeros(tuple(image_shape) + (ndim,))
    grid = control.shape[:-1]
    for x in itertools.product(*[range(n) for n in image_shape]):
        acc = np.zeros(ndim)
        for k in itertools.product(*[range(n) for n in grid]):
            w = 1.0
            for d in range(ndim):
                w *= beta3(x[d] / stride[d] - (k[d] - 1))
                if w == 0.0:
                    break
            if w:
                acc += w * control[k]
        out[x] = acc
    return out


@pytest.mark.parametrize(
    "image_shape,stride", [((13, 11), (4, 3)), ((16, 16), (8, 8)), ((7, 9, 6), (3, 4, 2)), ((10,), (3,))]
)
def test_equals_direct_sum(image_shape, stride):
    rng = np.random.default_rng(0)
    grid = bspline.control_grid_shape(image_shape, stride)
    control = rng.normal(size=grid + (len(image_shape),)).astype(np.float32)
    got = np.asarray(bspline.bspline_displacement(control, image_shape, stride))
    np.testing.assert_allclose(got, naive_field(control, image_shape, stride), atol=1e-5, rtol=1e-5)


@given(
    h=st.integers(4, 20), w=st.integers(4, 20), sh=st.integers(1, 6), sw=st.integers(1, 6), seed=st.integers(0, 99)
)
def test_equals_direct_sum_property(h, w, sh, sw, seed):
    control = np.random.default_rng(seed).normal(size=bspline.control_grid_shape((h, w), (sh, sw)) + (2,))
    got = np.asarray(bspline.bspline_displacement(control.astype(np.float32), (h, w), (sh, sw)))
    np.testing.assert_allclose(got, naive_field(control, (h, w), (sh, sw)), atol=1e-5, rtol=1e-5)


def test_control_grid_shape():
    assert bspline.control_grid_shape((112, 112), 8) == (17, 17)
    assert bspline.control_grid_shape((112, 112), 4) == (31, 31)
    assert bspline.control_grid_shape((96, 96, 96), 8) == (15, 15, 15)
    assert bspline.control_grid_shape((9,), 4) == (6,)  # pixel 8 sits on control 3 and needs 2..5


@pytest.mark.parametrize("shape,stride", [((20, 24), 4), ((9, 10, 11), (2, 3, 4))])
def test_partition_of_unity_and_linear_reproduction(shape, stride):
    ndim = len(shape)
    grid = bspline.control_grid_shape(shape, stride)
    strides = (stride,) * ndim if isinstance(stride, int) else stride
    const = np.full(grid + (ndim,), 2.5, np.float32)
    np.testing.assert_allclose(bspline.bspline_displacement(const, shape, stride), 2.5, rtol=1e-6)
    # control k at (k - 1) * s: linear coefficients reproduce an affine field exactly
    a = np.arange(1, ndim * ndim + 1, dtype=np.float64).reshape(ndim, ndim) * 0.01
    pos = np.stack(np.meshgrid(*[(np.arange(g) - 1.0) * s for g, s in zip(grid, strides)], indexing="ij"), -1)
    ctrl = (pos @ a.T + 0.3).astype(np.float32)
    x = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)
    np.testing.assert_allclose(bspline.bspline_displacement(ctrl, shape, stride), x @ a.T + 0.3, atol=1e-4)


@pytest.mark.parametrize("shape,stride", [((112, 112), 8), ((37, 21), (4, 2)), ((17, 12, 9), (4, 4, 2))])
def test_upsample_control_keeps_field(shape, stride):
    ndim = len(shape)
    grid = bspline.control_grid_shape(shape, stride)
    control = np.random.default_rng(1).normal(size=grid + (ndim,)).astype(np.float32)
    fine = bspline.upsample_control(control, shape, stride)
    half = tuple(s // 2 for s in ((stride,) * ndim if isinstance(stride, int) else stride))
    assert fine.shape == bspline.control_grid_shape(shape, half) + (ndim,)
    np.testing.assert_allclose(
        bspline.bspline_displacement(fine, shape, half), bspline.bspline_displacement(control, shape, stride), atol=1e-5
    )


def test_jit_vmap_grad():
    shape, stride = (24, 20), 4
    grid = bspline.control_grid_shape(shape, stride)
    batch = jax.random.normal(jax.random.key(0), (3,) + grid + (2,))
    f = jax.jit(jax.vmap(lambda c: bspline.bspline_displacement(c, shape, stride)))
    out = f(batch)
    assert out.shape == (3, 24, 20, 2)
    np.testing.assert_allclose(out[1], bspline.bspline_displacement(batch[1], shape, stride), atol=1e-6)
    # linear map: gradient of sum(u) w.r.t. a control point is the integral of its basis function
    g = jax.grad(lambda c: jnp.sum(bspline.bspline_displacement(c, shape, stride)))(batch[0])
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g) >= 0)
    check_grads(lambda c: bspline.bspline_displacement(c, shape, stride) ** 2, (batch[0],), order=2, atol=1e-2, rtol=1e-2)


def test_bad_input_errors():
    good = np.zeros(bspline.control_grid_shape((32, 32), 8) + (2,), np.float32)
    with pytest.raises(ValueError, match=r"control must have shape \(7, 7, 2\).*got \(6, 7, 2\)"):
        bspline.bspline_displacement(good[:-1], (32, 32), 8)
    with pytest.raises(ValueError, match="image_shape"):
        bspline.bspline_displacement(good, (32, 32, 4), 8)
    with pytest.raises(ValueError, match="last axis"):
        bspline.bspline_displacement(good[..., :1], (32, 32), 8)
    with pytest.raises(ValueError, match="stride"):
        bspline.bspline_displacement(good, (32, 32), 0)
    with pytest.raises(ValueError, match="even"):
        bspline.upsample_control(np.zeros(bspline.control_grid_shape((32, 32), 3) + (2,)), (32, 32), 3)
    with pytest.raises(ValueError, match="control must have shape"):
        jax.jit(lambda c: bspline.bspline_displacement(c, (32, 32), 4))(good)


def test_carry_up_matches_coarse_field_on_fine_grid():
    coarse = np.random.default_rng(3).normal(size=bspline.control_grid_shape((14, 14), 4) + (2,)).astype(np.float32)
    fine = bspline.carry_up(coarse, (56, 56), 4, ratio=4)
    assert fine.shape == bspline.control_grid_shape((56, 56), 4) + (2,)
    u_c = np.asarray(bspline.bspline_displacement(coarse, (14, 14), 4))
    u_f = np.asarray(bspline.bspline_displacement(fine, (56, 56), 4))
    np.testing.assert_allclose(u_f[::4, ::4], 4 * u_c, atol=1e-4)  # fine pixel 4i is coarse pixel i
    with pytest.raises(ValueError, match="power of two"):
        bspline.carry_up(coarse, (42, 42), 4, ratio=3)


def naive_curvature(field):
    """0.5 * sum_k (Neumann 5/7-point Laplacian of component k)**2 with numpy edge padding (pixel units)."""
    total = 0.0
    nd = field.ndim - 1
    for k in range(nd):
        comp = field[..., k].astype(np.float64)
        pad = np.pad(comp, 1, mode="edge")
        lap = np.zeros_like(comp)
        centre = tuple(slice(1, -1) for _ in range(nd))
        for ax in range(nd):
            if comp.shape[ax] < 2:
                continue
            hi, lo = list(centre), list(centre)
            hi[ax], lo[ax] = slice(2, None), slice(None, -2)
            lap += pad[tuple(hi)] + pad[tuple(lo)] - 2.0 * comp
        total += np.sum(lap**2)
    return 0.5 * total


@given(h=st.integers(1, 24), w=st.integers(2, 24), sh=st.integers(1, 6), sw=st.integers(1, 6), seed=st.integers(0, 99))
def test_curvature_on_the_control_grid_equals_the_dense_fields(h, w, sh, sw, seed):
    control = np.random.default_rng(seed).normal(size=bspline.control_grid_shape((h, w), (sh, sw)) + (2,))
    got = float(bspline.curvature(control.astype(np.float32), (h, w), (sh, sw)))
    want = naive_curvature(naive_field(control, (h, w), (sh, sw)))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-4)


@pytest.mark.parametrize("shape,stride", [((112, 112), 4), ((9, 10, 11), (2, 3, 4))])
def test_curvature_on_the_control_grid_value_and_gradient(shape, stride):
    from jaxreg import losses

    control = jnp.asarray(np.random.default_rng(1).normal(size=bspline.control_grid_shape(shape, stride)
                                                           + (len(shape),)), jnp.float32)
    dense = lambda c: losses.curvature(bspline.bspline_displacement(c, shape, stride))  # noqa: E731
    grid = lambda c: bspline.curvature(c, shape, stride)  # noqa: E731
    np.testing.assert_allclose(float(grid(control)), float(dense(control)), rtol=1e-5)
    g_grid, g_dense = jax.grad(grid)(control), jax.grad(dense)(control)
    np.testing.assert_allclose(np.asarray(g_grid), np.asarray(g_dense), atol=1e-5 * float(jnp.abs(g_dense).max()))
    if len(shape) == 3:
        check_grads(grid, (control,), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="control must have shape"):
        bspline.curvature(control[:-1], shape, stride)
