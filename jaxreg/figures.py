"""The paper's figures from measured results: Fig. 3 (Dice box plots) and Fig. 4 (example pairs with deformed grids)."""

from __future__ import annotations

import numpy as np

from jaxreg import files


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def hardest_per_patient(scores, patients, k: int) -> np.ndarray:
    """Indices of the k lowest-scoring pairs, at most one per patient (Fig. 4's examples): scores `(N,)`, patients `(N,)`."""
    scores = np.asarray(scores, float)
    order = np.argsort(np.where(np.isfinite(scores), scores, np.inf), kind="stable")
    chosen, seen = [], set()
    for i in order:
        if patients[i] not in seen:
            seen.add(patients[i])
            chosen.append(int(i))
            if len(chosen) == k:
                break
    return np.asarray(chosen, int)


def dice_boxplot(per_method: dict, path, title: str = "") -> None:
    """Fig. 3: per_method maps a name (e.g. "before", "classic", "network") to Dice `(N, 3)` (LV, RV, MYO)."""
    plt = _plt()
    names = list(per_method)
    groups = [("mean", None), ("LV cavity", 0), ("RV cavity", 1), ("myocardium", 2)]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    colors = ["#bbbbbb", "#6baed6", "#fd8d3c", "#74c476", "#9e9ac8"]
    pos, ticks = 0, []
    for gname, j in groups:
        start = pos
        for k, nm in enumerate(names):
            d = np.asarray(per_method[nm], float)
            vals = np.nanmean(d, 1) if j is None else d[:, j]
            vals = vals[np.isfinite(vals)]
            bp = ax.boxplot(vals, positions=[pos], widths=0.7, patch_artist=True, showfliers=False)
            bp["boxes"][0].set_facecolor(colors[k % len(colors)])
            pos += 1
        ticks.append(((start + pos - 1) / 2, gname))
        pos += 1
    ax.set_xticks([t for t, _ in ticks], [g for _, g in ticks])
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k % len(colors)]) for k in range(len(names))]
    ax.legend(handles, names, loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    files.save_figure(fig, path, dpi=110)
    plt.close(fig)


def example_pairs(fixed, moving, fields: dict, path, grid_step: int = 8) -> None:
    """Fig. 4: rows of M, F, |F-M|, then |F - M(y)| with the deformed grid for each named field `(N, H, W, 2)`."""
    from jaxreg import warp

    plt = _plt()
    n = len(fixed)
    cols = 3 + len(fields)
    fig, axes = plt.subplots(n, cols, figsize=(2.1 * cols, 2.1 * n), squeeze=False)
    for i in range(n):
        f, m = fixed[i], moving[i]
        panels = [(m, "M", "gray"), (f, "F", "gray"), (np.abs(f - m), "|F-M|", "gray_r")]
        for name, u in fields.items():
            w = np.asarray(warp.warp(m, u[i]))
            panels.append((np.abs(f - w), f"|F-M(y)| {name}", "gray_r"))
        for j, (img, title, cmap) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1 if cmap == "gray" else 0.6)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
            if j >= 3:
                u = np.asarray(list(fields.values())[j - 3][i])
                h, wd = u.shape[:2]
                ys, xs = np.mgrid[0:h, 0:wd].astype(float)
                gy, gx = ys + u[..., 0], xs + u[..., 1]
                for r in range(0, h, grid_step):
                    ax.plot(gx[r], gy[r], color="tab:red", lw=0.4)
                for c in range(0, wd, grid_step):
                    ax.plot(gx[:, c], gy[:, c], color="tab:red", lw=0.4)
    fig.tight_layout()
    files.save_figure(fig, path, dpi=100)
    plt.close(fig)


def ablation_plot(methods: dict, path, title: str = "", paper: dict | None = None):
    """Table 1 as a figure: Dice and folding against the factor, one panel per weight, a line per method;
    `methods` is `{label: cells}` with cells as `jaxreg.ablation.summarize_cells` gives them, `paper` as
    `jaxreg.ablation.PAPER_TABLE1`."""
    from jaxreg.ablation import FACTORS, TERMS

    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True)
    xs = np.arange(len(FACTORS))
    for j, term in enumerate(TERMS):
        names = ["opt" if tag == "opt" else f"{term}_{tag}" for tag, _ in FACTORS]
        for row, key, scale in ((0, "dice", 100), (1, "folding", 1)):
            ax = axes[row, j]
            for k, (label, cells) in enumerate(methods.items()):
                ys = [scale * cells[n][key] if n in cells else np.nan for n in names]
                es = [scale * cells[n][key + "_std"] if n in cells else np.nan for n in names]
                ax.errorbar(xs + 0.08 * (k - (len(methods) - 1) / 2), ys, yerr=es, marker="o", capsize=3,
                            label=label)
            if paper:
                ax.plot(xs, [paper[(term, tag)][row] for tag, _ in FACTORS], "s--", color="grey", label="paper")
            ax.set_ylabel("Dice %" if row == 0 else "folding %")
            if row == 0:
                ax.set_title(term)
            ax.set_xticks(xs, [tag for tag, _ in FACTORS])
            ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    files.save_figure(fig, path, dpi=110)
    plt.close(fig)
