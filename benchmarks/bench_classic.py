"""Classic (label-free) registration on ACDC 112x112 slice pairs: jaxreg.classic against SimpleITK demons.

Same pairs (all 706 by default), same crops, one process; Dice of the propagated moving labels per structure, per
direction, slice region and pathology group, folding %, seconds per pair. The peer is `jaxreg.peers.
multires_demons` (the strongest demons setting measured on these crops), single-threaded per pair; jaxreg.classic
runs batched (vmap) on whatever cores XLA sees: pin the process (`taskset -c 0`) for a one-core comparison.
`--json` writes both summaries (the one writer of that file).

    pip install -e ".[bench]"
    python benchmarks/bench_classic.py --data_dir ../shared/data/acdc/training [--pairs 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from jaxreg import classic, evaluation, peers, report
from jaxreg.data import load_acdc_pairs


def _score(pairs, u, t0, method):
    return evaluation.summarize(pairs, evaluation.pair_table(pairs, u), time.perf_counter() - t0, method)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", default="../shared/data/acdc/training")
    ap.add_argument("--pairs", type=int, default=0, help="random subset size (0: all)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip_peers", action="store_true")
    ap.add_argument("--json", help="write {method: summary} here")
    args = ap.parse_args()
    pairs = load_acdc_pairs(args.data_dir)
    if args.pairs:
        pairs = pairs.subset(np.sort(np.random.default_rng(0).choice(len(pairs), args.pairs, replace=False)))
    n = len(pairs)
    rows = []
    cfg = classic.ClassicConfig()
    bs = args.batch
    pad = (-n) % bs
    fix = np.concatenate([pairs.fixed, pairs.fixed[:pad]])
    mov = np.concatenate([pairs.moving, pairs.moving[:pad]])
    jax.block_until_ready(classic.register_batch(fix[:bs], mov[:bs], cfg))  # compile once for the batch shape
    t0 = time.perf_counter()
    u = np.concatenate([np.asarray(classic.register_batch(fix[s:s + bs], mov[s:s + bs], cfg)[0])
                        for s in range(0, len(fix), bs)])[:n]
    rows.append(("jaxreg.classic (NGF+curv, L-BFGS, 3 levels)", _score(pairs, u, t0, "classic")))
    if not args.skip_peers:
        t0 = time.perf_counter()
        u = peers.demons_batch(pairs.fixed, pairs.moving, threads=1)
        rows.append(("SimpleITK multi-resolution demons (1 thread)", _score(pairs, u, t0, "demons")))
    print(f"{n} ACDC pairs (112x112 crops, both directions, no labels used); jax devices {jax.devices()}")
    print(f"| {'method':46s} | Dice before | Dice after (LV/RV/MYO) | folding % | s/pair |")
    print(f"|{'-' * 48}|-------------|------------------------|-----------|--------|")
    for name, r in rows:
        print(f"| {name:46s} | {100 * r['dice_mean_before']:10.1f}% | {100 * r['dice_mean_after']:5.1f}% "
              f"({100 * r['dice_LV_after']:.1f}/{100 * r['dice_RV_after']:.1f}/{100 * r['dice_MYO_after']:.1f}) "
              f"| {r['folding_percent']:9.4f} | {r['seconds_per_pair']:.4f} |")
    for name, r in rows[1:]:
        print(f"time ratio jaxreg/({name}): {rows[0][1]['seconds_per_pair'] / r['seconds_per_pair']:.3f}")
    for name, r in rows:
        print(f"\n{name}\n{report.format_results(r)}")
    if args.json:
        import json

        from jaxreg.training import workdir

        workdir.write_json(args.json, {r["method"]: report.json_safe(r) for _, r in rows})


if __name__ == "__main__":
    main()
