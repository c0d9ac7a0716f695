"""Choosing a setting by patient-wise cross-validation from per-pair results, for methods without training
(`jaxreg.classic`): every candidate is run once on every pair, then for each fold k the candidate with the best
mean Dice on the OTHER folds' patients is the one fold k's pairs are scored with. The pooled result is an honest
estimate for unseen patients (no pair is scored with a setting chosen on its own patient); the setting chosen on
all patients is the one to ship.

Tables are `evaluation.pair_table`'s `(before (N, 3), after (N, 3), folding (N,))`. Pure numpy.
"""

from __future__ import annotations

import warnings

import numpy as np

from jaxreg.data.pairs import PairSet, kfold_patients


def pair_folds(pairs: PairSet, k: int = 10, seed: int = 0) -> np.ndarray:
    """Fold index `(N,)` of every pair under the patient-wise stratified split `jaxreg.data.split_fold` uses."""
    pats = pairs.patients
    grp = {p: g for p, g in zip(pairs.patient.tolist(), pairs.group.tolist())}
    folds = kfold_patients(pats, [grp[p] for p in pats], k, seed)
    of = {p: i for i, f in enumerate(folds) for p in f}
    return np.array([of[p] for p in pairs.patient.tolist()], np.int64)


def pair_scores(table) -> np.ndarray:
    """Per-pair mean Dice after registration over the structures present `(N,)` (NaN where none is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.asarray(table[1], float), axis=1)


def best(tables: dict, mask: np.ndarray | None = None, max_folding_percent: float | None = None,
         costs: dict | None = None, tolerance: float = 0.0) -> str:
    """The candidate with the highest mean per-pair Dice over the pairs in `mask` (all by default) among those whose
    folding there is below `max_folding_percent` (all of them if none is); ties: the first. With `costs` ({name:
    e.g. seconds a pair}): the cheapest of those within `tolerance` (Dice, 0..1) of that highest mean instead."""
    if mask is not None and not np.any(mask):
        raise ValueError("best: the mask selects no pairs, so there is nothing to choose on")
    means, ok = {}, {}
    for name, table in tables.items():
        s, f = pair_scores(table), np.asarray(table[2], float)
        s, f = (s, f) if mask is None else (s[mask], f[mask])
        means[name] = float(np.nanmean(s)) if np.isfinite(s).any() else -np.inf
        ok[name] = max_folding_percent is None or 100 * float(f.mean()) < max_folding_percent
    pool = [n for n in tables if ok[n]] or list(tables)
    top = max(pool, key=lambda n: (means[n], -list(tables).index(n)))
    if costs is None:
        return top
    near = [n for n in pool if means[n] >= means[top] - tolerance]
    return min(near, key=lambda n: (costs[n], -means[n], list(tables).index(n)))


def nested_choice(tables: dict, folds: np.ndarray, max_folding_percent: float | None = None,
                  costs: dict | None = None, tolerance: float = 0.0) -> tuple[dict[int, str], tuple]:
    """({fold: candidate chosen on the other folds (`best`, with `costs` and `tolerance`)}, the pooled table: each
    pair's row from its fold's choice). Needs pairs of at least 2 folds: with one, there are no other folds."""
    if len(np.unique(folds)) < 2:
        raise ValueError(f"nested_choice: pairs of at least 2 folds are needed, got fold(s) {np.unique(folds).tolist()}")
    names = list(tables)
    chosen = {int(k): best(tables, folds != k, max_folding_percent, costs, tolerance) for k in np.unique(folds)}
    pick = np.array([names.index(chosen[int(k)]) for k in folds])
    pooled = tuple(np.stack([np.asarray(tables[n][j]) for n in names])[pick, np.arange(len(folds))]
                   for j in range(3))
    return chosen, pooled
