"""Classic iterative registration (the paper's baseline): multi-level NGF + alpha * curvature (`jaxreg.objective`).

Unknowns are cubic B-spline control points (stride `stride` pixels at every pyramid level; `fine_stride`, if set,
at the finest), optimised with L-BFGS (optax, zoom line search) inside `lax.while_loop` until the gradient norm
falls below `rtol` times its initial value or `max_iters` is reached; the grid is carried up to the next level by
exact B-spline subdivision.
Why control points and not a dense field: ~16x fewer unknowns (better conditioned for L-BFGS), smoothness built
in, and the level hand-over is exact. One pair at a time `(*S)`; `register_batch` maps it over a batch (pair by pair
on a CPU, vmapped on an accelerator) and jits it per shape.
Optional instance refinement of a given displacement (e.g. the network's prediction): additive (`register`'s
`init_u`: start from its control grid at the finest level; the curvature penalises the whole field) or by
composition (`refine_composed`: register to the moving image warped by it, compose the residual with it; the
curvature penalises the residual only). The label term is added when both label maps are known.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu

from jaxreg import bspline, objective, warp
from jaxreg.runtime import chunks


@dataclasses.dataclass(frozen=True)
class ClassicConfig:
    """Pixel-sum losses at each level (spacing 1, eps in intensity per level pixel)."""

    alpha: float = 1.0
    epsilon: float = 0.1
    levels: tuple = (4, 2, 1)  # image downsampling per level, coarse -> fine
    stride: int = 4
    max_iters: tuple = (20, 10, 10)  # L-BFGS iteration cap per level (an int applies to every level)
    rtol: float = 1e-3
    beta: float = 0.0  # label term weight (mean squared one-hot error x pixel count), only with both label maps
    squared_ngf: bool = True
    fine_stride: int | None = None  # control spacing at the finest level (stride / 2**k); None: stride
    diffeomorphic: int = 0  # > 0: the B-spline is a velocity field, the displacement its exp (this many squarings)
    exp_factor: int = 1  # with diffeomorphic: squarings at 1/exp_factor of each level's resolution (warp.exp_velocity)

    def __post_init__(self):
        lv = tuple(self.levels)
        if not lv or lv[-1] != 1 or any(a <= b or a % b for a, b in zip(lv, lv[1:])):
            raise ValueError(f"ClassicConfig.levels must be decreasing factors, each dividing the one before, ending "
                             f"at 1 (full resolution); got {self.levels!r}")
        if not isinstance(self.diffeomorphic, int) or isinstance(self.diffeomorphic, bool) or self.diffeomorphic < 0:
            raise ValueError(f"ClassicConfig.diffeomorphic must be an int >= 0 (squaring steps); got "
                             f"{self.diffeomorphic!r}")
        if not isinstance(self.exp_factor, int) or self.exp_factor < 1:
            raise ValueError(f"ClassicConfig.exp_factor must be a positive int (1: full resolution); got "
                             f"{self.exp_factor!r}")
        if isinstance(self.max_iters, tuple) and len(self.max_iters) != len(lv):
            raise ValueError(f"ClassicConfig.max_iters needs one cap per level ({len(lv)}); got {self.max_iters!r}")
        fs = self.fine_stride
        if fs is not None and not (0 < fs <= self.stride and self.stride % fs == 0
                                   and (self.stride // fs) & (self.stride // fs - 1) == 0):
            raise ValueError(f"ClassicConfig.fine_stride must be stride / 2**k (stride {self.stride}); got {fs!r}")


# The setting patient-wise CV chose among `jaxreg.cv.classic_grid()` ("a0.1_e0.1_it80_l3_ss4", every fold):
# 84.4 % mean Dice against 82.9 % for multi-resolution demons on ACDC, no folding (docs/results.md). What
# `jaxreg register --method classic` runs; `ClassicConfig()` stays the cheap setting the CV's baselines use.
CV_CHOICE = ClassicConfig(alpha=0.1, epsilon=0.1, max_iters=(80, 40, 40), diffeomorphic=4)
# The refinement patient-wise CV chose on a network's fold models ("composed_a0.5_l2" of
# `jaxreg.fold_choice.refine_grid`, `experiments.refine_cv`; docs/results.md): chosen on each of the weight-conditioned
# recipe's folds 2, 3, 4, 5 and 7 by the other four, and on all of them, 0.18 points above the one-level alpha-1
# refinement it replaced (pooled over those folds and folds 0, 1, 8), most on the apex and on fold 3. What
# `jaxreg register --method refine` runs: `refine_batch(..., REFINE_CHOICE, composed=True)`, two levels (half, then
# full resolution) of 20 L-BFGS iterations each.
REFINE_CHOICE = ClassicConfig(alpha=0.5, levels=(2, 1), max_iters=(20, 20))


def _minimise(fun, x0, max_iters: int, rtol: float):
    """L-BFGS (optax, zoom line search) from x0 -> (x, iterations run). The objective's value and gradient are
    carried in the loop, taken from the line search's state after each step: `optax.value_and_grad_from_state`
    would guard that reuse with a `lax.cond`, which under `vmap` becomes a select that evaluates the objective
    a second time every iteration (docs/performance.md, "Classic registration vs SimpleITK demons")."""
    opt = optax.lbfgs()
    value0, grad0 = jax.value_and_grad(fun)(x0)
    g0 = otu.tree_norm(grad0)

    def step(carry):
        x, state, value, grad = carry
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(x, updates), state, otu.tree_get(state, "value"), otu.tree_get(state, "grad")

    def keep_going(carry):
        _, state, _, grad = carry
        it = otu.tree_get(state, "count")
        return (it == 0) | ((it < max_iters) & (otu.tree_norm(grad) >= rtol * g0))

    x, state, _, _ = jax.lax.while_loop(keep_going, step, (x0, opt.init(x0), value0, grad0))
    return x, otu.tree_get(state, "count")


def level_objective(control, fixed, moving, cfg: ClassicConfig, stride: int, n_full: int, weights: dict,
                    fixed_onehot=None, moving_onehot=None):
    """One pyramid level's objective: control `(*control_grid_shape(S, stride), ndim)`, images `(*S)` at that level
    (one-hots `(*S, C)` or None) -> scalar, NGF + alpha * curvature (+ beta * labels) as pixel sums (`n_full`: the
    finest level's pixel count). With `cfg.diffeomorphic` the B-spline is the velocity and the field its exp."""
    v = bspline.bspline_displacement(control, fixed.shape, stride)
    u = warp.exp_velocity(v, cfg.diffeomorphic, cfg.exp_factor)
    terms = objective.level_terms(u, fixed, moving, fixed_onehot, moving_onehot, n_full, cfg.epsilon, cfg.squared_ngf,
                                  control=control, stride=stride)
    return objective.combine(terms, weights)


def register(fixed, moving, cfg: ClassicConfig = ClassicConfig(), init_u=None, fixed_labels=None,
             moving_labels=None, num_classes: int = 4):
    """Registers one pair `(*S)` -> (u `(*S, ndim)` pixels, iterations per level). Pure and jit/vmap-able.

    init_u: a starting displacement (instance refinement); its control grid is fitted at the finest level (with
    `cfg.diffeomorphic`, as the velocity: exp(v) ~= v to first order).
    `cfg.diffeomorphic` > 0: the control grid parametrises a stationary velocity field and the displacement is its
    exponential (`warp.exp_velocity`, squared at 1/`cfg.exp_factor` of each level's resolution): no folding, at ~6x
    the time a pair of the displacement form for 4 squarings (0.200 against 0.034 s;
    docs/performance.md). The curvature still penalises the velocity (its control grid).
    fixed_labels/moving_labels (int maps) add `cfg.beta` * label term when both are given.
    """
    fixed, moving = jnp.asarray(fixed, jnp.float32), jnp.asarray(moving, jnp.float32)
    if fixed.shape != moving.shape:
        raise ValueError(f"fixed and moving must have the same shape; got {fixed.shape} and {moving.shape}")
    nd = fixed.ndim
    shape = fixed.shape
    use_labels = cfg.beta > 0 and fixed_labels is not None and moving_labels is not None
    if use_labels:
        fo = jax.nn.one_hot(fixed_labels, num_classes)
        mo = jax.nn.one_hot(moving_labels, num_classes)
    n_full = math.prod(shape)
    levels = cfg.levels
    if init_u is not None:
        levels = levels[-1:]  # refinement works at the finest level only
    w = objective.weights(1.0, cfg.alpha, cfg.beta if use_labels else 0.0)
    control = None
    iters = []
    for li, f in enumerate(levels):
        lshape = tuple(n // f for n in shape)
        fl, ml = warp.downsample(fixed, f, nd), warp.downsample(moving, f, nd)
        if use_labels:
            fol, mol = warp.downsample(fo, f, nd), warp.downsample(mo, f, nd)
        last = li == len(levels) - 1
        st = cfg.fine_stride or cfg.stride if last else cfg.stride  # the finest level may use a finer grid
        if control is None:
            control = jnp.zeros(bspline.control_grid_shape(lshape, st) + (nd,), jnp.float32)
            if init_u is not None:
                control = fit_control(jnp.asarray(init_u, jnp.float32) / f, lshape, st)
        else:
            control = bspline.carry_up(control, lshape, cfg.stride, levels[li - 1] // f)
            for k in range(int(math.log2(cfg.stride // st))):  # exact subdivision: the same field, finer grid
                control = bspline.upsample_control(control, lshape, cfg.stride // 2**k)

        fun = functools.partial(level_objective, fixed=fl, moving=ml, cfg=cfg, stride=st, n_full=n_full, weights=w,
                                fixed_onehot=fol if use_labels else None, moving_onehot=mol if use_labels else None)
        caps = cfg.max_iters if isinstance(cfg.max_iters, tuple) else (cfg.max_iters,) * len(cfg.levels)
        cap = caps[len(cfg.levels) - len(levels) + li]
        control, n_it = _minimise(fun, control, cap, cfg.rtol)
        iters.append(n_it)
    u = warp.exp_velocity(bspline.bspline_displacement(control, shape, st), cfg.diffeomorphic, cfg.exp_factor)
    return u, jnp.stack(iters)


def fit_control(u, image_shape, stride):
    """Least-squares control grid whose cubic B-spline field best matches `u` `(*S, ndim)` (separable pseudo-inverse)."""
    mats = [jnp.asarray(jnp.linalg.pinv(bspline.basis_matrix(n, stride))) for n in image_shape]
    out = u
    for axis, m in enumerate(mats):
        out = jnp.moveaxis(jnp.tensordot(m, out, axes=((1,), (axis,))), 0, axis)
    return out


@functools.partial(jax.jit, static_argnames=("cfg", "chunk"))
def register_batch(fixed, moving, cfg: ClassicConfig = ClassicConfig(), chunk: int | None = None):
    """`register` over a batch `(B, *S)` -> (u `(B, *S, ndim)`, iterations `(B, levels)`).

    chunk: pairs optimised together, the chunks in sequence; None: the whole batch vmapped at once (an
    accelerator); 1: one pair at a time, not vmapped, the CPU's choice (`chunks.pair_chunk(kind="solver")`): under
    `vmap` each chunk runs until its slowest pair stops, 1.6-3.2x slower a pair with 8 on a CPU core
    (docs/performance.md). Chunks > 1 are vmapped (padded to whole chunks).
    """
    return chunks.map_pair_fn(lambda f, m: register(f, m, cfg), chunk, fixed, moving)


def refine_composed(fixed, moving, init_u, cfg: ClassicConfig = ClassicConfig()):
    """Instance refinement by composition, one pair `(*S)`, init_u `(*S, ndim)` px -> (u `(*S, ndim)` px, iterations
    per level).

    `cfg` registers `fixed` to `moving` warped by `init_u` (every level of `cfg.levels`, from zero); the result is
    the residual r applied first, `warp.compose(r, init_u)` = r + init_u(x + r). The curvature penalises r alone, so
    a large smooth starting field is not pulled back toward zero as the additive form (`register(init_u=...)`) pulls
    it, and det(I + grad u) = det(I + grad r) det(I + grad init_u at x + r): u folds only where r or init_u does.
    The moving image is interpolated twice (once by init_u, once by r); the labels are warped once, by u.
    """
    init_u = jnp.asarray(init_u, jnp.float32)
    r, iters = register(fixed, warp.warp(jnp.asarray(moving, jnp.float32), init_u), cfg)
    return warp.compose(r, init_u), iters


@functools.partial(jax.jit, static_argnames=("cfg", "chunk", "composed"))
def refine_batch(fixed, moving, init_u, cfg: ClassicConfig = ClassicConfig(), chunk: int | None = None,
                 composed: bool = False):
    """Instance refinement of given displacements `(B, *S, ndim)` px, no labels -> (u `(B, *S, ndim)`, iterations):
    additive at the finest level (`register`'s `init_u`), or with `composed` by composition (`refine_composed`,
    every level of `cfg`). `chunk`: as in `register_batch`."""
    one = refine_composed if composed else (lambda f, m, u, c: register(f, m, c, init_u=u))
    return chunks.map_pair_fn(lambda f, m, u: one(f, m, u, cfg), chunk, fixed, moving, init_u)
