"""Registration networks (Flax): the paper's shared-encoder UNet emitting cubic B-spline control grids at three levels.

Shapes: fixed, moving `(B, *S, 1)` or `(B, *S)` in [0, 1] -> list of control grids, coarse to fine, each
`(B, *control_grid_shape(S / f_l, stride), ndim)` in pixels of level l (f_l = 4, 2, 1 by default). N-D: the
spatial rank comes from the input (2D or 3D convolutions), so a 3D variant is a parameter, not a copy.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxreg import bspline
from jaxreg.runtime import conv


@dataclasses.dataclass(frozen=True)
class RegNetConfig:
    """Architecture. Image side must be divisible by 2**len(encoder_features[1:])."""

    encoder_features: tuple = dataclasses.field(default=(16, 32, 32, 64, 64), metadata={
        "help": "Encoder channels per resolution, full -> 1/16 (each a stride-2 block after the first)."})
    decoder_features: tuple = dataclasses.field(default=(64, 64, 32), metadata={
        "help": "Decoder channels at 1/16, 1/8, 1/4 of the image (one per output level)."})
    level_factors: tuple = dataclasses.field(default=(4, 2, 1), metadata={
        "help": "Image downsampling of each output level, coarse -> fine."})
    stride: int = dataclasses.field(default=4, metadata={"help": "Control-point spacing in pixels of each level."})
    residual_levels: bool = dataclasses.field(default=True, metadata={
        "help": "Level l = its head + the refined level l-1 grid (the classic multi-level carry-up)."})
    negative_slope: float = dataclasses.field(default=0.2, metadata={"help": "Leaky ReLU slope."})
    condition_features: int = dataclasses.field(default=0, metadata={
        "help": "Weight conditioning (the hyper model): width of the MLP mapping the loss weights "
                "(jaxreg.conditioning.encode) to a per-channel scale and shift (FiLM) after every convolution "
                "of encoder and decoder; 0: an unconditioned network."})


def level_shapes(image_shape: Sequence[int], cfg: RegNetConfig):
    """Image shape of each output level (coarse -> fine)."""
    return [tuple(n // f for n in image_shape) for f in cfg.level_factors]


class ConvBlock(nn.Module):
    """3^nd convolution, then FiLM `x * (1 + scale) + shift` when given a condition embedding, then leaky ReLU."""

    features: int
    strides: int = 1
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, x, embedding=None):
        nd = x.ndim - 2
        # conv.conv_general_dilated: XLA's convolution, faster on CPU for stride 2 (gradient) and one input channel
        x = nn.Conv(self.features, (3,) * nd, strides=(self.strides,) * nd, padding="SAME",
                    conv_general_dilated=conv.conv_general_dilated)(x)
        if embedding is not None:
            # zero-initialised: a new conditioned network starts as the unconditioned one
            film = nn.Dense(2 * self.features, kernel_init=nn.initializers.zeros, name="film")(embedding)
            scale, shift = jnp.split(film.reshape((film.shape[0],) + (1,) * nd + (-1,)), 2, axis=-1)
            x = x * (1.0 + scale) + shift
        return nn.leaky_relu(x, self.negative_slope)


class ConditionMLP(nn.Module):
    """Condition vector `(B, jaxreg.conditioning.FEATURES)` -> embedding `(B, features)` shared by the FiLM layers."""

    features: int
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, c):
        for _ in range(2):
            c = nn.leaky_relu(nn.Dense(self.features)(c), self.negative_slope)
        return c


class Encoder(nn.Module):
    """One stream: features at full, 1/2, ..., 1/2**(L-1) resolution."""

    features: tuple
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, x, embedding=None):
        feats = []
        for i, f in enumerate(self.features):
            x = ConvBlock(f, strides=1 if i == 0 else 2, negative_slope=self.negative_slope)(x, embedding)
            x = ConvBlock(f, negative_slope=self.negative_slope)(x, embedding)
            feats.append(x)
        return feats


class RegNet(nn.Module):
    """Shared-weight encoder on fixed and moving, UNet decoder with skips from both, three B-spline heads.

    With `cfg.condition_features > 0` the call takes `condition` `(B, jaxreg.conditioning.FEATURES)` (the encoded
    loss weights) and modulates every convolution (FiLM); unconditioned networks take none.
    """

    cfg: RegNetConfig = RegNetConfig()

    @nn.compact
    def __call__(self, fixed, moving, condition=None):
        cfg = self.cfg
        if (condition is not None) != (cfg.condition_features > 0):
            raise ValueError("a weight-conditioned network (condition_features > 0) needs a condition vector, and "
                             "an unconditioned one takes none")
        if fixed.ndim == moving.ndim and fixed.shape[-1] != 1:
            fixed, moving = fixed[..., None], moving[..., None]
        if fixed.shape != moving.shape:
            raise ValueError(f"fixed and moving must have the same shape; got {fixed.shape} and {moving.shape}")
        nd = fixed.ndim - 2
        spatial = fixed.shape[1:-1]
        down = 2 ** (len(cfg.encoder_features) - 1)
        if any(n % down for n in spatial):
            raise ValueError(f"image side must be divisible by {down}; got spatial shape {spatial}")
        embedding = None
        if condition is not None:
            embedding = ConditionMLP(cfg.condition_features, cfg.negative_slope)(jnp.asarray(condition, fixed.dtype))
        encoder = Encoder(cfg.encoder_features, cfg.negative_slope)  # one module, called twice: shared weights
        ef, em = encoder(fixed, embedding), encoder(moving, embedding)
        outputs = []
        x = None
        n_enc = len(cfg.encoder_features)
        for level, (feat, factor) in enumerate(zip(cfg.decoder_features, cfg.level_factors)):
            # level l works at 1/(stride * factor) of the image: encoder index log2(stride * factor)
            idx = int(round(math.log2(cfg.stride * factor)))
            if idx >= n_enc:
                raise ValueError(f"level factor {factor} x stride {cfg.stride} is coarser than the encoder")
            skip = jnp.concatenate([ef[idx], em[idx]], axis=-1)
            if x is not None:
                b = x.shape[0]
                x = jax.image.resize(x, (b,) + skip.shape[1:-1] + (x.shape[-1],), "nearest")
                skip = jnp.concatenate([x, skip], axis=-1)
            x = ConvBlock(feat, negative_slope=cfg.negative_slope)(skip, embedding)
            x = ConvBlock(feat, negative_slope=cfg.negative_slope)(x, embedding)
            head = nn.Conv(nd, (3,) * nd, padding="SAME", kernel_init=nn.initializers.zeros,
                           bias_init=nn.initializers.zeros, name=f"head{level}")(x)
            # feature j sits at level pixel stride*j + (stride-1)/2 ~ control j+1: pad 1 before, 2 after
            target = bspline.control_grid_shape(tuple(n // factor for n in spatial), cfg.stride)
            pads = [(0, 0)] + [(1, t - n - 1) for t, n in zip(target, head.shape[1:-1])] + [(0, 0)]
            control = jnp.pad(head, pads, mode="edge")
            if cfg.residual_levels and outputs:
                ratio = cfg.level_factors[level - 1] // factor  # previous level's pixels are `ratio` of this level's
                level_shape = tuple(n // factor for n in spatial)
                control = control + jax.vmap(lambda c: bspline.carry_up(c, level_shape, cfg.stride, ratio))(outputs[-1])
            outputs.append(control)
        return outputs


def dense_fields(controls, image_shape: Sequence[int], cfg: RegNetConfig):
    """Control grids (coarse -> fine, batched) -> dense displacements of each level `(B, *S_l, ndim)` in level pixels."""
    shapes = level_shapes(image_shape, cfg)
    return [jax.vmap(lambda c, s=s: bspline.bspline_displacement(c, s, cfg.stride))(c) for c, s in zip(controls, shapes)]


def finest_displacement(controls, image_shape: Sequence[int], cfg: RegNetConfig):
    """The inference output: the finest level's dense field, in image pixels `(B, *S, ndim)`."""
    fine = dense_fields(controls[-1:], image_shape, dataclasses.replace(cfg, level_factors=cfg.level_factors[-1:]))[0]
    return fine * cfg.level_factors[-1]
