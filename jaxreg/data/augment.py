"""On-device augmentation, drawn fresh from a key every step: deformations (the paper's x8 "slight deformations")
and, off by default, intensity changes (`intensity_pair`: gamma, bias field, noise).

Each image of a pair gets its own random smooth cubic B-spline field; an image and its labels share it. Labels
come back as soft one-hot maps `(..., num_classes)` (linear warp of the one-hot map), ready for the label loss.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp

from jaxreg import bspline, warp


def random_displacement(key, shape, stride: int = 16, max_disp: float = 3.0):
    """Random smooth field `(*shape, ndim)` pixels: control points uniform in [-max_disp, max_disp] at `stride`."""
    grid = bspline.control_grid_shape(shape, stride)
    control = jax.random.uniform(key, grid + (len(shape),), minval=-max_disp, maxval=max_disp)
    return bspline.bspline_displacement(control, shape, stride)


def augment_pair(key, fixed, moving, fixed_labels, moving_labels, num_classes: int = 4, stride: int = 16,
                 max_disp: float = 3.0):
    """One pair `(*S)` images + int labels -> (fixed, moving, fixed_onehot, moving_onehot), each deformed anew."""
    kf, km = jax.random.split(key)
    uf = random_displacement(kf, fixed.shape, stride, max_disp)
    um = random_displacement(km, moving.shape, stride, max_disp)
    return (
        warp.warp(fixed, uf),
        warp.warp(moving, um),
        warp.warp_labels(fixed_labels, uf, num_classes),
        warp.warp_labels(moving_labels, um, num_classes),
    )


def augment_batch(key, fixed, moving, fixed_labels, moving_labels, num_classes: int = 4, stride: int = 16,
                  max_disp: float = 3.0):
    """Batched `augment_pair` over a leading axis `(B, *S)`, one key per pair (jit-able)."""
    keys = jax.random.split(key, fixed.shape[0])
    fn = lambda k, f, m, fl, ml: augment_pair(k, f, m, fl, ml, num_classes, stride, max_disp)  # noqa: E731
    return jax.vmap(fn)(keys, fixed, moving, fixed_labels, moving_labels)


def onehot_pair(fixed, moving, fixed_labels, moving_labels, num_classes: int = 4):
    """The un-augmented counterpart of `augment_batch` (labels as float one-hot)."""
    return (fixed, moving, jax.nn.one_hot(fixed_labels, num_classes, dtype=fixed.dtype),
            jax.nn.one_hot(moving_labels, num_classes, dtype=moving.dtype))


def intensity_pair(key, fixed, moving, gamma: float = 0.0, bias: float = 0.0, noise: float = 0.0):
    """One pair's images `(*S)`, intensities in [0, 1], under one scanner's random contrast: both frames raised to
    the power exp(gamma * N(0, 1)) and multiplied by one smooth bias field exp(p(x)), p a cubic polynomial in
    coordinates scaled to [-1, 1] with coefficients uniform in [-bias, bias] (TorchIO's RandomBiasField form);
    then each frame its own Gaussian noise of std `noise`, clipped to [0, 1]. All three 0: the images unchanged.
    """
    kg, kb, kf, km = jax.random.split(key, 4)
    shape = fixed.shape
    g = jnp.exp(gamma * jax.random.normal(kg, ()))
    axes = jnp.meshgrid(*[jnp.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    powers = [p for p in itertools.product(range(4), repeat=len(shape)) if 0 < sum(p) <= 3]
    coef = jax.random.uniform(kb, (len(powers),), minval=-bias, maxval=bias)
    log_field = sum(c * jnp.prod(jnp.stack([a ** e for a, e in zip(axes, p)]), axis=0) for c, p in zip(coef, powers))
    field = jnp.exp(log_field)

    def one(image, k):
        out = jnp.clip(image, 0.0, 1.0) ** g * field + noise * jax.random.normal(k, shape)
        return jnp.clip(out, 0.0, 1.0).astype(image.dtype)

    return one(fixed, kf), one(moving, km)


def intensity_batch(key, fixed, moving, gamma: float = 0.0, bias: float = 0.0, noise: float = 0.0):
    """Batched `intensity_pair` over a leading axis `(B, *S)`, one key per pair (jit-able)."""
    keys = jax.random.split(key, fixed.shape[0])
    return jax.vmap(lambda k, f, m: intensity_pair(k, f, m, gamma, bias, noise))(keys, fixed, moving)
