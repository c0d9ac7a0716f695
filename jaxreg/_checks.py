"""Trace-time argument checks shared by the maths layer (shapes are static under jit, so these never reach XLA)."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp


def shape_str(x) -> str:
    return "(" + ", ".join(str(d) for d in jnp.shape(x)) + ")"


def check_displacement(name: str, u, ndim: int | None = None) -> int:
    """Checks `u` is `(*spatial, ndim)` with ndim in (1, 2, 3) (or the given ndim); returns ndim."""
    shape = jnp.shape(u)
    if len(shape) < 2:
        raise ValueError(f"{name} must be a displacement field (*spatial, ndim); got shape {shape_str(u)}")
    d = shape[-1]
    if d != len(shape) - 1:
        raise ValueError(
            f"{name} must be (*spatial, ndim) with last axis == number of spatial axes ({len(shape) - 1}); "
            f"got shape {shape_str(u)}"
        )
    if ndim is not None and d != ndim:
        raise ValueError(f"{name} must have {ndim} spatial axes; got shape {shape_str(u)}")
    return d


def check_same_shape(name_a: str, a, name_b: str, b) -> None:
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(f"{name_a} and {name_b} must have the same shape; got {shape_str(a)} and {shape_str(b)}")


def check_spatial(name: str, x, min_ndim: int = 1, max_ndim: int = 3) -> int:
    nd = jnp.ndim(x)
    if not min_ndim <= nd <= max_ndim:
        raise ValueError(f"{name} must have {min_ndim}..{max_ndim} spatial axes; got shape {shape_str(x)}")
    return nd


def spacing_array(spacing, ndim: int, name: str = "spacing"):
    """`None` -> ones(ndim); a scalar or a length-`ndim` sequence/array -> float array (ndim,)."""
    if spacing is None:
        return jnp.ones((ndim,), jnp.float32)
    s = jnp.asarray(spacing, jnp.float32)
    if s.ndim == 0:
        return jnp.full((ndim,), s)
    if s.shape != (ndim,):
        raise ValueError(f"{name} must be a scalar or have {ndim} entries (one per spatial axis); got shape {s.shape}")
    return s


def as_tuple(value, ndim: int, name: str) -> tuple[int, ...]:
    """An int or a length-`ndim` sequence of positive ints -> tuple of ints."""
    if isinstance(value, (int,)) or (hasattr(value, "__index__") and not isinstance(value, Sequence)):
        t = (int(value),) * ndim
    else:
        t = tuple(int(v) for v in value)
    if len(t) != ndim or any(v <= 0 for v in t):
        raise ValueError(f"{name} must be a positive int or {ndim} positive ints; got {value!r}")
    return t
