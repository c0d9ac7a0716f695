"""Classic (label-free) registration on ACDC 112x112 slice pairs: jaxreg.classic against SimpleITK demons.

Same pairs, same crops, one process; Dice of propagated moving labels (LV, RV, MYO mean), folding %, seconds per
pair. SimpleITK runs single-threaded per pair (as the peers were measured); jaxreg.classic runs batched (vmap) on
whatever cores XLA sees: pin the process (`taskset -c 0`) for a one-core comparison.

    /tmp/benchenv/bin/pip install SimpleITK -e .
    /tmp/benchenv/bin/python benchmarks/bench_classic.py --data_dir ../shared/data/acdc/training [--pairs 200]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from jaxreg import classic, evaluation
from jaxreg.data import load_acdc_pairs


def demons(fixed, moving, iterations=50, sigma=1.5):
    """SimpleITK diffeomorphic demons with histogram matching -> displacement (H, W, 2) in jaxreg's convention."""
    import SimpleITK as sitk

    f = sitk.GetImageFromArray(fixed.astype(np.float32))
    m = sitk.GetImageFromArray(moving.astype(np.float32))
    m = sitk.HistogramMatching(m, f, 256, 7, True)
    flt = sitk.DiffeomorphicDemonsRegistrationFilter()
    flt.SetNumberOfIterations(iterations)
    flt.SetStandardDeviations(sigma)
    field = flt.Execute(f, m)
    # SimpleITK arrays are (row, col) with vectors (x=col, y=row): reorder to array-axis order
    arr = sitk.GetArrayFromImage(field)
    return np.stack([arr[..., 1], arr[..., 0]], -1).astype(np.float32)


def _score(pairs, u, t0, method):
    return evaluation.summarize(pairs, evaluation.pair_table(pairs, u), time.perf_counter() - t0, method)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", default="../shared/data/acdc/training")
    ap.add_argument("--pairs", type=int, default=0, help="random subset size (0: all)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip_peers", action="store_true")
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
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        for iters, sigma in ((100, 1.0), (200, 1.0)):  # ~ the brief's off-the-shelf 81 %, and the best we found
            t0 = time.perf_counter()
            u = np.stack([demons(pairs.fixed[i], pairs.moving[i], iters, sigma) for i in range(n)])
            rows.append((f"SimpleITK demons {iters} it, sigma {sigma} (1 thread)",
                         _score(pairs, u, t0, "demons")))
    print(f"{n} ACDC pairs (112x112 crops, both directions, no labels used); jax devices {jax.devices()}")
    print(f"| {'method':46s} | Dice before | Dice after (LV/RV/MYO) | folding % | s/pair |")
    print(f"|{'-' * 48}|-------------|------------------------|-----------|--------|")
    for name, r in rows:
        print(f"| {name:46s} | {100 * r['dice_mean_before']:10.1f}% | {100 * r['dice_mean_after']:5.1f}% "
              f"({100 * r['dice_LV_after']:.1f}/{100 * r['dice_RV_after']:.1f}/{100 * r['dice_MYO_after']:.1f}) "
              f"| {r['folding_percent']:9.4f} | {r['seconds_per_pair']:.4f} |")
    for name, r in rows[1:]:
        print(f"time ratio jaxreg/({name}): {rows[0][1]['seconds_per_pair'] / r['seconds_per_pair']:.3f}")


if __name__ == "__main__":
    main()
