"""The paper's Table 1: delta, alpha, beta varied one at a time (x100, x10, x0.1, x0.01, x0) around the optimum.

`settings(base)` gives the 16 runs (the optimum + 5 factors x 3 weights; the table's 18 cells share the optimum
row); `table(cells)` the mean +- std per cell over folds and seeds as markdown, with the paper's numbers beside;
`PAPER_TABLE1` holds those (Hering et al. 2019, Table 1, Dice % / folding %). `record` and `markdown` keep every
method run in one workdir side by side (ablation.json, ablation.md), with `agreement_table` for each pair.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxreg.training.config import TrainConfig

TERMS = ("delta", "alpha", "beta")
FACTORS = (("x100", 100.0), ("x10", 10.0), ("opt", 1.0), ("x0.1", 0.1), ("x0.01", 0.01), ("x0", 0.0))
SCHEDULES = {"paper": dict(epochs=40, augment=8), "short": dict(epochs=10, augment=2), "tiny": dict(epochs=1, augment=1)}

# (Dice %, folding %) per (term, factor). The x100 row of the delta column is read off the table's layout as
# printed (cells shifted in the text we have): delta x100 78.2 % / 0.1 %.
PAPER_TABLE1 = {
    ("delta", "x100"): (78.2, 0.1), ("alpha", "x100"): (75.4, 0.0), ("beta", "x100"): (86.0, 0.6),
    ("delta", "x10"): (83.1, 0.7), ("alpha", "x10"): (83.5, 0.2), ("beta", "x10"): (87.2, 0.1),
    ("delta", "opt"): (86.5, 0.0), ("alpha", "opt"): (86.5, 0.0), ("beta", "opt"): (86.5, 0.0),
    ("delta", "x0.1"): (85.9, 0.0), ("alpha", "x0.1"): (87.0, 0.2), ("beta", "x0.1"): (85.3, 0.1),
    ("delta", "x0.01"): (85.5, 0.1), ("alpha", "x0.01"): (87.2, 0.4), ("beta", "x0.01"): (81.6, 0.4),
    ("delta", "x0"): (83.4, 0.1), ("alpha", "x0"): (0.0, 40.6), ("beta", "x0"): (81.9, 0.4),
}


def settings(base: TrainConfig) -> dict[str, TrainConfig]:
    """The 16 settings of Table 1 around `base`: {"opt", "delta_x100", ..., "beta_x0"}."""
    out = {"opt": base}
    for term in TERMS:
        for tag, f in FACTORS:
            if tag != "opt":
                out[f"{term}_{tag}"] = dataclasses.replace(base, **{term: getattr(base, term) * f})
    return out


def cell(name: str, term: str) -> tuple[str, str]:
    """(term, factor tag) of a setting name as a cell of the `term` column ("opt" sits in every column)."""
    return (term, "opt") if name == "opt" else tuple(name.split("_", 1))


def summarize_cells(results: dict[str, list[dict]]) -> dict:
    """{setting: {"dice": mean, "dice_std", "folding", "folding_std", "runs", "seed_std", "objectives"}} over the
    runs (folds x seeds) of each setting (results.json dicts). "seed_std": the Dice std over seeds within a fold,
    averaged over the folds with 2 or more seeds (None when none has): the spread that is seed noise, not fold
    difficulty. "objectives": {"fold<K>_seed<S>": the training objective at the setting's weights on the test
    pairs} for the runs whose record has it (`evaluation.evaluate`'s `objective_weights`)."""
    out = {}
    for name, runs in results.items():
        if not runs:
            continue
        d = np.array([r["dice_mean_after"] for r in runs], float)
        f = np.array([r["folding_percent"] for r in runs], float)
        by_fold = {}
        for r in runs:
            by_fold.setdefault(r.get("fold"), []).append(r["dice_mean_after"])
        spreads = [float(np.std(v)) for v in by_fold.values() if len(v) > 1]
        out[name] = {"dice": float(d.mean()), "dice_std": float(d.std()), "folding": float(f.mean()),
                     "folding_std": float(f.std()), "runs": len(runs),
                     "seed_std": float(np.mean(spreads)) if spreads else None,
                     "objectives": {f"fold{r.get('fold')}_seed{r.get('seed')}": float(r["objective"])
                                    for r in runs if "objective" in r}}
    return out


def objective_ratio(a: dict, b: dict) -> float | None:
    """Geometric mean over the runs (fold, seed) both cells have of a's training objective over b's at the cell's
    weights (`summarize_cells`' "objectives"); < 1: a minimises the objective both were trained on further. None
    without a common run."""
    oa, ob = a.get("objectives", {}), b.get("objectives", {})
    r = [oa[k] / ob[k] for k in oa if k in ob and oa[k] > 0 and ob[k] > 0]
    return float(np.exp(np.mean(np.log(r)))) if r else None


def agreement(a: dict, b: dict) -> dict:
    """Two methods' cells (`summarize_cells`) on the settings both have: {"settings", "dice_diff": {setting: a - b},
    "mean_diff", "mean_abs_diff", "max_abs_diff"} in Dice fractions (issue 21: |a - b| <= 0.01 on average), and
    "objective_ratio": {setting: `objective_ratio(a, b)`}."""
    common = [n for n in a if n in b]
    diff = {n: a[n]["dice"] - b[n]["dice"] for n in common}
    v = np.array(list(diff.values()), float)
    return {"settings": len(common), "dice_diff": diff,
            "objective_ratio": {n: objective_ratio(a[n], b[n]) for n in common},
            "mean_diff": float(v.mean()) if len(v) else None,
            "mean_abs_diff": float(np.abs(v).mean()) if len(v) else None,
            "max_abs_diff": float(np.abs(v).max()) if len(v) else None}


def agreement_table(a_name: str, a: dict, b_name: str, b: dict) -> str:
    """Markdown: per setting both methods' Dice (mean over runs), the difference and each one's seed spread."""
    agree = agreement(a, b)

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    lines = [f"{a_name} against {b_name}: Dice % per setting (mean over folds x seeds), difference, seed std "
             f"(within a fold); objective {a_name} / {b_name}: the training objective at the setting's weights on "
             f"the test pairs, {a_name}'s over {b_name}'s (geometric mean over the runs; < 1: {a_name} minimises it "
             f"further)", "", f"| setting | {a_name} | {b_name} | difference | seed std {a_name} | "
             f"seed std {b_name} | objective {a_name} / {b_name} |", "|---|---|---|---|---|---|---|"]
    ratios = agree["objective_ratio"]
    for n, d in agree["dice_diff"].items():
        ratio = "-" if ratios[n] is None else f"{ratios[n]:.3f}"
        lines.append(f"| {n} | {pct(a[n]['dice'])} | {pct(b[n]['dice'])} | {100 * d:+.1f} | "
                     f"{pct(a[n].get('seed_std'))} | {pct(b[n].get('seed_std'))} | {ratio} |")
    if agree["settings"]:
        lines.append(f"\nOver {agree['settings']} settings: mean difference {100 * agree['mean_diff']:+.2f}, mean "
                     f"|difference| {100 * agree['mean_abs_diff']:.2f}, largest {100 * agree['max_abs_diff']:.2f} "
                     f"Dice points.")
        known = [n for n, r in ratios.items() if r is not None]
        if known:
            lower = [n for n in known if ratios[n] < 1]
            lines.append(f"{a_name} reaches the lower objective at {len(lower)} of {len(known)} settings"
                         + (f"; {b_name} at: {', '.join(n for n in known if n not in lower)}." if len(lower) <
                            len(known) else "."))
    return "\n".join(lines) + "\n"


METHODS = ("hyper", "population", "single")  # the order methods are tabulated and compared in, whichever ran last


def record(old: dict, method: str, meta: dict, cells: dict) -> dict:
    """A workdir's ablation.json after `method` ran: `meta` and `cells` at the top level (this run), every method
    run in the workdir under "methods" (`old`'s, `method`'s replaced; ordered as `METHODS`), the paper's table
    under "paper"."""
    methods = {k: v for k, v in old.get("methods", {}).items() if k != method} | {method: meta | {"runs": cells}}
    order = sorted(methods, key=lambda k: (METHODS.index(k) if k in METHODS else len(METHODS), k))
    return meta | {"runs": cells, "methods": {k: methods[k] for k in order},
                   "paper": {f"{t}_{f}": v for (t, f), v in PAPER_TABLE1.items()}}


def markdown(methods: dict) -> str:
    """ablation.md: per method (`record`'s "methods") its Table 1 (`table`), then every pair of methods side by
    side (`agreement_table`, in `METHODS` order: "hyper against population")."""
    tables = [table(m["runs"], f"method {name}, schedule {m['schedule']}, folds {','.join(map(str, m['folds']))}, "
                    f"{m['seeds']} seed(s), data {m['data']}; paper: Dice % / folding %")
              for name, m in methods.items()]
    names = list(methods)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            tables.append(agreement_table(a, methods[a]["runs"], b, methods[b]["runs"]))
    return "\n".join(tables)


def table(cells: dict, header: str) -> str:
    """Markdown: a row per factor, per weight our Dice and folding (mean +- std over runs) and the paper's."""
    lines = [header, "", "| factor | " + " | ".join(f"{t} Dice % | {t} folding % | paper {t}" for t in TERMS) + " |",
             "|---|" + "---|---|---|" * len(TERMS)]
    for tag, _ in FACTORS:
        row = []
        for term in TERMS:
            r = cells.get("opt" if tag == "opt" else f"{term}_{tag}")
            pd, pf = PAPER_TABLE1[(term, tag)]
            if r:
                row += [f"{100 * r['dice']:.1f} +- {100 * r['dice_std']:.1f}",
                        f"{r['folding']:.3f} +- {r['folding_std']:.3f}"]
            else:
                row += ["-", "-"]
            row.append(f"{pd:.1f} / {pf:.1f}")
        lines.append(f"| {tag} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
