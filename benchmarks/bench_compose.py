"""Where the classic method's time goes on XLA:CPU: the objective per pyramid level, and the composition's cost.

Part 1: for a `jaxreg.cv.classic_grid()` setting, one pair's objective value-and-gradient per level
(`classic.level_objective`, jitted alone) times the L-BFGS iterations the pairs reach there, against the measured
seconds a pair of `classic.register` (one pair at a time, as on a CPU): what the solver itself adds.
Part 2: value and gradient of `warp.compose(u, u)` and of `warp.exp_velocity(v, k)` at 28, 56 and 112 pixels, the
field either a jit argument (a materialised buffer) or computed in the same program (`0.5 * v`: XLA fuses the
producer into the gathers), and the squarings written as the Python loop of `exp_velocity` or as a `lax.scan`.
Median of --repeats blocks of 100 calls after compilation; pin one core for CPU seconds.

    taskset -c 1 python benchmarks/bench_compose.py --data_dir ../shared/data/acdc/training
        [--classic a0.1_e0.1_it80_l3_ss4] [--pairs 24] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from timing import add_runtime_flags, apply_runtime_flags, median_time  # benchmarks/ on sys.path


def _ms_per_call(fn, x, repeats: int, calls: int = 100) -> float:
    """Median over `repeats` blocks of the time of one call of the jitted `fn(x)` in ms (compilation excluded)."""
    fn = jax.jit(fn)
    jax.block_until_ready(fn(x))

    def block():
        for _ in range(calls):
            r = fn(x)
        jax.block_until_ready(r)

    return median_time(block, 0, repeats) / calls * 1e3


def _exp_scan(v, steps: int):
    """`warp.exp_velocity(v, steps)` with the squarings as a `lax.scan` (each one's input a loop carry)."""
    from jaxreg import warp

    u, _ = jax.lax.scan(lambda u, _: (warp.compose(u, u), None), v / 2.0**steps, None, length=steps)
    return u


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default="../shared/data/acdc/training")
    ap.add_argument("--classic", default="a0.1_e0.1_it80_l3_ss4", help="a jaxreg.cv.classic_grid() setting")
    ap.add_argument("--pairs", type=int, default=24, help="random pairs for part 1's iterations and time")
    ap.add_argument("--repeats", type=int, default=5)
    add_runtime_flags(ap)
    args = ap.parse_args()
    apply_runtime_flags(args)
    from jaxreg import bspline, classic, cv, objective, warp
    from jaxreg.data import load_acdc_pairs

    grid = cv.classic_grid()
    if args.classic not in grid:
        raise SystemExit(f"--classic: unknown setting {args.classic!r}; one of {', '.join(grid)}")
    cfg = grid[args.classic]
    pairs = load_acdc_pairs(args.data_dir)
    sel = np.random.default_rng(0).choice(len(pairs), min(args.pairs, len(pairs)), replace=False)
    fixed, moving = jnp.asarray(pairs.fixed[sel]), jnp.asarray(pairs.moving[sel])
    dev = jax.devices()[0]
    print(f"device {dev.platform} ({dev.device_kind}); setting {args.classic}; {len(sel)} ACDC pairs")

    # part 1: objective evaluations x iterations against the measured time a pair
    reg = jax.jit(lambda f, m: classic.register(f, m, cfg))
    jax.block_until_ready(reg(fixed[0], moving[0]))
    t0, iters = time.perf_counter(), []
    for f, m in zip(fixed, moving):
        u, it = reg(f, m)
        iters.append(np.asarray(it))
    jax.block_until_ready(u)
    per_pair = (time.perf_counter() - t0) / len(sel) * 1e3
    iters = np.mean(iters, axis=0)
    w = objective.weights(1.0, cfg.alpha, 0.0)
    n_full = math.prod(fixed.shape[1:])
    print("\n| level | pixels | value + gradient, ms | iterations (mean) | product, ms |\n|---|---|---|---|---|")
    total = 0.0
    for li, factor in enumerate(cfg.levels):
        fl, ml = warp.downsample(fixed[0], factor, 2), warp.downsample(moving[0], factor, 2)
        st = cfg.fine_stride or cfg.stride if li == len(cfg.levels) - 1 else cfg.stride
        c0 = jnp.full(bspline.control_grid_shape(fl.shape, st) + (2,), 0.1, jnp.float32)
        ms = _ms_per_call(jax.value_and_grad(lambda c, fl=fl, ml=ml, st=st: classic.level_objective(
            c, fl, ml, cfg, st, n_full, w)), c0, args.repeats)
        total += ms * iters[li]
        print(f"| {li} | {fl.shape[0]} x {fl.shape[1]} | {ms:.3f} | {iters[li]:.1f} | {ms * iters[li]:.1f} |")
    print(f"\nsum of products {total:.1f} ms against {per_pair:.1f} ms a pair measured (`classic.register`, jitted, "
          "one pair at a time)")

    # part 2: the composition with its input a buffer or computed in the program; loop or scan
    print("\n| field | operation | input a jit argument, ms | input computed (0.5 * v), ms |\n|---|---|---|---|")
    rng = np.random.default_rng(0)
    for side in (28, 56, 112):
        v = jnp.asarray(rng.normal(size=(side, side, 2)).astype(np.float32) * 2.0)
        rows = [("compose(u, u)", lambda u: warp.compose(u, u))]
        for k in (4, 6):
            rows += [(f"exp_velocity(v, {k})", lambda u, k=k: warp.exp_velocity(u, k)),
                     (f"exp as lax.scan, {k}", lambda u, k=k: _exp_scan(u, k))]
        for name, op in rows:
            arg = _ms_per_call(jax.value_and_grad(lambda u, op=op: jnp.sum(op(u) ** 2)), v, args.repeats)
            comp = _ms_per_call(jax.value_and_grad(lambda u, op=op: jnp.sum(op(0.5 * u) ** 2)), 2.0 * v, args.repeats)
            print(f"| {side} x {side} | {name} | {arg:.3f} | {comp:.3f} |")


if __name__ == "__main__":
    main()
