"""Uniform cubic B-spline displacement fields in N-D (pure JAX, no Flax).

Convention: along an axis with `stride` s (pixels per control interval), control point k sits at pixel
coordinate (k - 1) * s, so pixel x is influenced by control points floor(x/s) .. floor(x/s) + 3 and an axis
of N pixels needs floor((N - 1)/s) + 4 control points (one border point before, two after). Control values
and the dense displacement share units (pixels in jaxreg). Layout is channel-last:
control `(*grid, ndim)` -> displacement `(*image_shape, ndim)`.

The dense field is evaluated exactly and separably: one (N_k, K_k) basis matrix per axis (4 non-zeros a row),
contracted axis by axis, which XLA lowers to small matmuls.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import losses
from jaxreg._checks import as_tuple, check_displacement, shape_str

__all__ = [
    "cubic_bspline",
    "control_grid_shape",
    "basis_matrix",
    "bspline_displacement",
    "curvature",
    "upsample_control",
    "subdivision_matrix",
    "carry_up",
]


def cubic_bspline(t):
    """Centred uniform cubic B-spline kernel beta3(t), support (-2, 2), integral 1. Works on numpy or jax arrays."""
    xp = jnp if not isinstance(t, (np.ndarray, float, int)) else np
    a = xp.abs(t)
    inner = 2.0 / 3.0 - a**2 + 0.5 * a**3
    outer = (2.0 - a) ** 3 / 6.0
    return xp.where(a < 1.0, inner, xp.where(a < 2.0, outer, 0.0))


def control_grid_shape(image_shape: Sequence[int], stride) -> tuple[int, ...]:
    """Control points per axis that cover `image_shape` (pixels) at `stride` pixels per interval: floor((N-1)/s)+4."""
    image_shape = tuple(int(n) for n in image_shape)
    if not image_shape or any(n <= 0 for n in image_shape):
        raise ValueError(f"image_shape must be a non-empty tuple of positive ints; got {image_shape}")
    strides = as_tuple(stride, len(image_shape), "stride")
    return tuple((n - 1) // s + 4 for n, s in zip(image_shape, strides))


@functools.lru_cache(maxsize=256)
def basis_matrix(n: int, stride: int) -> np.ndarray:
    """(n, floor((n-1)/stride)+4) float32 matrix: row x holds the 4 cubic B-spline weights of pixel x."""
    k = (n - 1) // stride + 4
    x = np.arange(n, dtype=np.float64)
    i = np.floor(x / stride).astype(int)
    mat = np.zeros((n, k), np.float64)
    for j in range(4):
        # control i + j sits at (i + j - 1) * stride
        mat[np.arange(n), i + j] = cubic_bspline(x / stride - (i + j - 1))
    out = mat.astype(np.float32)
    out.setflags(write=False)
    return out


def _contract(field, matrices):
    """Applies matrices[k] (out_k, in_k) along spatial axis k of `field` (*spatial, C).

    Works channel-first: every step contracts the axis after C with the field as the left operand, so the result
    comes out as contiguous (C, *out) planes (also under vmap) and the final move to channel-last is a layout
    bitcast. Consumers that take u[..., k] then read planes; a spatial-axis-major result made every downstream
    fusion read it transposed (2D benchmark pipeline 39.1 -> 25.3 ms; docs/performance.md, XLA:CPU performance findings).
    """
    x = jnp.moveaxis(field, -1, 0)
    for mat in matrices:
        x = jnp.tensordot(x, jnp.asarray(mat, x.dtype).T, axes=((1,), (0,)))  # (C, in_k, ...) -> (C, ..., out_k)
    return jnp.moveaxis(x, 0, -1)


def bspline_displacement(control, image_shape: Sequence[int], stride):
    """Dense cubic B-spline field: control `(*control_grid_shape(image_shape, stride), ndim)` -> `(*image_shape, ndim)`.

    Units follow the control values (pixels in jaxreg). `stride` is an int or one int per axis (static).
    """
    image_shape = tuple(int(n) for n in image_shape)
    ndim = check_displacement("control", control)
    if len(image_shape) != ndim:
        raise ValueError(
            f"image_shape {image_shape} has {len(image_shape)} axes but control {shape_str(control)} has {ndim}"
        )
    strides = as_tuple(stride, ndim, "stride")
    expected = control_grid_shape(image_shape, strides)
    if tuple(control.shape[:-1]) != expected:
        raise ValueError(
            f"control must have shape {expected + (ndim,)} to cover image_shape {image_shape} at stride {strides}; "
            f"got {shape_str(control)}"
        )
    control = jnp.asarray(control)
    if not jnp.issubdtype(control.dtype, jnp.floating):
        control = control.astype(jnp.float32)
    return _contract(control, [basis_matrix(n, s) for n, s in zip(image_shape, strides)])


@functools.lru_cache(maxsize=256)
def _curvature_grams(n: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, K) Gram matrices (B^T B, B^T D B, (DB)^T DB) of an axis: B its basis matrix, D `losses.laplacian`'s
    1-D Neumann second difference on n pixels as a matrix (built from the formula, not restated)."""
    b = basis_matrix(n, stride).astype(np.float64)
    with jax.ensure_compile_time_eval():
        d = np.asarray(jax.vmap(lambda e: losses.laplacian(e[:, None])[:, 0])(jnp.eye(n, dtype=jnp.float32)))
    db = d.T.astype(np.float64) @ b  # row j of d is the Laplacian of e_j, i.e. column j of D
    out = tuple(g.astype(np.float32) for g in (b.T @ b, b.T @ db, db.T @ db))
    for g in out:
        g.setflags(write=False)
    return out


def curvature(control, image_shape: Sequence[int], stride):
    """`losses.curvature(bspline_displacement(control, image_shape, stride))` (pixel units) from the control grid
    alone: control `(*control_grid_shape(image_shape, stride), ndim)` -> scalar.

    Exact: the Neumann Laplacian of a separable field is a sum over axes a of separable maps (D B along a, B
    elsewhere), so its squared norm is a sum over axis pairs (a, a') of control-grid contractions with per-axis Gram
    matrices (K_k, K_k). No dense field is formed: cost and memory scale with the control grid, not the image.
    """
    image_shape = tuple(int(n) for n in image_shape)
    ndim = check_displacement("control", control)
    strides = as_tuple(stride, ndim, "stride")
    expected = control_grid_shape(image_shape, strides)
    if len(image_shape) != ndim or tuple(control.shape[:-1]) != expected:
        raise ValueError(
            f"control must have shape {expected + (ndim,)} for image_shape {image_shape} at stride {strides}; "
            f"got {shape_str(control)}"
        )
    control = jnp.asarray(control)
    grams = [_curvature_grams(n, s) if n >= 2 else None for n, s in zip(image_shape, strides)]
    axes = [a for a in range(ndim) if grams[a] is not None]  # a 1-pixel axis adds no second difference
    total = 0.0
    for a in axes:
        for a2 in [x for x in axes if x >= a]:  # <T_a c, T_a2 c> is symmetric in (a, a2): off-diagonal pairs twice
            # T_a = D B along axis a and B along the others: per-axis Grams (B^T B, B^T D B, (DB)^T DB)
            mats = []
            for k in range(ndim):
                if grams[k] is None:
                    mats.append(basis_matrix(image_shape[k], strides[k]).T @ basis_matrix(image_shape[k], strides[k]))
                    continue
                btb, btdb, dbtdb = grams[k]
                if k == a and k == a2:
                    mats.append(dbtdb)
                elif k == a:
                    mats.append(btdb.T)
                elif k == a2:
                    mats.append(btdb)
                else:
                    mats.append(btb)
            total = total + (1.0 if a == a2 else 2.0) * jnp.sum(control * _contract(control, mats))
    return 0.5 * total


@functools.lru_cache(maxsize=256)
def subdivision_matrix(n: int, stride: int) -> np.ndarray:
    """(K', K) float32 matrix refining a stride-`stride` control axis to stride/2 (exact on the n-pixel image)."""
    if stride % 2:
        raise ValueError(f"stride must be even to halve it; got {stride}")
    k_old = (n - 1) // stride + 4
    k_new = (n - 1) // (stride // 2) + 4
    mask = {-2: 1 / 8, -1: 4 / 8, 0: 6 / 8, 1: 4 / 8, 2: 1 / 8}
    mat = np.zeros((k_new, k_old), np.float64)
    for kn in range(k_new):
        for ko in range(k_old):
            # new point kn at (kn-1) s/2, old point ko at (ko-1) s: offset in half-strides
            j = kn + 1 - 2 * ko
            if j in mask:
                mat[kn, ko] = mask[j]
    out = mat.astype(np.float32)
    out.setflags(write=False)
    return out


def upsample_control(control, image_shape: Sequence[int], stride):
    """Refines a control grid at `stride` to the grid at `stride // 2` that gives the same field on `image_shape`.

    control `(*control_grid_shape(image_shape, stride), ndim)` -> `(*control_grid_shape(image_shape, stride//2), ndim)`;
    every stride must be even. Exact B-spline subdivision (mask [1, 4, 6, 4, 1] / 8).
    """
    image_shape = tuple(int(n) for n in image_shape)
    ndim = check_displacement("control", control)
    strides = as_tuple(stride, ndim, "stride")
    if any(s % 2 for s in strides):
        raise ValueError(f"every stride must be even to halve it; got {strides}")
    expected = control_grid_shape(image_shape, strides)
    if len(image_shape) != ndim or tuple(control.shape[:-1]) != expected:
        raise ValueError(
            f"control must have shape {expected + (ndim,)} for image_shape {image_shape} at stride {strides}; "
            f"got {shape_str(control)}"
        )
    return _contract(jnp.asarray(control), [subdivision_matrix(n, s) for n, s in zip(image_shape, strides)])


def carry_up(control, fine_shape: Sequence[int], stride, ratio: int = 2):
    """Moves a grid from an image downsampled by `ratio` to the `fine_shape` image, same `stride` in each's pixels.

    control `(*control_grid_shape(fine_shape // ratio, stride), ndim)` (coarse pixels) ->
    `(*control_grid_shape(fine_shape, stride), ndim)` (fine pixels): values scaled by `ratio`, grid refined by
    exact subdivision (`ratio` a power of two). Coarse pixel i is taken to sit at fine pixel ratio * i.
    """
    fine_shape = tuple(int(n) for n in fine_shape)
    ndim = check_displacement("control", control)
    strides = as_tuple(stride, ndim, "stride")
    if ratio < 1 or ratio & (ratio - 1):
        raise ValueError(f"ratio must be a power of two; got {ratio}")
    out = control * ratio
    s = tuple(st * ratio for st in strides)
    if tuple(out.shape[:-1]) != control_grid_shape(fine_shape, s):
        raise ValueError(
            f"control {shape_str(control)} does not match fine_shape {fine_shape} / {ratio} at stride {strides}"
        )
    while s != strides:
        out = upsample_control(out, fine_shape, s)
        s = tuple(v // 2 for v in s)
    return out
