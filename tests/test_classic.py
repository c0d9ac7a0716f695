"""jaxreg.classic on phantom pairs with known displacement: it must move towards the truth, without folding."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg import bspline, classic, metrics, warp
from jaxreg.data import phantom_pairs


@pytest.mark.parametrize("extra", [{}, {"fine_stride": 2}, {"diffeomorphic": 4},
                                   {"diffeomorphic": 4, "exp_factor": 2}])
def test_classic_improves_dice_and_endpoint_error(extra):
    ps = phantom_pairs(6, seed=3, size=64)
    cfg = classic.ClassicConfig(max_iters=(15, 10, 5), **extra)
    u, iters = classic.register_batch(ps.fixed, ps.moving, cfg)
    assert u.shape == (6, 64, 64, 2) and iters.shape == (6, 3)
    heart = (ps.fixed_labels > 0) | (ps.moving_labels > 0)
    err_before = np.linalg.norm(ps.true_displacement, axis=-1)[heart].mean()
    err_after = np.linalg.norm(np.asarray(u) - ps.true_displacement, axis=-1)[heart].mean()
    assert err_after < 0.8 * err_before
    warped = jax.vmap(lambda l, v: jnp.argmax(warp.warp_labels(l, v, 4), -1))(ps.moving_labels.astype(np.int32), u)
    before = np.nanmean(np.asarray(jax.vmap(metrics.dice)(ps.fixed_labels, ps.moving_labels)))
    after = np.nanmean(np.asarray(jax.vmap(metrics.dice)(ps.fixed_labels, warped)))
    assert after > before + 0.03
    assert float(jnp.max(jax.vmap(metrics.folding_fraction)(u))) < 1e-3


def test_identical_images_stay_at_identity_and_fit_control_inverts_bspline():
    img = np.asarray(phantom_pairs(1, seed=0, size=64).fixed)
    u, _ = classic.register_batch(img, img, classic.ClassicConfig(max_iters=5))
    assert float(np.abs(u).max()) < 1e-3
    c = jax.random.normal(jax.random.key(0), bspline.control_grid_shape((64, 64), 4) + (2,))
    field = bspline.bspline_displacement(c, (64, 64), 4)
    refit = bspline.bspline_displacement(classic.fit_control(field, (64, 64), 4), (64, 64), 4)
    np.testing.assert_allclose(refit, field, atol=1e-3)


def test_refinement_starts_from_the_given_field():
    ps = phantom_pairs(4, seed=1, size=64)
    cfg = classic.ClassicConfig(max_iters=(1, 1, 3))
    u, _ = classic.refine_batch(ps.fixed, ps.moving, ps.true_displacement, cfg)
    heart = ps.fixed_labels > 0
    err = np.linalg.norm(np.asarray(u) - ps.true_displacement, axis=-1)[heart].mean()
    assert err < 0.5 * np.linalg.norm(ps.true_displacement, axis=-1)[heart].mean()


def test_composed_refinement_from_zero_is_registration_and_moves_a_partial_field_toward_the_truth():
    ps = phantom_pairs(3, seed=1, size=64)
    cfg = classic.ClassicConfig(max_iters=(6, 4, 4))
    zero = np.zeros_like(ps.true_displacement)
    from_zero, it0 = classic.refine_batch(ps.fixed, ps.moving, zero, cfg, composed=True)
    plain, it1 = classic.register_batch(ps.fixed, ps.moving, cfg)
    np.testing.assert_allclose(from_zero, plain, atol=1e-5)  # warp by 0 is exact, compose(r, 0) = r
    np.testing.assert_array_equal(it0, it1)
    half = 0.5 * ps.true_displacement
    heart = ps.fixed_labels > 0
    u, iters = classic.refine_batch(ps.fixed, ps.moving, half, cfg, composed=True)
    assert iters.shape == (3, 3)  # every level of cfg, not only the finest
    err_half = np.linalg.norm(half - ps.true_displacement, axis=-1)[heart].mean()
    err = np.linalg.norm(np.asarray(u) - ps.true_displacement, axis=-1)[heart].mean()
    assert err < 0.7 * err_half
    assert _label_dice(ps, u) > _label_dice(ps, half) + 0.01


def test_composed_diffeomorphic_refinement_of_an_unfolded_field_does_not_fold():
    ps = phantom_pairs(2, seed=2, size=64)
    init = 0.6 * ps.true_displacement
    assert float(jnp.max(jax.vmap(metrics.folding_fraction)(init))) == 0.0
    soft = classic.ClassicConfig(alpha=0.01, levels=(2, 1), max_iters=(8, 8), diffeomorphic=4)
    u, _ = classic.refine_batch(ps.fixed, ps.moving, init, soft, composed=True)
    assert float(np.abs(np.asarray(u) - init).max()) > 0.3  # it moved
    assert float(jnp.max(jax.vmap(metrics.folding_fraction)(u))) == 0.0


def _label_dice(ps, u):
    warped = jax.vmap(lambda l, v: jnp.argmax(warp.warp_labels(l, v, 4), -1))(ps.moving_labels.astype(np.int32), u)
    return float(np.nanmean(np.asarray(jax.vmap(metrics.dice)(ps.fixed_labels, warped))))


def test_label_branch_acts_only_with_both_label_maps_and_beta_and_raises_dice():
    """The label term (beta > 0 and both label maps) pulls the labels together beyond what the images alone give;
    beta 0, or one label map missing, is exactly the image-only registration."""
    ps = phantom_pairs(3, seed=5, size=64)
    fl, ml = ps.fixed_labels.astype(np.int32), ps.moving_labels.astype(np.int32)
    cfg = classic.ClassicConfig(max_iters=(10, 8, 5))
    with_beta = dataclasses.replace(cfg, beta=1e4)

    def run(c, **labels):
        return np.asarray(jax.jit(jax.vmap(lambda f, m, lab: classic.register(f, m, c, **lab)[0]))(
            ps.fixed, ps.moving, labels))

    plain = run(cfg)
    np.testing.assert_array_equal(run(cfg, fixed_labels=fl, moving_labels=ml), plain)  # beta 0: labels unused
    np.testing.assert_array_equal(run(with_beta, moving_labels=ml), plain)  # one map: no label term
    labelled = run(with_beta, fixed_labels=fl, moving_labels=ml)
    assert np.abs(labelled - plain).max() > 0.05
    assert _label_dice(ps, labelled) > _label_dice(ps, plain) + 0.01


@pytest.mark.parametrize("chunk", [1, 2])
def test_chunked_batches_register_each_pair_as_on_its_own(chunk):
    # chunk 2 over 3 pairs: a full chunk and a remainder; chunk 1: pair by pair, unbatched; every pair must get its
    # lone registration's field
    ps = phantom_pairs(3, seed=2, size=64)
    cfg = classic.ClassicConfig(max_iters=(6, 4, 3))
    chunked, iters = classic.register_batch(ps.fixed, ps.moving, cfg, chunk=chunk)
    assert chunked.shape == (3, 64, 64, 2) and iters.shape == (3, 3)
    for i in range(3):
        alone, _ = classic.register_batch(ps.fixed[i:i + 1], ps.moving[i:i + 1], cfg)
        np.testing.assert_allclose(chunked[i], alone[0], atol=2e-3)
    assert float(np.abs(chunked).max()) > 0.1  # the pairs did move
    for composed in (False, True):
        refined, _ = classic.refine_batch(ps.fixed, ps.moving, ps.true_displacement, cfg, chunk, composed)
        whole, _ = classic.refine_batch(ps.fixed, ps.moving, ps.true_displacement, cfg, None, composed)
        np.testing.assert_allclose(refined, whole, atol=2e-3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(levels=(4, 2)), "ending at 1"),
    (dict(levels=(2, 4, 1)), "decreasing"),
    (dict(levels=(3, 2, 1)), "dividing"),
    (dict(levels=(4, 2, 1), max_iters=(10, 10)), "one cap per level"),
    (dict(stride=4, fine_stride=3), "fine_stride"),
    (dict(stride=4, fine_stride=8), "fine_stride"),
    (dict(diffeomorphic=-1), "diffeomorphic"),
    (dict(diffeomorphic=4.0), "diffeomorphic"),
    (dict(diffeomorphic=4, exp_factor=0), "exp_factor"),
    (dict(diffeomorphic=4, exp_factor=1.5), "exp_factor"),
])
def test_config_rejects_pyramids_that_do_not_end_at_full_resolution(kwargs, match):
    with pytest.raises(ValueError, match=match):
        classic.ClassicConfig(**kwargs)


def test_cv_choice_is_the_grid_setting_the_cv_chose():
    import json
    import pathlib

    from jaxreg import cv

    # the recorded CV's choice on all patients (`jaxreg register --method classic` runs it): a new CV record that
    # chooses otherwise must move CV_CHOICE with it
    record = pathlib.Path(__file__).parents[1] / "docs" / "classic_cv" / "results_classic_cv.json"
    chosen = json.loads(record.read_text())["chosen_on_all"]
    assert cv.classic_grid()[chosen] == classic.CV_CHOICE
    assert classic.CV_CHOICE != classic.ClassicConfig()


def test_timed_batches_keeps_order_and_charges_the_padding(monkeypatch):
    """Outputs in input order with the last batch padded; seconds a pair = timed wall time / pairs computed."""
    import types

    from jaxreg import cv

    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(cv.time, "perf_counter", lambda: clock.now)

    def fn(a, b):  # one second a call, whatever the batch
        clock.now += 1.0
        return (a * 10 + b,)

    a, b = np.arange(5.0), np.ones(5)
    out, seconds = cv.timed_batches(fn, (a, b), batch=4)
    np.testing.assert_array_equal(out, a * 10 + 1)
    assert seconds == pytest.approx(2.0 / 8)  # two timed calls (the warm-up untimed) for 8 pairs computed
