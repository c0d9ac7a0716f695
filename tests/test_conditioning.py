"""jaxreg.conditioning: the weight encoding, the training distribution of weight settings, the loss scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxreg import conditioning, objective


def test_encode_against_the_formula():
    r = np.array([[1.0, 100.0, 0.01], [0.0, 10.0, 1.0]], np.float32)
    got = np.asarray(conditioning.encode(r))
    want = np.array([[0.0, 1.0, -1.0, 0, 0, 0], [0.0, 0.5, 0.0, 1, 0, 0]], np.float32)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got.shape == (2, conditioning.FEATURES)


@given(st.floats(1e-4, 1e4), st.floats(1e-4, 1e4))
def test_encode_is_monotone_and_finite(a, b):
    ea, eb = (np.asarray(conditioning.encode(jnp.array([x, 1.0, 1.0])))[0] for x in (a, b))
    assert np.isfinite(ea) and np.isfinite(eb)
    if a < b * (1 - 1e-5):
        assert ea < eb


def test_sample_ratios_distribution():
    n = 20000
    r = np.asarray(conditioning.sample_ratios(jax.random.key(0), n, range_factor=100.0, zero_prob=0.1,
                                              axes_prob=0.5))
    assert r.shape == (n, 3) and np.all(r >= 0) and np.all(r <= 100.0 + 1e-3)
    positive = r[(r > 0) & (r != 1.0)]
    assert positive.min() >= 0.01 - 1e-6
    # log-uniform over [-2, 2]: mean 0, variance 16/12
    assert abs(np.log10(positive).mean()) < 0.05 and abs(np.log10(positive).var() - 4 / 3) < 0.05
    # one-axis samples keep exactly two weights at the centre; about half the samples are of that kind
    at_centre = (r == 1.0).sum(1)
    assert abs((at_centre == 2).mean() - 0.5) < 0.02
    # a varied weight is zero with probability 0.1: per weight 0.5 * 1/3 * 0.1 + 0.5 * 0.1
    assert abs((r == 0).mean(0) - (0.5 / 3 * 0.1 + 0.05)).max() < 0.01


def test_sample_ratios_all_three_or_none_on_axis():
    r = np.asarray(conditioning.sample_ratios(jax.random.key(1), 2000, axes_prob=1.0))
    assert np.all((r == 1.0).sum(1) >= 2)
    r = np.asarray(conditioning.sample_ratios(jax.random.key(1), 2000, axes_prob=0.0, zero_prob=0.0))
    assert (r == 1.0).sum() == 0


def test_loss_scale():
    r = jnp.array([[1.0, 1.0, 1.0], [0.01, 100.0, 1.0], [0.0, 0.0, 0.0], [0.001, 0.001, 0.001]])
    np.testing.assert_allclose(conditioning.loss_scale(r, 100.0), [1.0, 100.0, 0.01, 0.01], rtol=1e-6)


def test_scaled_weights_match_objective_weights():
    centre = objective.weights(1.0, 300.0, 5e4, 0.01, label_dice=0.2)
    for r, want in (([2.0, 0.5, 0.0], objective.weights(2.0, 150.0, 0.0, 0.01, label_dice=0.2)),
                    ([1.0, 1.0, 3.0], objective.weights(1.0, 300.0, 1.5e5, 0.01, label_dice=0.2))):
        got = conditioning.scaled_weights(centre, jnp.array([r]))
        assert set(got) == set(want) == set(objective.TERMS)
        for k in want:  # the Dice loss follows beta's ratio: beta x0 is label-free
            np.testing.assert_allclose(got[k], [want[k]], rtol=1e-6)
    assert float(want["dice_loss"]) == pytest.approx(3e4)


def test_ratios_of():
    centre = {"delta": 1.0, "alpha": 300.0, "beta": 5e4}
    np.testing.assert_allclose(conditioning.ratios_of(centre), [1, 1, 1])
    np.testing.assert_allclose(conditioning.ratios_of(centre, alpha=3000.0, beta=0.0), [1, 10, 0])
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            conditioning.ratios_of(centre, alpha=bad)
