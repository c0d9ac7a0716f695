"""`TrainConfig`: one training recipe as a frozen dataclass (defaults: the paper's), with its checks and JSON form.

Every field carries its command-line help in `metadata["help"]`; `experiments/flags_common.py` turns each field into
a flag, so nothing here is out of the command line's reach. `validate()` refuses out-of-range values with one
`ConfigError` naming the field, before anything is written.
"""

from __future__ import annotations

import dataclasses
import math

from jaxreg.errors import ConfigError
from jaxreg.models import RegNetConfig

LR_SCHEDULES = ("constant", "cosine")


def _f(default, help_text):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training recipe. Defaults are the paper's (Hering et al. 2019, Sec. 2)."""

    delta: float = _f(1.0, "NGF weight (paper 1).")
    alpha: float = _f(1e3, "Curvature weight in the paper's units (paper 1e3); acts as alpha * curvature_scale.")
    curvature_scale: float = _f(0.01, "Maps the paper's alpha onto this code's pixel-sum curvature (chosen on a "
                                      "validation fold; 1 = alpha at face value). docs/decisions.md.")
    beta: float = _f(5e4, "Label-loss weight (paper 5e4), on the mean squared one-hot error.")
    label_dice: float = _f(0.0, "Soft Dice loss (1 - mean Dice of the foreground labels) beside the label SSD, per "
                                "level, weighted beta * label_dice (paper 0: SSD only). jaxreg.objective.")
    epsilon: float = _f(0.1, "NGF edge parameter, intensity per pixel (paper 0.1).")
    squared_ngf: bool = _f(True, "NGF in the squared form of Ruehaak et al. 2013 (False: the paper's printed form).")
    learning_rate: float = _f(1e-3, "Adam learning rate (paper 1e-3).")
    lr_schedule: str = _f("constant", "Learning-rate schedule: constant (paper) or cosine (decays to 0 over the run).")
    batch_size: int = _f(30, "Pairs per step (paper 30); divisible by the device count.")
    epochs: int = _f(40, "Epochs (paper 40).")
    augment: int = _f(8, "Passes over the training pairs per epoch: 1 original + (augment - 1) deformed (paper 8).")
    augment_stride: int = _f(16, "Control-point spacing (pixels) of the random augmentation fields.")
    augment_max_disp: float = _f(3.0, "Largest control-point displacement (pixels) of the augmentation fields.")
    augment_gamma: float = _f(0.0, "Intensity augmentation on the deformed passes (0: none, the paper's): std of the "
                                   "log of the gamma both frames of a pair are raised to. jaxreg.data.augment.")
    augment_bias: float = _f(0.0, "Intensity augmentation: bound of the coefficients of a pair's cubic-polynomial "
                                  "log bias field (0: none).")
    augment_noise: float = _f(0.0, "Intensity augmentation: std of Gaussian noise added to each frame, intensities "
                                   "in [0, 1] (0: none).")
    level_weights: tuple = _f((1.0, 1.0, 1.0), "Weight of each output level's loss, coarse -> fine.")
    seed: int = _f(0, "Initialisation seed (>= 0); also the data seed unless data_seed is set.")
    data_seed: int | None = _f(None, "Batch order and augmentation seed (>= 0); unset: seed. Population members "
                                     "share it (common random numbers).")
    hyper_range: float = _f(100.0, "Weight-conditioned model (model.condition_features > 0): each training sample "
                                   "draws delta, alpha, beta log-uniformly within x1/hyper_range .. x hyper_range of "
                                   "the recipe's (jaxreg.conditioning).")
    hyper_zero_prob: float = _f(0.1, "Weight-conditioned model: probability that a drawn weight is 0 (Table 1's x0).")
    hyper_axes_prob: float = _f(0.5, "Weight-conditioned model: probability that a sample varies one weight only "
                                     "(the other two at the recipe's, as in Table 1); otherwise all three.")
    model: RegNetConfig = _f(RegNetConfig(), "The network (its fields are flags of their own).")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(d: dict) -> "TrainConfig":
        """Inverse of `to_json`; fields added later take their old meaning. KeyError/TypeError on a foreign dict."""
        d = dict(d)
        d["model"] = RegNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["model"].items()})
        d.setdefault("curvature_scale", 1.0)  # runs written before the field existed used alpha unscaled
        d.setdefault("lr_schedule", "constant")
        d.setdefault("data_seed", None)
        return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @property
    def conditioned(self) -> bool:
        """A weight-conditioned ("hyper") recipe: the network reads the loss weights, drawn per training sample."""
        return self.model.condition_features > 0

    @property
    def resolved_data_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    def validate(self) -> "TrainConfig":
        """Returns self, or raises ConfigError naming the first bad field."""
        for name in ("delta", "alpha", "beta", "label_dice", "augment_max_disp", "augment_gamma", "augment_bias",
                     "augment_noise"):
            check_number(name, getattr(self, name), minimum=0.0)
        for name in ("curvature_scale", "epsilon", "learning_rate"):
            check_number(name, getattr(self, name), minimum=0.0, strict=True)
        for name in ("batch_size", "epochs", "augment", "augment_stride"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("seed", self.seed, minimum=0)
        if self.data_seed is not None:
            check_int("data_seed", self.data_seed, minimum=0)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {self.lr_schedule!r}")
        if not isinstance(self.squared_ngf, bool):
            raise ConfigError(f"squared_ngf must be true or false; got {self.squared_ngf!r}")
        check_number("hyper_range", self.hyper_range, minimum=1.0)
        for name in ("hyper_zero_prob", "hyper_axes_prob"):
            check_number(name, getattr(self, name), minimum=0.0)
            if getattr(self, name) > 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1]; got {getattr(self, name)!r}")
        if self.conditioned:
            for name in ("delta", "alpha", "beta"):
                if getattr(self, name) <= 0:
                    raise ConfigError(f"{name} must be > 0 for a weight-conditioned model (the weights it answers "
                                      f"are ratios to the recipe's); got {getattr(self, name)!r}")
        m = self.model
        if len(self.level_weights) != len(m.level_factors):
            raise ConfigError(f"level_weights needs one weight per output level ({len(m.level_factors)}); got "
                              f"{self.level_weights}")
        for w in self.level_weights:
            check_number("level_weights", w, minimum=0.0)
        validate_model(m)
        return self


def validate_model(m: RegNetConfig) -> None:
    if not m.encoder_features or len(m.decoder_features) != len(m.level_factors):
        raise ConfigError(f"decoder_features needs one entry per level_factors entry ({len(m.level_factors)}); got "
                          f"{m.decoder_features}")
    for name in ("encoder_features", "decoder_features", "level_factors"):
        for v in getattr(m, name):
            check_int(name, v, minimum=1)
    check_int("stride", m.stride, minimum=1)
    check_number("negative_slope", m.negative_slope, minimum=0.0)
    check_int("condition_features", m.condition_features, minimum=0)
    if list(m.level_factors) != sorted(m.level_factors, reverse=True):
        raise ConfigError(f"level_factors run coarse -> fine (decreasing); got {m.level_factors}")
    for f in m.level_factors:
        idx = math.log2(m.stride * f)
        if idx != int(idx) or idx >= len(m.encoder_features):
            raise ConfigError(f"level factor {f} x stride {m.stride} must be a power of two the encoder reaches "
                              f"(at most 2**{len(m.encoder_features) - 1})")


def check_number(name, v, minimum=None, strict=False) -> None:
    """ConfigError unless `v` is a finite real number (>= minimum, or > minimum when strict)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number; got {v!r}")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise ConfigError(f"{name} must be {'>' if strict else '>='} {minimum:g}; got {v!r}")


def check_int(name, v, minimum=None) -> None:
    """ConfigError unless `v` is an integer >= minimum."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{name} must be an integer; got {v!r}")
    if minimum is not None and v < minimum:
        raise ConfigError(f"{name} must be >= {minimum}; got {v}")


def differing_fields(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Names (dotted for nested dicts) of the fields where two config dicts differ."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differing_fields(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k} ({va!r} vs {vb!r})")
    return out
