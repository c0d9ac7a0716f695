"""The paper's recipe: Adam 1e-3, batch 30, 40 epochs, x8 deformation augmentation, 10-fold patient-wise CV."""

from jaxreg.cv import ExperimentConfig
from jaxreg.training import TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(train=TrainConfig(delta=1.0, alpha=1e3, beta=5e4, epsilon=0.1, learning_rate=1e-3,
                                              batch_size=30, epochs=40, augment=8), num_folds=10)
