"""jaxreg: differentiable deformable image registration in JAX (Hering et al. 2019 and beyond).

The maths layer (`bspline`, `warp`, `losses`, `metrics`) is pure JAX and imports no Flax.
"""

from jaxreg import bspline, losses, metrics, warp

__version__ = "0.1.0"
__all__ = ["bspline", "warp", "losses", "metrics"]
