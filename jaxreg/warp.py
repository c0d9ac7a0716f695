"""Resampling of N-D images through displacement fields (pure JAX, no Flax).

Convention (Learn2Reg, scipy): a displacement `u` is `(*spatial, ndim)` in pixel units, component k along array
axis k; the deformation is y(x) = x + u(x) and the warped moving image is M(y(x)), i.e.
`warp(M, u) == scipy.ndimage.map_coordinates(M, x + u, order=1, mode="nearest")`. Images are `(*spatial)` or
`(*spatial, C)` (channel-last); the output lives on u's grid.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg._checks import check_displacement, shape_str

__all__ = ["identity_grid", "warp", "warp_labels", "compose", "exp_velocity", "downsample"]

_MODES = ("border", "constant")


def identity_grid(shape: Sequence[int], dtype=jnp.float32):
    """Pixel coordinates of a grid: `shape` -> `(*shape, len(shape))`, entry [..., k] = index along axis k."""
    shape = tuple(int(n) for n in shape)
    axes = [jnp.arange(n, dtype=dtype) for n in shape]
    return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)


def warp(image, u, order: int = 1, mode: str = "border", cval: float = 0.0):
    """Samples `image` at x + u(x): image `(*S_in)` or `(*S_in, C)`, u `(*S, ndim)` pixels -> `(*S)` or `(*S, C)`.

    order: 1 (N-linear, differentiable in image and u) or 0 (nearest; differentiable in image only).
    mode: "border" clamps coordinates to the image (edge replicate, scipy "nearest"); "constant" reads `cval`
    outside (scipy "grid-constant"). order=1 on a one-hot label map gives soft warped labels.
    """
    ndim = check_displacement("u", u)
    image = jnp.asarray(image)
    if image.ndim == ndim:
        has_channels = False
    elif image.ndim == ndim + 1:
        has_channels = True
    else:
        raise ValueError(
            f"image must be (*spatial) or (*spatial, C) with {ndim} spatial axes to match u {shape_str(u)}; "
            f"got image {shape_str(image)}"
        )
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (linear); got {order!r}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}; got {mode!r}")
    if not jnp.issubdtype(image.dtype, jnp.floating):
        image = image.astype(jnp.float32)
    in_shape = image.shape[:ndim]
    # channel-first scalar planes: XLA:CPU handles per-plane gathers far better than (P, C) row gathers
    planes = [image[..., c] for c in range(image.shape[-1])] if has_channels else [image]
    index, frac, ok = _sample_points(u, in_shape, order, mode)
    fill = jnp.asarray(cval, image.dtype)
    outs = []
    for plane in planes:
        flat = plane.reshape(-1)
        if order == 0:
            vals = flat[index] if ok is None else jnp.where(ok, flat[index], fill)
        else:
            corners = [flat[i] for i in index]
            if ok is not None:
                corners = [jnp.where(o, v, fill) for o, v in zip(ok, corners)]
            vals = _lerp(corners, frac)
        outs.append(vals)
    return jnp.stack(outs, axis=-1) if has_channels else outs[0]


def warp_labels(labels, u, num_classes: int, mode: str = "border"):
    """Soft one-hot warp of an integer label map: labels `(*S_in)` int, u `(*S, ndim)` -> `(*S, num_classes)`.

    Equal to `warp(jax.nn.one_hot(labels, num_classes), u, order=1, mode)` but gathers each corner once for all
    classes (the label loss's hot path). Labels outside 0..num_classes-1 contribute to no class.
    """
    ndim = check_displacement("u", u)
    if jnp.ndim(labels) != ndim:
        raise ValueError(f"labels must be (*spatial) with {ndim} axes to match u {shape_str(u)}; got {shape_str(labels)}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}; got {mode!r}")
    labels = jnp.asarray(labels)
    corner_idx, frac, ok = _sample_points(u, labels.shape, 1, mode)
    flat = labels.reshape(-1)
    corners = [flat[i] for i in corner_idx]
    if ok is not None:
        corners = [jnp.where(o, v, -1) for o, v in zip(ok, corners)]
    outs = [_lerp([(v == c).astype(u.dtype) for v in corners], frac) for c in range(num_classes)]
    return jnp.stack(outs, axis=-1)


def _sample_points(u, in_shape, order, mode):
    """Gather plan for x + u: (flat index, None, inside mask) for order 0; (corner indices, per-axis fractions,
    per-corner in-range masks) for order 1. Masks are None in "border" mode."""
    ndim = u.shape[-1]
    coords = [u[..., k] + jnp.arange(u.shape[k], dtype=u.dtype).reshape([-1 if j == k else 1 for j in range(ndim)])
              for k in range(ndim)]
    strides = [math.prod(in_shape[k + 1:]) for k in range(ndim)]
    inside = None
    if order == 0:
        idx = [jnp.floor(c + 0.5).astype(jnp.int32) for c in coords]
        if mode == "constant":
            for k in range(ndim):
                ok = (idx[k] >= 0) & (idx[k] < in_shape[k])
                inside = ok if inside is None else inside & ok
        idx = [jnp.clip(i, 0, n - 1) for i, n in zip(idx, in_shape)]
        return sum(i * s for i, s in zip(idx, strides)), None, inside
    if mode == "border":
        coords = [jnp.clip(c, 0.0, n - 1.0) for c, n in zip(coords, in_shape)]
        # lower corner kept <= n-2 so the upper one is valid; at the last pixel the fraction is then 1
        lower = [jnp.clip(jnp.floor(c), 0, max(n - 2, 0)) for c, n in zip(coords, in_shape)]
        frac = [c - lo for c, lo in zip(coords, lower)]
        lower = [lo.astype(jnp.int32) for lo in lower]
        base = sum(lo * s for lo, s in zip(lower, strides))
        corner_idx = []
        for corner in itertools.product((0, 1), repeat=ndim):
            off = sum(s for c, s, n in zip(corner, strides, in_shape) if c and n > 1)
            corner_idx.append(base + off)
        return corner_idx, frac, None
    # constant: out-of-range corners read cval (0) through a mask folded into the weights
    lower_f = [jnp.floor(c) for c in coords]
    frac = [c - lo for c, lo in zip(coords, lower_f)]
    lower = [lo.astype(jnp.int32) for lo in lower_f]
    corner_idx, corner_ok = [], []
    for corner in itertools.product((0, 1), repeat=ndim):
        idx = [lo + c for lo, c in zip(lower, corner)]
        ok = None
        for i, n in zip(idx, in_shape):
            o = (i >= 0) & (i < n)
            ok = o if ok is None else ok & o
        idx = [jnp.clip(i, 0, n - 1) for i, n in zip(idx, in_shape)]
        corner_idx.append(sum(i * s for i, s in zip(idx, strides)))
        corner_ok.append(ok)
    return corner_idx, frac, corner_ok


def _lerp(values, frac):
    """N-linear interpolation from the 2**ndim corner values (itertools.product order) and per-axis fractions."""
    ndim = len(frac)
    for k in reversed(range(ndim)):
        values = [a + frac[k] * (b - a) for a, b in zip(values[0::2], values[1::2])]
    return values[0]


def compose(u1, u2, mode: str = "border"):
    """Displacement of y2(y1(x)): u1, u2 `(*S, ndim)` pixels -> `u1 + u2(x + u1)`.

    warp(M, compose(u1, u2)) ~= warp(warp(M, u2), u1): u2 is applied to the moving image first.
    """
    check_displacement("u1", u1)
    check_displacement("u2", u2)
    if u1.shape != u2.shape:
        raise ValueError(f"u1 and u2 must have the same shape; got {shape_str(u1)} and {shape_str(u2)}")
    return u1 + warp(u2, u1, order=1, mode=mode)


def exp_velocity(v, steps: int = 6, factor: int = 1):
    """Displacement of the flow of a stationary velocity field by scaling and squaring: v `(*S, ndim)` pixels ->
    u `(*S, ndim)` pixels, u = exp(v) with `steps` squarings (u <- compose(u, u) from v / 2**steps).

    For a smooth v and enough steps the map x -> x + u is a diffeomorphism (no folding): each squaring composes
    two maps of positive Jacobian. steps=0 returns v (the plain displacement). A constant v returns v exactly.
    factor > 1 integrates at 1/factor of the resolution (voxelmorph's `int_downsize`): v average-pooled by
    `factor` (`downsample`), squared there in coarse pixels, the result upsampled (N-)linearly, pixel centres
    aligned as in the pooling; S must be divisible by `factor`. For a smooth v (a B-spline of wider control
    spacing) this keeps the flow to within interpolation error at factor**ndim less work per squaring.
    """
    check_displacement("v", v)
    if not _is_int(steps) or steps < 0:
        raise ValueError(f"steps must be an int >= 0; got {steps!r}")
    if not _is_int(factor) or factor < 1:
        raise ValueError(f"factor must be a positive int; got {factor!r}")
    if steps == 0:
        return v
    shape = v.shape
    if factor > 1:
        v = downsample(v, factor, v.ndim - 1) / factor
    u = v / 2.0**steps
    for _ in range(steps):
        u = compose(u, u)
    if factor > 1:
        u = jax.image.resize(u * factor, shape, "linear", antialias=False)
    return u


def downsample(x, factor: int, spatial_ndim: int):
    """Average-pools the first `spatial_ndim` axes of `x` by `factor` (trailing channel axes kept): the pyramid step."""
    if not _is_int(factor) or factor < 1:
        raise ValueError(f"the pyramid factor must be a positive int; got {factor!r}")
    if factor == 1:
        return x
    shape = []
    for n in x.shape[:spatial_ndim]:
        if n % factor:
            raise ValueError(f"image side {n} is not divisible by the pyramid factor {factor}")
        shape += [n // factor, factor]
    x = x.reshape(shape + list(x.shape[spatial_ndim:]))
    return x.mean(axis=tuple(1 + 2 * i for i in range(spatial_ndim)))


def _is_int(n) -> bool:
    """A Python or NumPy integer (not a bool, not a float such as 2.0): static sizes and counts."""
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool)
