"""On-device deformation augmentation (the paper's x8 "slight deformations"), drawn fresh from a key every step.

Each image of a pair gets its own random smooth cubic B-spline field; an image and its labels share it. Labels
come back as soft one-hot maps `(..., num_classes)` (linear warp of the one-hot map), ready for the label loss.
"""

from __future__ import annotations

import jax

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
