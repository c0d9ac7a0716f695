"""Loss-weight conditioning of a registration network (the "hyper" model): what it sees and what it trains on.

A weight-conditioned network is trained around a centre setting c = (delta, alpha, beta) (its TrainConfig's
weights) and answers any setting w = r * c, r = (r_delta, r_alpha, r_beta) >= 0 the ratios to the centre. Pure JAX:
- `encode(r)`: ratios `(..., 3)` -> the condition vector `(..., 6)` the network's FiLM layers read: per weight
  log10(r) / 2 (so x0.01 .. x100 maps onto -1 .. 1; 0 where r = 0) and an indicator of r = 0 (the "x0" cells,
  whose log is -inf).
- `sample_ratios(key, n, ...)`: the training distribution, per sample: with probability `axes_prob` one weight at
  a time is varied (as in the paper's Table 1; the other two stay at the centre), otherwise all three
  independently; a varied weight is 0 with probability `zero_prob`, else log-uniform over
  [1/range_factor, range_factor].
- `loss_scale(r)`: each sample's loss is divided by max(max_k r_k, 1/range_factor), so a x100 setting does not
  drown the batch's gradient; for a conditioned network this keeps every setting's optimum (a positive factor
  per setting), only the balance between settings changes (docs/decisions.md, "Weight-conditioned model").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

WEIGHTS = ("delta", "alpha", "beta")
FEATURES = 2 * len(WEIGHTS)


def encode(ratios):
    """Ratios to the centre `(..., 3)` (delta, alpha, beta; >= 0) -> condition vector `(..., 6)`:
    [log10(r) / 2 (0 where r = 0), 1 where r = 0 else 0] per weight."""
    r = jnp.asarray(ratios, jnp.float32)
    zero = r <= 0
    log = jnp.where(zero, 0.0, jnp.log10(jnp.where(zero, 1.0, r)) / 2.0)
    return jnp.concatenate([log, zero.astype(jnp.float32)], axis=-1)


def sample_ratios(key, n: int, range_factor: float = 100.0, zero_prob: float = 0.1, axes_prob: float = 0.5):
    """`n` training settings as ratios to the centre `(n, 3)` (module docstring: the distribution)."""
    k_axes, k_term, k_zero, k_log = jax.random.split(key, 4)
    span = jnp.log10(jnp.asarray(range_factor, jnp.float32))
    log_r = jax.random.uniform(k_log, (n, 3), minval=-span, maxval=span)
    varied = 10.0 ** log_r
    varied = jnp.where(jax.random.uniform(k_zero, (n, 3)) < zero_prob, 0.0, varied)
    one_axis = jax.random.uniform(k_axes, (n, 1)) < axes_prob
    term = jax.random.randint(k_term, (n, 1), 0, 3)
    on_axis = jnp.where(jnp.arange(3)[None, :] == term, varied, 1.0)
    return jnp.where(one_axis, on_axis, varied)


def loss_scale(ratios, range_factor: float = 100.0):
    """Per-sample divisor of the loss `(...)` for ratios `(..., 3)`: max(max_k r_k, 1 / range_factor)."""
    return jnp.maximum(jnp.max(jnp.asarray(ratios, jnp.float32), axis=-1), 1.0 / range_factor)


def scaled_weights(centre: dict, ratios) -> dict:
    """Per-sample loss weights `{ngf, curvature, label, dice_loss: (n,)}` = the centre's (`objective.weights`) times
    the ratios `(n, 3)` (delta, alpha, beta; the Dice loss is weighted beta * label_dice, so it follows beta's
    ratio); `centre` values are scalars (or anything broadcasting against `(n,)`)."""
    r = jnp.asarray(ratios, jnp.float32)
    return {"ngf": centre["ngf"] * r[:, 0], "curvature": centre["curvature"] * r[:, 1],
            "label": centre["label"] * r[:, 2], "dice_loss": centre["dice_loss"] * r[:, 2]}


def ratios_of(centre: dict, delta=None, alpha=None, beta=None):
    """Ratios `(3,)` of a requested setting to `centre` = {"delta", "alpha", "beta"} (flag units); a weight left
    out (None) stays at the centre. ValueError for a negative or non-finite weight."""
    out = []
    for name in WEIGHTS:
        value = {"delta": delta, "alpha": alpha, "beta": beta}[name]
        if value is None:
            out.append(1.0)
            continue
        value = float(value)
        if not value >= 0.0 or value == float("inf"):
            raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        out.append(value / float(centre[name]))
    return jnp.asarray(out, jnp.float32)
