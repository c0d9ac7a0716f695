"""Training the registration network: the recipe (`config`), the pure step (`step`), the loop (`loop`) and the
workdir on disk (`workdir`: lock, config.json, experiment.json, checkpoints, metrics.jsonl).

    from jaxreg.training import TrainConfig, train, train_population, load_trained
"""

from jaxreg.training.config import TrainConfig
from jaxreg.training.loop import epoch_batches, train, train_locked, train_population
from jaxreg.training.step import NUM_CLASSES, Trainer, learning_rate_schedule, loss_fn, loss_weights
from jaxreg.training.workdir import WorkdirBusy, load_trained, lock, read_metrics

__all__ = ["NUM_CLASSES", "TrainConfig", "Trainer", "WorkdirBusy", "epoch_batches", "learning_rate_schedule",
           "load_trained", "lock", "loss_fn", "loss_weights", "read_metrics", "train", "train_locked",
           "train_population"]
