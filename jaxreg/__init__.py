"""jaxreg: differentiable deformable image registration in JAX (Hering et al. 2019 and beyond).

The maths layer (`bspline`, `warp`, `losses`, `metrics`) is pure JAX and imports no Flax.
"""

from jaxreg import bspline, losses, metrics, warp

__version__ = "0.1.0"
__all__ = ["bspline", "warp", "losses", "metrics"]


def load_model(path=None, image_shape=(112, 112)):
    """See `jaxreg.inference.load_model` (imported lazily: the maths layer needs no Flax)."""
    from jaxreg.inference import load_model as _load

    return _load(path, image_shape)
