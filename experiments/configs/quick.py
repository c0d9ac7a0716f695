"""About five minutes on a 2-core CPU: 320 phantom slices (both directions), 5 folds, 8 epochs, x2 augmentation."""

from jaxreg.cv import ExperimentConfig
from jaxreg.training import TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(train=TrainConfig(epochs=8, augment=2, batch_size=30), num_folds=5, phantom_slices=320)
