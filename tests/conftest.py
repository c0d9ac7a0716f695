"""Shared test set-up: float32 CPU JAX, a persistent compile cache, a hypothesis profile sized for CI."""

import os
import pathlib

import jax
from hypothesis import HealthCheck, settings

jax.config.update("jax_compilation_cache_dir", os.environ.get("JAXREG_TEST_CACHE", str(pathlib.Path.home() / ".cache" / "jaxreg-tests")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

settings.register_profile(
    "jaxreg", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile("jaxreg")

SHARED_ACDC = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "acdc" / "training"
