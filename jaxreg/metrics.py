"""Evaluation metrics on ONE sample, N-D (pure JAX, no Flax; batch with jax.vmap).

Label maps are integer arrays `(*spatial)`; displacements `(*spatial, ndim)` in pixels (see jaxreg.warp).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

from jaxreg._checks import check_displacement, check_same_shape, check_spatial

__all__ = ["dice", "jacobian", "jacobian_determinant", "folding_fraction"]


def dice(fixed_labels, warped_labels, labels: Sequence[int] = (1, 2, 3)):
    """Hard Dice per label: integer maps `(*S)` -> `(len(labels),)`; NaN where a label is in neither map."""
    check_spatial("fixed_labels", fixed_labels)
    check_same_shape("fixed_labels", fixed_labels, "warped_labels", warped_labels)
    labels = tuple(int(v) for v in labels)
    if not labels:
        raise ValueError("labels must name at least one label value")
    out = []
    for lab in labels:
        a = fixed_labels == lab
        b = warped_labels == lab
        inter = jnp.sum(a & b)
        total = jnp.sum(a) + jnp.sum(b)
        out.append(jnp.where(total > 0, 2.0 * inter / jnp.maximum(total, 1), jnp.nan))
    return jnp.stack(out).astype(jnp.float32)


def jacobian(u):
    """Jacobian of the deformation x + u(x): u `(*S, ndim)` -> `(*S, ndim, ndim)`, entry [..., k, j] = d y_k / d x_j.

    Central differences inside, one-sided at the border (as numpy.gradient). Dimensionless, so pixel size cancels.
    """
    ndim = check_displacement("u", u)
    u = jnp.asarray(u)
    if min(u.shape[:-1]) < 2:
        raise ValueError(f"u needs at least 2 pixels along every spatial axis; got shape {u.shape}")
    rows = []
    for k in range(ndim):
        grads = jnp.gradient(u[..., k], axis=tuple(range(ndim)))
        if ndim == 1:
            grads = [grads]
        rows.append(jnp.stack(grads, axis=-1))
    return jnp.stack(rows, axis=-2) + jnp.eye(ndim, dtype=u.dtype)


def jacobian_determinant(u):
    """det(I + grad u) per pixel: u `(*S, ndim)` pixels -> `(*S)`."""
    j = jacobian(u)
    ndim = j.shape[-1]
    if ndim == 1:
        return j[..., 0, 0]
    if ndim == 2:
        return j[..., 0, 0] * j[..., 1, 1] - j[..., 0, 1] * j[..., 1, 0]
    return (
        j[..., 0, 0] * (j[..., 1, 1] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 1])
        - j[..., 0, 1] * (j[..., 1, 0] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 0])
        + j[..., 0, 2] * (j[..., 1, 0] * j[..., 2, 1] - j[..., 1, 1] * j[..., 2, 0])
    )


def folding_fraction(u, mask=None):
    """Share of pixels with det(I + grad u) <= 0 (the paper's "folding", as a fraction, not %): `(*S, ndim)` -> scalar.

    `mask` `(*S)` bool restricts the count to a region (e.g. the heart).
    """
    det = jacobian_determinant(u)
    fold = (det <= 0).astype(jnp.float32)
    if mask is None:
        return jnp.mean(fold)
    check_same_shape("mask", mask, "det(I + grad u)", det)
    m = mask.astype(jnp.float32)
    return jnp.sum(fold * m) / jnp.maximum(jnp.sum(m), 1.0)
