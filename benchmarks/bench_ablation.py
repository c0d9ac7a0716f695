"""Population training against sequential single runs: settings x steps per second, on whatever device JAX has.

A population of P members (Table 1's settings: one compiled step, weights as data, one shared batch and
augmentation a step) against P single runs one after another (each the same compiled single-run scan). Median
of --repeats chunks of --steps steps after one warm-up chunk (compilation excluded); batch 30 x 112 x 112, the
paper's network. Then the weight-conditioned (hyper) network's step (`--config hyper`: FiLM layers, per-sample
weights) against the single run's: one hyper training answers all 16 settings.

    python benchmarks/bench_ablation.py [--sizes 1,4,16] [--steps 4] [--repeats 3] [--member_chunk N] [--nohyper]
        [--glibc_malloc_defaults] [--jaxlib_convolutions]
"""

from __future__ import annotations

import argparse
import dataclasses
import resource

import jax
import jax.numpy as jnp
import numpy as np

from timing import add_runtime_flags, apply_runtime_flags, median_time  # benchmarks/ on sys.path
from jaxreg import ablation
from jaxreg import training as train
from jaxreg.data import phantom_pairs
from jaxreg.training import step as step_lib


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,4,16")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=30)
    ap.add_argument("--member_chunk", type=int, default=None, help="members vmapped together (default: 1 on CPU, "
                    "all on an accelerator)")
    ap.add_argument("--nohyper", dest="hyper", action="store_false", help="skip the hyper network's step")
    add_runtime_flags(ap)
    args = ap.parse_args()
    eigen = apply_runtime_flags(args)
    cfg = train.TrainConfig(batch_size=args.batch)
    ps = phantom_pairs(64, seed=0)
    settings = list(ablation.settings(cfg).values())
    sizes = [int(s) for s in args.sizes.split(",")]
    T = args.steps
    rng = np.random.default_rng(0)
    index = jnp.asarray(rng.integers(0, len(ps), (T, args.batch)), jnp.int32)
    deform, valid = jnp.ones(T, bool), jnp.ones(T, bool)
    keys = jax.random.split(jax.random.key(0), T)
    tr = train.Trainer(cfg, (112, 112), member_chunk=args.member_chunk)
    data = tr.upload(ps.fixed, ps.moving, ps.fixed_labels.astype(np.int32), ps.moving_labels.astype(np.int32))
    box = {"state": tr.init_state()}
    w1 = train.loss_weights(cfg)

    def single():
        box["state"], m = tr.run_steps(box["state"], data, index, deform, keys, valid, w1)
        jax.block_until_ready(m)

    single()  # compiles; warm-up
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t_single = median_time(single, 0, args.repeats) / T
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    n = args.repeats * T
    dev = jax.devices()[0]
    print(f"device {dev.platform} ({dev.device_kind}) x {len(jax.devices())}; Eigen convolutions: {eigen}; "
          f"member_chunk {tr.member_chunk if tr.member_chunk < 2**30 else 'all'}; batch {args.batch} x 112 x 112")
    kernel_ms, faults = (r1.ru_stime - r0.ru_stime) / n * 1e3, (r1.ru_minflt - r0.ru_minflt) / n
    print(f"single run: {t_single * 1e3:.0f} ms/step; a step's kernel CPU time {kernel_ms:.0f} ms, minor page faults "
          f"{faults:.0f} (malloc: "
          f"{'glibc defaults' if args.glibc_malloc_defaults else 'jaxreg.runtime.malloc.keep_freed_memory'})")
    print("| members P | population s/step | per member-step s | vs single | settings x steps /s | "
          "sequential singles settings x steps /s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for P in sizes:
        members = [dataclasses.replace(settings[k % len(settings)], seed=k) for k in range(P)]
        pop = {"s": step_lib.stack([tr.init_state(m.seed) for m in members]), "a": jnp.ones(P, bool)}
        weights = step_lib.stack([train.loss_weights(m) for m in members])

        def population():
            pop["s"], pop["a"], m = tr.population_run_steps(pop["s"], pop["a"], data, index, deform, keys, valid,
                                                            weights)
            jax.block_until_ready(m)

        t = median_time(population, 1, args.repeats) / T
        print(f"| {P} | {t:.3f} | {t / P:.3f} | {t / P / t_single:.2f}x | {P / t:.2f} | {1 / t_single:.2f} | "
              f"{t_single * P / t:.2f}x |")
    if args.hyper:
        hcfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, condition_features=64))
        htr = train.Trainer(hcfg, (112, 112))
        hbox = {"state": htr.init_state()}

        def hyper():
            hbox["state"], m = htr.run_steps(hbox["state"], data, index, deform, keys, valid, w1)
            jax.block_until_ready(m)

        t_hyper = median_time(hyper, 1, args.repeats) / T
        print(f"hyper network (condition_features 64): {t_hyper * 1e3:.0f} ms/step, {t_hyper / t_single:.2f}x the "
              f"single run's step; the 16 settings of Table 1 from one training: {16 * t_single / t_hyper:.1f}x "
              "the settings x steps per second of sequential single runs (same steps per training)")


if __name__ == "__main__":
    main()
