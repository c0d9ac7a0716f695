"""Dataset summary: counts per fold and group, intensity statistics, and an overview figure (matplotlib)."""

from __future__ import annotations

import collections

import numpy as np

from jaxreg import files
from jaxreg.data.acdc import load_acdc_pairs
from jaxreg.data.pairs import PairSet, kfold_patients
from jaxreg.data.phantom import phantom_pairs


def load(data_dir, seed: int = 0, phantom_n: int = 400) -> PairSet:
    if data_dir:
        return load_acdc_pairs(data_dir)
    return phantom_pairs(phantom_n, seed=seed, directions=("ED->ES", "ES->ED"))


def describe(pairs: PairSet, num_folds: int = 10, seed: int = 0) -> str:
    lines = [f"{len(pairs)} pairs from {len(pairs.patients)} patients; directions "
             f"{dict(collections.Counter(pairs.direction.tolist()))}; groups "
             f"{dict(sorted(collections.Counter(pairs.group.tolist()).items()))}"]
    for folder, why in pairs.skipped.items():
        lines.append(f"SKIPPED {folder}: {why}")
    grp = {p: g for p, g in zip(pairs.patient.tolist(), pairs.group.tolist())}
    folds = kfold_patients(pairs.patients, [grp[p] for p in pairs.patients], num_folds, seed)
    lines.append(f"{'fold':>4} {'patients':>8} {'pairs':>6} {'groups':30s} {'mean':>6} {'std':>6} {'p1':>6} {'p99':>6}")
    for i, f in enumerate(folds):
        sub = pairs.select_patients(f)
        vals = np.concatenate([sub.fixed.ravel(), sub.moving.ravel()])
        groups = ",".join(f"{g}:{n}" for g, n in sorted(collections.Counter(grp[p] for p in f).items()))
        p1, p99 = np.percentile(vals, [1, 99])
        lines.append(f"{i:>4} {len(f):>8} {len(sub):>6} {groups:30s} {vals.mean():6.3f} {vals.std():6.3f} {p1:6.3f} {p99:6.3f}")
    return "\n".join(lines)


def overview_png(pairs: PairSet, path, n: int = 6, title: str = "") -> None:
    """n pairs: moving, fixed, and both with label contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = np.linspace(0, len(pairs) - 1, n).astype(int)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6))
    for j, i in enumerate(idx):
        for r, (img, lab, name) in enumerate([(pairs.moving[i], pairs.moving_labels[i], "moving"),
                                               (pairs.fixed[i], pairs.fixed_labels[i], "fixed")]):
            ax = axes[r, j]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            for lv, col in ((1, "tab:blue"), (2, "tab:green"), (3, "tab:red")):
                if (lab == lv).any():
                    ax.contour(lab == lv, levels=[0.5], colors=col, linewidths=0.7)
            ax.set_title(f"{pairs.patient[i][-7:]} z{pairs.slice_index[i]} {name}\n{pairs.direction[i]}", fontsize=7)
            ax.axis("off")
    fig.suptitle(title or "RV cavity blue, myocardium green, LV cavity red", fontsize=9)
    fig.tight_layout()
    files.save_figure(fig, path, dpi=90)
    plt.close(fig)


def run(data_dir, num_folds: int, seed: int, phantom_n: int, png) -> PairSet:
    pairs = load(data_dir, seed, phantom_n)
    print(describe(pairs, num_folds, seed))
    if png:
        overview_png(pairs, png, title=f"{'ACDC ' + str(data_dir) if data_dir else 'synthetic phantom'}")
        print(f"wrote {png}")
    return pairs
