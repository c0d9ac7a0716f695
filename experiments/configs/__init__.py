"""Experiment presets (big_vision style): each module's `get_config()` returns an `ExperimentConfig`.

`paper`: Hering et al. 2019's recipe for ACDC. `tuned`: `paper` with alpha 300, the shipped model's recipe.
`quick`: the ~3-minute CPU main job on the synthetic phantom. `tiny`: seconds, for tests.
"""

import importlib
import pathlib

from jaxreg.errors import ConfigError


def names() -> list[str]:
    """The presets: every module of this package."""
    return sorted(p.stem for p in pathlib.Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))


def get(name: str):
    if name not in names():
        raise ConfigError(f"--config: unknown preset {name!r}; known: {', '.join(names())}")
    return importlib.import_module(f"experiments.configs.{name}").get_config()
