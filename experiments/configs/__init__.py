"""Experiment presets (big_vision style): each module's `get_config()` returns an `ExperimentConfig`.

`paper`: Hering et al. 2019's recipe for ACDC. `tuned`: `paper` with alpha 300, the shipped model's recipe.
`quick`: the ~5-minute CPU main job on the synthetic phantom.
"""

import importlib

from jaxreg.experiment import ExperimentConfig


def get(name: str) -> ExperimentConfig:
    try:
        module = importlib.import_module(f"experiments.configs.{name}")
    except ModuleNotFoundError:
        raise ValueError(f"unknown config {name!r}; see experiments/configs/") from None
    return module.get_config()
