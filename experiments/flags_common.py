"""absl flags shared by train / cross_validate / ablation: a preset (`--config`) plus one flag per config field.

The flags are generated from the dataclasses (`ExperimentConfig`, `TrainConfig`, `RegNetConfig`: every field, its
help from the field's metadata), so every field is settable and spelled once: `--alpha 300`,
`--encoder_features 16,32,32,64,64`, `--level_weights 1,1,0.5`, `--nosquared_ngf`. Unset flags keep the preset's.
"""

import dataclasses
import pathlib
import typing

from absl import flags

from experiments import configs
from jaxreg.cv import ExperimentConfig
from jaxreg.errors import ConfigError
from jaxreg.models import RegNetConfig
from jaxreg.training.config import TrainConfig

FLAGS = flags.FLAGS

flags.DEFINE_string("config", None, f"Preset in experiments/configs ({', '.join(configs.names())}). Default: quick "
                    "on the phantom, paper with --data_dir.")
flags.DEFINE_string("workdir", None, "Output folder (checkpoints, metrics.jsonl, config.json, results.json).")
flags.DEFINE_bool("progress", True, "Show a progress bar per epoch.")
flags.DEFINE_integer("chunk_steps", None, "Training steps per compiled scan (the host reads metrics, checks for NaN "
                     "and updates the progress bar once per chunk); default 32. Does not change results.")

# (dataclass, fields that are dataclasses of their own)
_SECTIONS = ((ExperimentConfig, "train"), (TrainConfig, "model"), (RegNetConfig, None))


def _base_type(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) \
        and args else hint


def _define_all():
    for cls, nested in _SECTIONS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == nested:
                continue
            kind = _base_type(hints[f.name])
            default = f.default
            text = f"{f.metadata.get('help', '')} [{cls.__name__}.{f.name}; default: the preset's, "
            text += f"{','.join(map(str, default)) if isinstance(default, tuple) else default!r} in the paper's]"
            if kind is bool:
                flags.DEFINE_bool(f.name, None, text)
            elif kind is int:
                flags.DEFINE_integer(f.name, None, text)
            elif kind is float:
                flags.DEFINE_float(f.name, None, text)
            elif kind is str:
                flags.DEFINE_string(f.name, None, text)
            elif kind is tuple:
                flags.DEFINE_list(f.name, None, text)
            else:  # a new field type must get a flag too
                raise TypeError(f"no flag type for {cls.__name__}.{f.name}: {kind}")


_define_all()


def _value(cls, f, raw):
    """The flag's value in the field's type; list flags parsed element-wise like the default's elements."""
    if not isinstance(f.default, tuple):
        return raw
    kind = type(f.default[0]) if f.default else float
    try:
        return tuple(kind(v) for v in raw)
    except ValueError:
        raise ConfigError(f"--{f.name}: expected comma-separated {kind.__name__}s; got {','.join(raw)!r}") from None


def _overrides(cls, nested):
    return {f.name: _value(cls, f, getattr(FLAGS, f.name)) for f in dataclasses.fields(cls)
            if f.name != nested and getattr(FLAGS, f.name) is not None}


def experiment_from_flags(**overrides) -> ExperimentConfig:
    """The preset with every set flag applied, validated (ConfigError naming the field)."""
    name = FLAGS.config or ("paper" if FLAGS.data_dir else "quick")
    exp = configs.get(name)
    model = dataclasses.replace(exp.train.model, **_overrides(RegNetConfig, None))
    train = dataclasses.replace(exp.train, model=model, **_overrides(TrainConfig, "model"))
    exp = dataclasses.replace(exp, train=train, **_overrides(ExperimentConfig, "train"))
    exp = dataclasses.replace(exp, **overrides) if overrides else exp
    return exp.validate()


def default_workdir(exp: ExperimentConfig) -> str:
    data = "acdc" if exp.data_dir else "phantom"
    t = exp.train
    return (f"runs/{data}_d{t.delta:g}_a{t.alpha:g}s{t.curvature_scale:g}_b{t.beta:g}_e{t.epochs}_x{t.augment}"
            f"{'' if t.batch_size == 30 else f'_bs{t.batch_size}'}"
            f"{'' if t.lr_schedule == 'constant' else '_' + t.lr_schedule}/fold{exp.fold}")


def workdir_from_flags(exp: ExperimentConfig) -> pathlib.Path:
    return pathlib.Path(FLAGS.workdir or default_workdir(exp))
