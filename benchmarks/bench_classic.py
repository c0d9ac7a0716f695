"""Classic (label-free) registration on ACDC 112x112 slice pairs: jaxreg.classic against SimpleITK demons.

Same pairs (all 706 by default), same crops, one process; Dice of the propagated moving labels per structure, per
direction, slice region and pathology group, folding %, seconds per pair. The peer is `jaxreg.peers.
multires_demons` (the strongest demons setting measured on these crops), single-threaded per pair; jaxreg.classic
runs batched (vmap) on whatever cores XLA sees: pin the process (`taskset -c 0`) for a one-core comparison.
`--json` writes both summaries (the one writer of that file).

    pip install -e ".[bench]"
    python benchmarks/bench_classic.py --data_dir ../shared/data/acdc/training [--pairs 200] [--json out.json]
        [--classic a0.5_e0.1_it80_l3]     # a setting of jaxreg.cv.classic_grid (default: ClassicConfig())
        [--refine]     # also the shipped network, + `jaxreg register --method refine`'s refinement, + the additive one
    taskset -c 0 python benchmarks/bench_classic.py ...   # one core each: seconds a pair = CPU seconds a pair
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from jaxreg import classic, cv, evaluation, files, peers, report
from jaxreg.data import load_acdc_pairs


def _score(pairs, u, t0, method):
    return evaluation.summarize(pairs, evaluation.pair_table(pairs, u), time.perf_counter() - t0, method)


def _refine_rows(pairs, batch):
    """(name, summary) rows of the shipped network, network + the refinement `jaxreg register --method refine` runs
    (`classic.REFINE_CHOICE` by composition) and network + the additive refinement (`ClassicConfig()`), each timed
    after its compilation."""
    import jaxreg
    from jaxreg.runtime import chunks

    model, chunk = jaxreg.load_model(), chunks.pair_chunk(kind="solver")
    n = len(pairs)
    u_net, t_net = cv.timed_batches(lambda f, m: (model(f, m),), (pairs.fixed, pairs.moving), batch)
    net = evaluation.summarize(pairs, evaluation.pair_table(pairs, u_net), t_net * n, "network")
    rows = [("shipped network (trained on these patients)", net)]
    for name, method, cfg, composed in (
            ("+ refine_batch(REFINE_CHOICE, composed=True): --method refine", "refine", classic.REFINE_CHOICE, True),
            ("+ refine_batch(ClassicConfig()): additive", "refine_additive", classic.ClassicConfig(), False)):
        u_ref, t_ref = cv.timed_batches(lambda f, m, u: classic.refine_batch(f, m, u, cfg, chunk, composed),
                                        (pairs.fixed, pairs.moving, u_net), batch)
        rows.append((f"shipped network {name}", evaluation.summarize(
            pairs, evaluation.pair_table(pairs, u_ref), (t_net + t_ref) * n, method)))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", default="../shared/data/acdc/training")
    ap.add_argument("--pairs", type=int, default=0, help="random subset size (0: all)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip_peers", action="store_true")
    ap.add_argument("--json", help="write {method: summary} here")
    ap.add_argument("--classic", default=None, help="a setting name of jaxreg.cv.classic_grid (default: the "
                    "ClassicConfig() defaults)")
    ap.add_argument("--refine", action="store_true", help="also time the shipped network and its refinements by "
                    "classic.refine_batch (REFINE_CHOICE by composition, what `jaxreg register --method refine` runs, "
                    "and the additive ClassicConfig()); their Dice is on the shipped model's own training patients, "
                    "so only the seconds a pair and the difference between the refinements mean anything")
    args = ap.parse_args()
    grid = cv.classic_grid()
    if args.classic is not None and args.classic not in grid:
        ap.error(f"--classic: unknown setting {args.classic!r}; known: {', '.join(grid)}")
    pairs = load_acdc_pairs(args.data_dir)
    if args.pairs:
        pairs = pairs.subset(np.sort(np.random.default_rng(0).choice(len(pairs), args.pairs, replace=False)))
    n = len(pairs)
    rows = []
    cfg = grid[args.classic] if args.classic else classic.ClassicConfig()
    table, seconds = cv.classic_table(pairs, cfg, args.batch)  # compiled first, timed after
    res = evaluation.summarize(pairs, table, seconds * n, "classic")
    res["classic_config"] = {"name": args.classic or "default", **{k: getattr(cfg, k) for k in
                                                                    ("alpha", "epsilon", "levels", "max_iters")}}
    rows.append((f"jaxreg.classic {args.classic or 'defaults'}", res))
    if not args.skip_peers:
        t0 = time.perf_counter()
        u = peers.demons_batch(pairs.fixed, pairs.moving, threads=1)
        rows.append(("multi-resolution demons", _score(pairs, u, t0, "demons")))
    if args.refine:
        rows.extend(_refine_rows(pairs, args.batch))
    print(f"{n} ACDC pairs (112x112 crops, both directions, no labels used); jax devices {jax.devices()}")
    print(f"| {'method':46s} | Dice before | Dice after (LV/RV/MYO) | folding % | s/pair |")
    print(f"|{'-' * 48}|-------------|------------------------|-----------|--------|")
    for name, r in rows:
        print(f"| {name:46s} | {100 * r['dice_mean_before']:10.1f}% | {100 * r['dice_mean_after']:5.1f}% "
              f"({100 * r['dice_LV_after']:.1f}/{100 * r['dice_RV_after']:.1f}/{100 * r['dice_MYO_after']:.1f}) "
              f"| {r['folding_percent']:9.4f} | {r['seconds_per_pair']:.4f} |")
    for name, r in rows[1:]:
        if r["method"] == "demons":
            print(f"time ratio jaxreg/({name}): {rows[0][1]['seconds_per_pair'] / r['seconds_per_pair']:.3f}")
    for name, r in rows:
        print(f"\n{name}\n{report.format_results(r)}")
    print("\n" + report.comparison_table(dict(rows)))
    if args.json:
        files.write_json(args.json, {r["method"]: r for _, r in rows})


if __name__ == "__main__":
    main()
