"""`enable`: JAX's persistent compilation cache for jaxreg's commands, so a rerun loads compiled programs.

A rerun, a resumed training or another `jaxreg register` call then skips XLA compilation of the network, its
training step and the classic solver (`jaxreg register` on one ACDC volume: 25-30 s -> 16 s, docs/performance.md).
"""

from __future__ import annotations

import os
import pathlib

DEFAULT = "~/.cache/jaxreg/xla"


def enable(path: str | None = DEFAULT, min_compile_seconds: float = 1.0) -> str | None:
    """Points JAX's persistent compilation cache at `path` (created; `~` expanded); returns the folder in use.

    Call before the first compilation. A cache folder already set (e.g. `JAX_COMPILATION_CACHE_DIR`) is kept;
    `path` None or "" leaves caching as it is. Only programs that took `min_compile_seconds` or more to compile
    are stored. A folder that cannot be created is skipped (returns None): caching is never worth a failed run.
    """
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    if not path:
        return None
    folder = pathlib.Path(os.path.expanduser(path))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    return str(folder)
