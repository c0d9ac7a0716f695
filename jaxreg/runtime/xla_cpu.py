"""`prefer_eigen_convolutions`: keep XLA:CPU's large convolutions on Eigen instead of YNNPACK (faster here).

jaxlib 0.10.2 hands some convolutions to YNNPACK by default (`--xla_cpu_experimental_ynn_fusion_type` contains
`individual_convolution`); on this project's network that is the kernel gradient of the 112 x 112 layers, and it
runs 1.5-1.9x slower than XLA's own (Eigen) convolution. Removing that one fusion type made the training step
on one CPU device 1.3x faster and inference 1.4x faster (docs/performance.md, "XLA:CPU performance findings").
"""

from __future__ import annotations

import os
import re

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
# jaxlib versions known to accept FLAG (an unknown XLA flag aborts the process, so never guess)
VERIFIED = ((0, 10, 2), (0, 11, 0))  # [first, end)


def _version(text: str) -> tuple:
    """(major, minor, patch) of a version string: "0.10.3rc1" -> (0, 10, 3)."""
    m = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    return tuple(int(g or 0) for g in m.groups()) if m else (0, 0, 0)


def prefer_eigen_convolutions(environ=None) -> bool:
    """Appends FLAG to `XLA_FLAGS` before JAX starts its backends; returns whether the flag is in effect.

    No-op (returns False) when the backends already run (the flag would be read too late), when the installed
    jaxlib is outside VERIFIED, or when `XLA_FLAGS` already sets the YNN fusion types (the user's choice wins;
    returns True only if that choice is FLAG itself). Call it right after `import jax`, before any JAX
    operation, as `experiments/` and `jaxreg register` do. Affects CPU only; a GPU ignores the flag.
    """
    import jaxlib

    env = os.environ if environ is None else environ
    current = env.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in current:
        return FLAG in current.split()
    if not VERIFIED[0] <= _version(jaxlib.__version__) < VERIFIED[1]:
        return False
    try:
        from jax._src import xla_bridge

        started = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):  # private API moved: assume started, i.e. do nothing
        started = True
    if started:
        return False
    env["XLA_FLAGS"] = f"{current} {FLAG}".strip()
    return True
