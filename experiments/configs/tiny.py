"""Seconds: for tests and smoke runs (small phantom, 2 epochs)."""

from jaxreg.cv import ExperimentConfig
from jaxreg.models import RegNetConfig
from jaxreg.training import TrainConfig


def get_config() -> ExperimentConfig:
    model = RegNetConfig(encoder_features=(4, 8, 8, 8, 8), decoder_features=(8, 8, 8))
    return ExperimentConfig(train=TrainConfig(epochs=2, augment=2, batch_size=4, model=model), num_folds=2,
                            phantom_slices=16, image_size=64)

