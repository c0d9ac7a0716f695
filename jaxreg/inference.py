"""`load_model`: a trained registration network as a jitted `(fixed, moving) -> u` callable."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

SHIPPED = pathlib.Path(__file__).resolve().parent / "weights" / "acdc"


def load_model(path=None, image_shape=(112, 112)):
    """Loads a training workdir (config.json + checkpoints/) or, with `path=None`, the model shipped with jaxreg.

    Returns a callable `(fixed, moving) -> u` over one jitted network: `(B, *S)` float in [0, 1] -> `(B, *S, ndim)`
    pixels (finest level, jaxreg convention: moving sampled at x + u matches fixed). Wrong shapes, and NaN or
    infinite intensities in concrete (non-traced) inputs, raise ValueError; a folder that is no model raises
    `jaxreg.data.DataError` (a `jaxreg.errors.UserError`) naming the file; it can also be called inside the
    caller's own jit. Attributes `.config` and `.params`. With several devices (e.g. a multi-core CPU split by
    `jax.config.update("jax_num_cpu_devices", n)` right after `import jax`), batches whose size the device count
    divides run data parallel, each device its shard.
    `jaxreg.runtime.compile_cache.enable()` before the first call keeps the compiled network for the next process, and
    `jaxreg.runtime.xla_cpu.prefer_eigen_convolutions()` right after `import jax` makes CPU inference ~1.4x faster.
    """
    from jaxreg.data.acdc import DataError
    from jaxreg.training import workdir

    path = pathlib.Path(path) if path is not None else SHIPPED
    if not path.is_dir():
        raise DataError(f"{path}: model folder does not exist")
    if not (path / "config.json").is_file():
        raise DataError(f"{path}: no config.json, not a jaxreg model folder (a training workdir)")
    trainer, params = workdir.load_trained(path, image_shape)

    core = jax.jit(lambda fixed, moving: trainer.fields(params, jnp.asarray(fixed, jnp.float32),
                                                        jnp.asarray(moving, jnp.float32)))

    def register(fixed, moving):
        if jnp.shape(fixed) != jnp.shape(moving) or jnp.shape(fixed)[1:] != tuple(image_shape):
            raise ValueError(f"fixed and moving must both be (B, {', '.join(map(str, image_shape))}); "
                             f"got {jnp.shape(fixed)} and {jnp.shape(moving)}")
        for name, x in (("fixed", fixed), ("moving", moving)):  # checked where the input lives: no extra copy
            if not isinstance(x, jax.core.Tracer):
                bad = np.flatnonzero(~np.isfinite(np.asarray(x).reshape(len(x), -1)).all(1))
                if bad.size:
                    raise ValueError(f"{name} has NaN or infinite intensities in pair(s) {bad[:10].tolist()}")
        return core(fixed, moving)

    register.config = trainer.cfg
    register.params = params
    return register
