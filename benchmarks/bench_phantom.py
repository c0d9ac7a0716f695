"""Synthetic phantom throughput: `jaxreg.data.phantom_pairs` end to end (render, motion, acquisition, PairSet).

Pairs per second = pairs returned / wall time, median of --repeats calls after one warm-up call (compile).
"ED->ES" renders each pair once; both directions return two pairs per rendering but add the Newton inverse.

    python benchmarks/bench_phantom.py [--n 2048] [--repeats 5]
"""

from __future__ import annotations

import argparse

import jax

from timing import median_time  # benchmarks/ is on sys.path when run as a script
from jaxreg.data import phantom_pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2048, help="slice pairs per direction per call")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"jax {jax.__version__}, devices {jax.devices()}, n={args.n}, size={args.size}")
    print("| directions | pairs per call | seconds per call | pairs/s |")
    print("|---|---|---|---|")
    for directions in (("ED->ES",), ("ED->ES", "ES->ED")):
        seed = iter(range(1000))
        t = median_time(lambda: phantom_pairs(args.n, seed=next(seed), size=args.size, directions=directions),
                        1, args.repeats)
        pairs = args.n * len(directions)
        print(f"| {' + '.join(directions)} | {pairs} | {t:.3f} | {pairs / t:.0f} |")


if __name__ == "__main__":
    main()
