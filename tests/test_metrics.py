"""jaxreg.metrics against numpy references and analytic fields."""

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxreg import metrics


@given(seed=st.integers(0, 10_000))
def test_dice_equals_numpy(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 4, (10, 11)), rng.integers(0, 4, (10, 11))
    ref = [2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k)) for k in (1, 2, 3)]
    np.testing.assert_allclose(metrics.dice(a, b), ref, rtol=1e-6)


def test_dice_edge_cases():
    a = np.array([[0, 1], [2, 2]])
    np.testing.assert_allclose(metrics.dice(a, a, labels=(1, 2)), [1.0, 1.0])
    d = np.asarray(metrics.dice(a, a, labels=(1, 3)))
    assert d[0] == 1.0 and np.isnan(d[1])  # label 3 in neither map: undefined
    assert float(metrics.dice(a, np.zeros_like(a), labels=(1,))[0]) == 0.0


def test_jacobian_determinant_matches_numpy_gradient():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(9, 8, 2)) * 0.3
    d0 = np.gradient(u[..., 0])
    d1 = np.gradient(u[..., 1])
    ref = (1 + d0[0]) * (1 + d1[1]) - d0[1] * d1[0]
    np.testing.assert_allclose(metrics.jacobian_determinant(u.astype(np.float32)), ref, rtol=1e-5, atol=1e-5)
    u3 = rng.normal(size=(5, 6, 7, 3)) * 0.3
    jac = np.stack([np.stack(np.gradient(u3[..., k]), -1) for k in range(3)], -2) + np.eye(3)
    np.testing.assert_allclose(metrics.jacobian_determinant(u3.astype(np.float32)), np.linalg.det(jac), rtol=1e-4, atol=1e-5)


def test_affine_and_rigid_fields():
    x = np.stack(np.meshgrid(np.arange(12.0), np.arange(10.0), indexing="ij"), -1)
    a = np.array([[0.2, -0.1], [0.05, -0.3]])
    det = metrics.jacobian_determinant((x @ a.T + 1.0).astype(np.float32))
    np.testing.assert_allclose(det, np.linalg.det(np.eye(2) + a), rtol=1e-5)
    th = 0.3
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    rigid = (x @ rot.T - x + 2.0).astype(np.float32)
    np.testing.assert_allclose(metrics.jacobian_determinant(rigid), 1.0, rtol=1e-5)
    assert float(metrics.folding_fraction(rigid)) == 0.0


def test_folding_fraction():
    small = 0.5 * jax.random.normal(jax.random.key(0), (7, 7, 2))
    from jaxreg import bspline

    smooth = bspline.bspline_displacement(small, (16, 16), 4)
    assert float(metrics.folding_fraction(smooth)) == 0.0
    x = np.stack(np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="ij"), -1)
    fold = np.zeros((16, 16, 2), np.float32)
    fold[:, 8:, 1] = -2.0 * (x[:, 8:, 1] - 8)  # y_1 runs backwards on the right half
    frac = float(metrics.folding_fraction(fold))
    assert 0.4 < frac < 0.6
    mask = np.zeros((16, 16), bool)
    mask[:, 10:] = True
    assert float(metrics.folding_fraction(fold, mask=mask)) == 1.0


def test_jit_vmap_and_errors():
    u = jax.random.normal(jax.random.key(1), (4, 6, 5, 4, 3)) * 0.1
    out = jax.jit(jax.vmap(metrics.folding_fraction))(u)
    assert out.shape == (4,)
    labels = jax.random.randint(jax.random.key(2), (4, 8, 8), 0, 4)
    assert jax.jit(jax.vmap(metrics.dice))(labels, labels).shape == (4, 3)
    with pytest.raises(ValueError, match=r"same shape.*\(8, 8\) and \(8, 7\)"):
        metrics.dice(np.zeros((8, 8), int), np.zeros((8, 7), int))
    with pytest.raises(ValueError, match="u must be"):
        metrics.jacobian_determinant(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="mask"):
        metrics.folding_fraction(np.zeros((8, 8, 2)), mask=np.ones((8, 7), bool))
