"""jaxreg.selection: choosing a setting on the other folds' patients, against a naive loop."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxreg import selection
from jaxreg.data import phantom_pairs, split_fold


def _table(rng, n):
    after = rng.uniform(0.5, 1.0, (n, 3))
    after[rng.uniform(size=(n, 3)) < 0.1] = np.nan  # absent structures
    return rng.uniform(0, 1, (n, 3)), after, rng.uniform(0, 0.01, n)


def test_pair_folds_match_split_fold():
    pairs = phantom_pairs(40, seed=0, size=32, directions=("ED->ES", "ES->ED"))
    folds = selection.pair_folds(pairs, k=5, seed=3)
    for k in range(5):
        _, test = split_fold(pairs, k, 5, 3)
        assert sorted(set(np.asarray(pairs.patient)[folds == k].tolist())) == sorted(test.patients)


@given(st.integers(0, 2**31 - 1), st.integers(2, 5))
def test_nested_choice_against_a_naive_loop(seed, n_cand):
    rng = np.random.default_rng(seed)
    n, k = 60, 4
    folds = rng.integers(0, k, n)
    tables = {f"c{i}": _table(rng, n) for i in range(n_cand)}
    chosen, pooled = selection.nested_choice(tables, folds)
    for fold in np.unique(folds):
        train = folds != fold
        means = []
        for name, t in tables.items():
            vals = [np.nanmean(row) for row in t[1][train] if np.isfinite(row).any()]
            means.append(sum(vals) / len(vals))
        want = list(tables)[int(np.argmax(means))]
        assert chosen[int(fold)] == want
        for i in np.flatnonzero(folds == fold):
            for j in range(3):
                np.testing.assert_array_equal(pooled[j][i], tables[want][j][i])


def test_a_setting_that_wins_only_on_its_own_fold_is_not_chosen_for_it():
    rng = np.random.default_rng(0)
    n = 40
    folds = np.repeat(np.arange(4), 10)
    good, lucky = _table(rng, n), _table(rng, n)
    lucky[1][:] = good[1] - 0.05
    lucky[1][folds == 2] = 1.0  # perfect on fold 2 only
    chosen, pooled = selection.nested_choice({"good": good, "lucky": lucky}, folds)
    assert chosen[2] == "good" and chosen[0] == "lucky"  # fold 0's choice sees fold 2's luck
    np.testing.assert_array_equal(pooled[1][folds == 2], good[1][folds == 2])
    assert selection.best({"good": good, "lucky": lucky}) == "lucky"
    with pytest.raises(ValueError):
        selection.best({})
    # one fold has no other folds to choose on: refused, not answered with an arbitrary (the cheapest) candidate
    with pytest.raises(ValueError, match="at least 2 folds"):
        selection.nested_choice({"good": good, "lucky": lucky}, np.zeros(n, int))
    with pytest.raises(ValueError, match="selects no pairs"):
        selection.best({"good": good, "lucky": lucky}, folds > 3, costs={"good": 1.0, "lucky": 2.0}, tolerance=0.1)


def test_fold_choice_refuses_a_single_fold():
    from jaxreg import fold_choice
    from jaxreg.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 2 scorable finished folds, found fold 5 only"):
        fold_choice.choose("runs/x", {"folds": [5]}, "refine_cv", 10)


def test_a_setting_that_folds_too_much_is_not_chosen():
    rng = np.random.default_rng(1)
    safe, folding = _table(rng, 30), _table(rng, 30)
    folding[1][:] = np.nan_to_num(safe[1], nan=0.7) + 0.1
    safe[2][:] = 0.0005  # 0.05 % of pixels
    folding[2][:] = 0.005  # 0.5 %
    assert selection.best({"safe": safe, "folding": folding}) == "folding"
    assert selection.best({"safe": safe, "folding": folding}, max_folding_percent=0.1) == "safe"
    # none below the limit: the best Dice regardless
    assert selection.best({"folding": folding}, max_folding_percent=0.1) == "folding"


def test_select_classic_scores_each_fold_with_the_other_folds_choice_and_resumes(tmp_path, monkeypatch):
    from jaxreg import classic, cv
    from jaxreg.errors import ConfigError

    pairs = phantom_pairs(40, seed=0, size=32, directions=("ED->ES", "ES->ED"))
    cands = {"stiff": classic.ClassicConfig(alpha=1e4, max_iters=(3, 2, 2)),
             "soft": classic.ClassicConfig(alpha=1.0, max_iters=(3, 2, 2))}
    out = cv.select_classic(pairs, tmp_path, cands, num_folds=5, progress=lambda *_: None)
    res = out["classic_cv"]
    assert set(res["chosen_per_fold"].values()) <= set(cands) and res["chosen_on_all"] in cands
    # the pooled Dice is the per-fold choices' Dice on each fold's own pairs
    folds = selection.pair_folds(pairs, 5, 0)
    tables = {n: tuple(np.load(tmp_path / "candidates" / f"{n}.npz")[k] for k in ("before", "after", "folding"))
              for n in cands}
    rows = np.concatenate([tables[res["chosen_per_fold"][str(k)]][1][folds == k] for k in range(5)])
    assert res["dice_mean_after"] == pytest.approx(np.nanmean(np.nanmean(rows, 1)), abs=1e-6)
    assert (tmp_path / "results_classic_cv.json").is_file() and (tmp_path / "pairs_classic_cv.csv").is_file()
    assert out["candidates"]["soft"]["dice_mean_after"] > out["candidates"]["stiff"]["dice_mean_after"]

    def no_rerun(*a, **k):
        raise AssertionError("a cached candidate ran again")

    monkeypatch.setattr(cv, "classic_table", no_rerun)
    again = cv.select_classic(pairs, tmp_path, cands, num_folds=5, progress=lambda *_: None)
    assert again["classic_cv"]["dice_mean_after"] == res["dice_mean_after"]
    with pytest.raises(ConfigError, match="unknown peer"):
        cv.select_classic(pairs, tmp_path, cands, num_folds=5, peers=("elastix",), progress=lambda *_: None)


@given(st.integers(0, 2**31 - 1), st.floats(0.0, 0.2))
def test_with_costs_the_cheapest_within_tolerance_of_the_best_is_chosen(seed, tol):
    rng = np.random.default_rng(seed)
    tables = {f"c{i}": _table(rng, 30) for i in range(5)}
    costs = {n: float(c) for n, c in zip(tables, rng.uniform(0, 1, 5))}
    means = {n: np.nanmean([np.nanmean(r) for r in t[1] if np.isfinite(r).any()]) for n, t in tables.items()}
    top = max(means.values())
    want = min((n for n in tables if means[n] >= top - tol), key=lambda n: costs[n])  # naive
    assert selection.best(tables, costs=costs, tolerance=tol) == want
    assert selection.best(tables, costs=costs, tolerance=0.0) == max(means, key=means.get)
    assert selection.best(tables, costs=costs, tolerance=1.0) == min(costs, key=costs.get)
