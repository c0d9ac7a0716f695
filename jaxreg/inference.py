"""`load_model`: a trained registration network as a jitted `(fixed, moving) -> u` callable."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp

SHIPPED = pathlib.Path(__file__).resolve().parent / "weights" / "acdc"


def load_model(path=None, image_shape=(112, 112)):
    """Loads a training workdir (config.json + checkpoints/) or, with `path=None`, the model shipped with jaxreg.

    Returns a jitted callable `(fixed, moving) -> u`: `(B, *S)` float in [0, 1] -> `(B, *S, ndim)` pixels (finest
    level, jaxreg convention: moving sampled at x + u matches fixed). Attributes `.config` and `.params`.
    """
    from jaxreg import train

    path = pathlib.Path(path) if path is not None else SHIPPED
    if not (path / "config.json").is_file():
        hint = " (the shipped model has not been trained yet; pass a training workdir)" if path == SHIPPED else ""
        raise FileNotFoundError(f"{path}: no config.json, not a jaxreg model folder{hint}")
    trainer, params = train.load_trained(path, image_shape)

    @jax.jit
    def register(fixed, moving):
        fixed, moving = jnp.asarray(fixed, jnp.float32), jnp.asarray(moving, jnp.float32)
        if fixed.shape != moving.shape or fixed.shape[1:] != tuple(image_shape):
            raise ValueError(f"fixed and moving must both be (B, {', '.join(map(str, image_shape))}); "
                             f"got {fixed.shape} and {moving.shape}")
        return trainer._eval_fields(params, fixed, moving)

    register.config = trainer.cfg
    register.params = params
    return register
