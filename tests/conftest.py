"""Shared test set-up: float32 CPU JAX, a persistent compile cache, a hypothesis profile sized for CI."""

import os
import pathlib

import jax
from hypothesis import HealthCheck, settings

CACHE = os.environ.get("JAXREG_TEST_CACHE", str(pathlib.Path.home() / ".cache" / "jaxreg-tests"))
jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# the tests' subprocesses (entry points run as commands) share it: after the first tiny training run, the next ones
# load the compiled step and evaluation instead of compiling them (a tiny one-epoch run: 53 s -> 20 s)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

settings.register_profile(
    "jaxreg", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile("jaxreg")

SHARED_ACDC = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "acdc" / "training"
