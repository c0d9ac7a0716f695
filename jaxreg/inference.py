"""`load_model`: a trained registration network as a jitted `(fixed, moving) -> u` callable."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

SHIPPED = pathlib.Path(__file__).resolve().parent / "weights" / "acdc"
SHIPPED_MODELS = {"acdc": SHIPPED, "hyper": SHIPPED.with_name("acdc_hyper")}  # load_model(name)


def load_model(path=None, image_shape=(112, 112)):
    """Loads a training workdir (config.json + checkpoints/), or a shipped model: `path=None` (the paper's network,
    trained on ACDC) or `"hyper"` (the weight-conditioned network).

    Returns a callable `(fixed, moving) -> u` over one jitted network: `(B, *S)` float in [0, 1] -> `(B, *S, ndim)`
    pixels (finest level, jaxreg convention: moving sampled at x + u matches fixed). A weight-conditioned model
    also takes the loss weights it should answer for, in the units of the `--delta/--alpha/--beta` flags:
    `model(fixed, moving, delta=1.0, alpha=3000.0, beta=5e4)`; a weight left out takes the recipe's value
    (`model.default_weights`), and changing them never recompiles (`model.compilations()` counts). Wrong shapes,
    and NaN or infinite intensities in concrete (non-traced) inputs, raise ValueError; a folder that is no model
    raises `jaxreg.data.DataError` (a `jaxreg.errors.UserError`) naming the file; it can also be called inside the
    caller's own jit. Attributes `.config`, `.params`, `.default_weights`, `.conditioned`. With several devices (e.g. a multi-core CPU split by
    `jax.config.update("jax_num_cpu_devices", n)` right after `import jax`), batches whose size the device count
    divides run data parallel, each device its shard.
    `jaxreg.runtime.compile_cache.enable()` before the first call keeps the compiled network for the next process, and
    `jaxreg.runtime.xla_cpu.prefer_eigen_convolutions()` right after `import jax` makes CPU inference ~1.4x faster.
    """
    from jaxreg.data.acdc import DataError
    from jaxreg.training import workdir

    path = SHIPPED if path is None else SHIPPED_MODELS.get(path, path) if isinstance(path, str) else path
    path = pathlib.Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: model folder does not exist")
    if not (path / "config.json").is_file():
        raise DataError(f"{path}: no config.json, not a jaxreg model folder (a training workdir)")
    trainer, params = workdir.load_trained(path, image_shape)

    from jaxreg import conditioning

    cfg = trainer.cfg
    default_weights = {"delta": cfg.delta, "alpha": cfg.alpha, "beta": cfg.beta}
    core = jax.jit(lambda fixed, moving, ratios: trainer.fields(params, jnp.asarray(fixed, jnp.float32),
                                                                jnp.asarray(moving, jnp.float32), ratios))

    def register(fixed, moving, delta=None, alpha=None, beta=None):
        ratios = None
        if delta is not None or alpha is not None or beta is not None:
            if not cfg.conditioned:
                raise ValueError(f"{path}: this model is not weight-conditioned; it answers only its recipe's "
                                 f"weights {default_weights} (load_model('hyper') answers others)")
            ratios = conditioning.ratios_of(default_weights, delta, alpha, beta)
        elif cfg.conditioned:
            ratios = jnp.ones((3,), jnp.float32)
        if jnp.shape(fixed) != jnp.shape(moving) or jnp.shape(fixed)[1:] != tuple(image_shape):
            raise ValueError(f"fixed and moving must both be (B, {', '.join(map(str, image_shape))}); "
                             f"got {jnp.shape(fixed)} and {jnp.shape(moving)}")
        for name, x in (("fixed", fixed), ("moving", moving)):  # checked where the input lives: no extra copy
            if not isinstance(x, jax.core.Tracer):
                bad = np.flatnonzero(~np.isfinite(np.asarray(x).reshape(len(x), -1)).all(1))
                if bad.size:
                    raise ValueError(f"{name} has NaN or infinite intensities in pair(s) {bad[:10].tolist()}")
        return core(fixed, moving, ratios)

    register.config = cfg
    register.params = params
    register.default_weights = default_weights
    register.conditioned = cfg.conditioned
    register.compilations = lambda: core._cache_size()  # programs compiled so far (new weights add none)
    return register
