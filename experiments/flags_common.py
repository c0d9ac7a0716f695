"""absl flags shared by train / cross_validate / ablation: a preset (`--config`) plus per-field overrides."""

import dataclasses

from absl import flags

from experiments import configs
from jaxreg.experiment import ExperimentConfig

flags.DEFINE_string("config", None, "Preset in experiments/configs: paper, tuned, quick, tiny. Default: quick on the "
                    "phantom, paper with --data_dir.")
flags.DEFINE_string("data_dir", None, "ACDC-layout folder (patientXXX/...); unset: the synthetic phantom.")
flags.DEFINE_string("workdir", None, "Output folder (checkpoints, metrics.jsonl, config.json, results.json).")
flags.DEFINE_integer("fold", None, "Test fold.")
flags.DEFINE_integer("num_folds", None, "Patient-wise folds (1: train on all pairs).")
flags.DEFINE_float("delta", None, "NGF weight (paper 1).")
flags.DEFINE_float("alpha", None, "Curvature weight (paper 1e3).")
flags.DEFINE_float("curvature_scale", None, "Maps the paper's alpha onto the pixel-sum curvature: "
                   "alpha * curvature_scale (default 0.01, chosen on a validation fold; 1 = alpha at face value).")
flags.DEFINE_float("beta", None, "Label-loss weight (paper 5e4; on the mean squared one-hot error).")
flags.DEFINE_float("epsilon", None, "NGF edge parameter, intensity per pixel (paper 0.1).")
flags.DEFINE_integer("epochs", None, "Epochs (paper 40).")
flags.DEFINE_integer("batch_size", None, "Batch size (paper 30); divisible by the device count.")
flags.DEFINE_float("learning_rate", None, "Adam learning rate (paper 1e-3).")
flags.DEFINE_enum("lr_schedule", None, ["constant", "cosine"], "Learning-rate schedule (paper: constant; "
                  "cosine decays to 0 over all epochs).")
flags.DEFINE_integer("augment", None, "Passes per epoch: 1 original + (augment-1) randomly deformed (paper 8).")
flags.DEFINE_integer("seed", None, "Initialisation, shuffling and augmentation seed.")
flags.DEFINE_integer("phantom_slices", None, "Phantom slice pairs per direction.")
flags.DEFINE_float("pixel_mm", None, "Resample ACDC slices in-plane to this pixel size (mm); unset: native.")
flags.DEFINE_bool("progress", True, "Show a progress bar per epoch.")

FLAGS = flags.FLAGS

_TRAIN_FIELDS = ("delta", "alpha", "curvature_scale", "beta", "epsilon", "epochs", "batch_size", "learning_rate", "lr_schedule",
                "augment", "seed")
_EXP_FIELDS = ("fold", "num_folds", "phantom_slices", "pixel_mm")


def experiment_from_flags(**overrides) -> ExperimentConfig:
    name = FLAGS.config or ("paper" if FLAGS.data_dir else "quick")
    exp = configs.get(name)
    train = dataclasses.replace(exp.train, **{k: getattr(FLAGS, k) for k in _TRAIN_FIELDS
                                              if getattr(FLAGS, k) is not None})
    exp_kw = {k: getattr(FLAGS, k) for k in _EXP_FIELDS if getattr(FLAGS, k) is not None}
    if FLAGS.data_dir:
        exp_kw["data_dir"] = FLAGS.data_dir
    exp = dataclasses.replace(exp, train=train, **exp_kw)
    return dataclasses.replace(exp, **overrides) if overrides else exp


def default_workdir(exp: ExperimentConfig) -> str:
    data = "acdc" if exp.data_dir else "phantom"
    t = exp.train
    return (f"runs/{data}_d{t.delta:g}_a{t.alpha:g}s{t.curvature_scale:g}_b{t.beta:g}_e{t.epochs}_x{t.augment}"
            f"{'' if t.lr_schedule == 'constant' else '_' + t.lr_schedule}/fold{exp.fold}")
