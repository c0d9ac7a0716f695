"""The registration objective, written once: per level delta * NGF + alpha * curvature + beta * label terms.

Used by network training (`jaxreg.training.step`) and by the classic method (`jaxreg.classic`). Pure JAX, no Flax.
Convention (docs/decisions.md, "Loss scales"): on images average-pooled to a level,
    L_l = delta * NGF_pix + alpha_eff * curvature_pix + beta * (label_ssd_pix / (0.5 * N * C) + label_dice * D_l)
where *_pix are `jaxreg.losses` with spacing 1 (pixel sums; the displacement in level pixels), N the pixel count of
the FINEST level and C the label channels: at the finest level the label term is the mean squared one-hot error.
D_l = `losses.dice_loss` (1 - soft Dice, mean over the foreground labels) of the warped moving one-hot map at the
level; `label_dice` (0 in the paper's recipe) is its weight as a multiple of beta, so beta scales all supervision.
The weights are data (`weights(...)`: a dict of scalars, or of `(P,)` arrays for a population), so one compiled
program serves every setting. `alpha_eff = alpha * curvature_scale` maps the paper's alpha onto the pixel sums.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from jaxreg import bspline, losses, warp

TERMS = ("ngf", "curvature", "label", "dice_loss")


def weights(delta, alpha, beta, curvature_scale=1.0, label_dice=0.0) -> dict:
    """Loss weights as arrays `{"ngf": delta, "curvature": alpha * curvature_scale, "label": beta, "dice_loss":
    beta * label_dice}` (float32)."""
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return {"ngf": f32(delta), "curvature": f32(alpha) * f32(curvature_scale), "label": f32(beta),
            "dice_loss": f32(beta) * f32(label_dice)}


def level_terms(u, fixed, moving, fixed_onehot=None, moving_onehot=None, n_finest: int | None = None,
                epsilon: float = 0.1, squared_ngf: bool = True, control=None, stride=None,
                with_dice: bool = False) -> dict:
    """Unweighted terms of one level, one sample: u `(*S, nd)` level pixels, images `(*S)`, one-hot `(*S, C)`.

    `n_finest`: pixel count of the finest level (default: this level's). Without label maps the label terms are 0.
    `with_dice` (static): compute the Dice loss; otherwise it is 0 (a recipe with `label_dice` 0 weights it by 0).
    `control`, `stride`: u's cubic B-spline control grid, when u is one; the curvature is then computed from it
    (`bspline.curvature`: the same value, on the control grid instead of the pixels).
    """
    d = losses.ngf(fixed, warp.warp(moving, u), eps=epsilon, squared=squared_ngf)
    r = losses.curvature(u) if control is None else bspline.curvature(control, u.shape[:-1], stride)
    if fixed_onehot is None or moving_onehot is None:
        b = dl = jnp.zeros((), d.dtype)
    else:
        n = math.prod(fixed.shape) if n_finest is None else n_finest
        warped = warp.warp(moving_onehot, u)
        b = losses.label_ssd(fixed_onehot, warped) / (0.5 * n * fixed_onehot.shape[-1])
        dl = losses.dice_loss(fixed_onehot, warped) if with_dice else jnp.zeros((), d.dtype)
    return {"ngf": d, "curvature": r, "label": b, "dice_loss": dl}


def combine(terms: dict, w: dict):
    """delta * ngf + alpha_eff * curvature + beta * label + beta * label_dice * dice_loss for `terms` and
    `weights(...)` of matching shapes."""
    return sum(w[k] * terms[k] for k in TERMS)


def multilevel_sample_terms(fields: Sequence, fixed, moving, fixed_onehot, moving_onehot, level_factors: Sequence[int],
                            level_weights: Sequence[float], epsilon: float = 0.1, squared_ngf: bool = True,
                            with_dice: bool = False) -> dict:
    """Per-sample terms `(B,)` summed over levels: fields coarse -> fine `(B, *S_l, nd)`, images `(B, *S)`.

    Each level sees the images average-pooled by its factor; pixel sums weight a coarse level by its pixel count,
    so `level_weights` are 1 in the paper's recipe.
    """
    spatial = fixed.shape[1:]
    n_finest = math.prod(spatial)
    total = {k: 0.0 for k in TERMS}
    for lw, u, factor in zip(level_weights, fields, level_factors):
        pool = jax.vmap(lambda a, factor=factor: warp.downsample(a, factor, len(spatial)))
        f, m, fo, mo = pool(fixed), pool(moving), pool(fixed_onehot), pool(moving_onehot)
        t = jax.vmap(lambda *a: level_terms(*a, n_finest=n_finest, epsilon=epsilon, squared_ngf=squared_ngf,
                                            with_dice=with_dice))(
            u, f, m, fo, mo)
        for k in TERMS:
            total[k] = total[k] + lw * t[k]
    return total


def multilevel_terms(fields: Sequence, fixed, moving, fixed_onehot, moving_onehot, level_factors: Sequence[int],
                     level_weights: Sequence[float], epsilon: float = 0.1, squared_ngf: bool = True,
                     with_dice: bool = False) -> dict:
    """Batch means of `multilevel_sample_terms` (scalars)."""
    t = multilevel_sample_terms(fields, fixed, moving, fixed_onehot, moving_onehot, level_factors, level_weights,
                                epsilon, squared_ngf, with_dice)
    return {k: jnp.mean(v) for k, v in t.items()}


def identity_terms(fixed, moving, fixed_onehot, moving_onehot, epsilon: float = 0.1) -> dict:
    """Mean terms at u = 0 over a batch `(B, *S)` (one-hot `(B, *S, C)`): NGF squared and unsquared and the label
    SSD as pixel sums, and the label term as the loss normalises it (the check behind the loss convention)."""
    zero = jnp.zeros(fixed.shape[1:] + (fixed.ndim - 1,), jnp.float32)
    sq = jax.vmap(lambda f, m, fo, mo: level_terms(zero, f, m, fo, mo, epsilon=epsilon))(
        fixed, moving, fixed_onehot, moving_onehot)
    unsq = jax.vmap(lambda f, m: level_terms(zero, f, m, epsilon=epsilon, squared_ngf=False)["ngf"])(fixed, moving)
    n, c = math.prod(fixed.shape[1:]), fixed_onehot.shape[-1]
    label_mse = jnp.mean(sq["label"])
    return {"ngf_pix": float(jnp.mean(sq["ngf"])), "ngf_unsquared_pix": float(jnp.mean(unsq)),
            "label_ssd_pix": float(label_mse * 0.5 * n * c), "label_mse": float(label_mse)}
