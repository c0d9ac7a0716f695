"""Test-time settings of a trained network chosen by patient-wise CV, from the fold models of a CV of it.

A CV (`experiments.cross_validate`, or `experiments.ablation --method hyper`) leaves one trained model per fold in
`root/fold{k}`, each trained on the other folds' patients. Here each finished fold's model scores its own test
pairs under every candidate setting (a weight-conditioned network's loss weights, `select_hyper_weights`; the
instance refinement applied to its field, `select_refinement`); fold k is then scored with the candidate that has
the best mean Dice on the OTHER finished folds' pairs among those folding less than `MAX_FOLDING_PERCENT` there
(`jaxreg.selection`). No pair is scored with a setting chosen on its own patients. The choice is not fully nested:
the other folds' models were trained with fold k's patients (docs/results.md says so beside the numbers).
Candidate tables are cached in `root/fold{k}/<cache>/NAME.npz`, so a rerun (or a CV with more folds finished)
scores only what is new.
"""

from __future__ import annotations

import pathlib

import numpy as np

from jaxreg import classic, conditioning, cv, evaluation, selection
from jaxreg.data.pairs import PairSet
from jaxreg.errors import ConfigError
from jaxreg.runtime import chunks
from jaxreg.training import TrainConfig
from jaxreg.training import workdir as wd

# A candidate that folds more than this (mean % of pixels) on the other folds is not chosen: half of the 0.1 %
# target, since a choice at the edge of the cap on the other folds would put about half the test folds above it.
MAX_FOLDING_PERCENT = 0.05
# Refinements within this much mean Dice (0.1 points) of the best on the other folds count as equal and the
# fastest of them is chosen: on the hyper recipe's folds 0, 7, 8 the composed refinements scored 87.14-87.29 % at
# 0.016-0.242 s a pair, differences below the fold-to-fold and seed spread.
REFINE_TOLERANCE = 0.001


def hyper_weight_grid(train: TrainConfig, alpha_factors=(1.0, 0.3, 0.1, 0.03),
                      beta_factors=(1.0, 3.0, 10.0, 30.0)) -> dict[str, dict]:
    """`select_hyper_weights`' candidates `{name: {delta, alpha, beta}}` in flag units: alpha and beta scaled around
    the recipe's (`train`) by the factors, delta the recipe's (Table 1 on folds 7, 8 moved Dice by <= 0.4 points
    over delta's range). The recipe's own setting ("a1_b1") first, so a tie keeps it."""
    return {f"a{fa:g}_b{fb:g}": {"delta": train.delta, "alpha": train.alpha * fa, "beta": train.beta * fb}
            for fa in alpha_factors for fb in beta_factors}


def refine_grid() -> dict[str, tuple[classic.ClassicConfig, bool]]:
    """`select_refinement`'s candidates `{name: (ClassicConfig, composed)}` (`classic.refine_batch`): the additive
    refinement (`ClassicConfig()`, the CV's `--baselines` refine and the CLI's before the composed one) first, then by
    composition (`classic.refine_composed`) at the finest level with curvature weights 2 .. 0.25 and 20 or 40
    L-BFGS iterations, on two levels, and as a diffeomorphism (4 squarings)."""
    C = classic.ClassicConfig
    out = {"additive_default": (C(), False)}
    for alpha in (2.0, 1.0, 0.5, 0.25):
        out[f"composed_a{alpha:g}_it20"] = (C(alpha=alpha, levels=(1,), max_iters=(20,)), True)
    out["composed_a0.5_it40"] = (C(alpha=0.5, levels=(1,), max_iters=(40,)), True)
    out["composed_a0.5_l2"] = (C(alpha=0.5, levels=(2, 1), max_iters=(20, 20)), True)
    out["composed_a0.25_ss4"] = (C(alpha=0.25, levels=(1,), max_iters=(40,), diffeomorphic=4), True)
    return out


def finished_folds(root, num_folds: int) -> list[int]:
    """The folds k with a finished result in `root/fold{k}` (`cv.finished_result`); ConfigError where there is
    none (or no folder `root`)."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: the CV folder (--workdir) does not exist")
    folds = [k for k in range(num_folds) if cv.finished_result(root / f"fold{k}", num_folds) is not None]
    if not folds:
        raise ConfigError(f"{root}: no finished fold of a {num_folds}-fold CV (fold0 .. fold{num_folds - 1})")
    return folds


def first_fold_experiment(root, num_folds: int, data_dir: str | None = None):
    """(root as a Path, the ExperimentConfig of its first finished fold)."""
    root = pathlib.Path(root)
    return root, cv.experiment_of(root / f"fold{finished_folds(root, num_folds)[0]}", data_dir)


def fold_tables(root, pairs: PairSet, num_folds: int, candidates: dict, score, cache: str,
                data_dir: str | None = None, check=None, progress=print) -> dict:
    """Every candidate's pair table on every finished fold's test pairs, pooled in `pairs`' order.

    `score(fold_dir, exp, test, candidate) -> (table, seconds a pair)` computes one (cached in
    `root/fold{k}/<cache>/NAME.npz`); `check(fold_dir, exp)` may refuse a fold (ConfigError). A finished fold
    with neither a checkpoint nor every candidate's cache (records restored from `docs/` without the model) is
    skipped and named. Returns `{"folds": [k...], "skipped_folds": [k...], "pairs": the pooled PairSet, "fold_of":
    (N,) fold per pooled pair, "tables": {name: table}, "seconds": {name: seconds a pair}, "exp": the first fold's
    ExperimentConfig}`.
    """
    root = pathlib.Path(root)
    names = list(candidates)
    finished = finished_folds(root, num_folds)
    skipped = [k for k in finished if not scorable(root / f"fold{k}", cache, names)]
    for k in skipped:
        progress(f"fold {k}: skipped (a finished result without its checkpoint or every candidate's "
                 f"{root / f'fold{k}' / cache}/NAME.npz)")
    folds = [k for k in finished if k not in skipped]
    if not folds:
        raise ConfigError(f"{root}: no finished fold has its checkpoint or the cached candidate tables")
    exps = {k: cv.experiment_of(root / f"fold{k}", data_dir) for k in folds}
    first = exps[folds[0]]
    for k, exp in exps.items():
        if exp.fold_seed != first.fold_seed:
            raise ConfigError(f"{root / f'fold{k}'}: split seed {exp.fold_seed}, fold {folds[0]} has "
                              f"{first.fold_seed}")
        if check is not None:
            check(root / f"fold{k}", exp)
    fold_all = selection.pair_folds(pairs, num_folds, first.fold_seed)
    index = np.flatnonzero(np.isin(fold_all, folds))
    sub, fold_of = pairs.subset(index), fold_all[index]
    tables = {n: [np.zeros((len(sub), 3), np.float32), np.zeros((len(sub), 3), np.float32),
                  np.zeros(len(sub), np.float32)] for n in names}
    seconds = {n: 0.0 for n in names}
    for k in folds:
        fold_dir = root / f"fold{k}"
        test = cv.check_test_patients(fold_dir, exps[k], pairs)
        rows = np.flatnonzero(fold_of == k)
        if not (np.array_equal(test.patient, sub.patient[rows])
                and np.array_equal(test.slice_index, sub.slice_index[rows])):
            raise ConfigError(f"{fold_dir}: its test pairs are not the split's fold {k} in order")
        for n in names:
            table, sec = cv.cached_table(fold_dir / cache / f"{n}.npz",
                                         lambda c=candidates[n]: score(fold_dir, exps[k], test, c))
            for j in range(3):
                tables[n][j][rows] = table[j]
            seconds[n] += sec * len(rows) / len(sub)
        progress(f"fold {k}: {len(names)} candidates scored on {len(rows)} pairs")
    return {"folds": folds, "skipped_folds": skipped, "pairs": sub, "fold_of": fold_of,
            "tables": {n: tuple(t) for n, t in tables.items()}, "seconds": seconds, "exp": first}


def scorable(fold_dir, cache: str, names) -> bool:
    """Whether a fold's candidates can be scored: its checkpoint is there, or every `fold_dir/<cache>/NAME.npz`."""
    fold_dir = pathlib.Path(fold_dir)
    return wd.has_checkpoint(fold_dir) or all((fold_dir / cache / f"{n}.npz").is_file() for n in names)


def choose(root, scored: dict, method: str, num_folds: int, tolerance: float | None = None, annotate=None) -> dict:
    """The nested choice over `fold_tables`' result: fold k scored with the candidate best on the other folds
    (with `tolerance`: the fastest within it of the best, `selection.best`). `annotate(results) -> dict` adds
    entries to the results before they are written.
    Writes `root/results_{method}.json` and `pairs_{method}.csv` (pooled over the finished folds' pairs); returns
    `{method: results, "first": the first candidate's pooled results, "candidates": {name: pooled results},
    "folds": [k...]}`."""
    if len(scored["folds"]) < 2:  # its tables are cached by now; choosing needs other folds to choose on
        raise ConfigError(f"{root}: choosing on the other folds needs at least 2 scorable finished folds, found fold "
                          f"{scored['folds'][0]} only (its candidate tables are cached in its fold folder)")
    tables, sub, fold_of, seconds = scored["tables"], scored["pairs"], scored["fold_of"], scored["seconds"]
    names = list(tables)
    costs = None if tolerance is None else seconds
    chosen, pooled = selection.nested_choice(tables, fold_of, MAX_FOLDING_PERCENT, costs, tolerance or 0.0)
    out = {"candidates": {n: evaluation.summarize(sub, tables[n], seconds[n] * len(sub), method=n) for n in names},
           "folds": scored["folds"]}
    out["first"] = out["candidates"][names[0]]
    per_fold = {}
    for k in scored["folds"]:
        mask = fold_of == k
        per_fold[str(k)] = evaluation.summarize(sub.subset(np.flatnonzero(mask)), tuple(t[mask] for t in pooled),
                                                0.0)["dice_mean_after"]
    spent = float(sum(seconds[chosen[int(k)]] for k in fold_of))  # each pair at its fold's choice's seconds a pair
    res = evaluation.summarize(sub, pooled, spent, method=method)
    res.update(num_folds=num_folds, fold_seed=scored["exp"].fold_seed, folds=scored["folds"],
               skipped_folds=scored["skipped_folds"], candidates=len(names),
               chosen_per_fold={str(k): v for k, v in chosen.items()}, dice_mean_after_per_fold=per_fold,
               chosen_on_all=selection.best(tables, None, MAX_FOLDING_PERCENT, costs, tolerance or 0.0),
               max_folding_percent=MAX_FOLDING_PERCENT, first_candidate=names[0], tolerance=tolerance)
    res.update(annotate(res) if annotate else {})
    evaluation.write_results(root, res, sub, pooled)
    out[method] = res
    return out


def _conditioned(fold_dir, exp):
    if not exp.train.conditioned:
        raise ConfigError(f"{fold_dir}: not a weight-conditioned network (--config hyper)")


def _without(scored: dict, name: str) -> dict:
    return scored | {"tables": {n: t for n, t in scored["tables"].items() if n != name},
                     "seconds": {n: t for n, t in scored["seconds"].items() if n != name}}


def select_hyper_weights(root, pairs: PairSet, num_folds: int = 10, candidates: dict | None = None,
                         data_dir: str | None = None, progress=print) -> dict:
    """A weight-conditioned network's test-time loss weights chosen by CV (module docstring) among `candidates`
    `{name: {delta, alpha, beta}}` (default `hyper_weight_grid` of the folds' recipe; the first is the reference).
    Cache `root/fold{k}/weights/`; writes `root/results_network_cv_weights.json`. Returns `choose`'s dict with
    `"network_cv_weights"` (plus `chosen_on_all_weights`, `chosen_weights_per_fold`)."""
    centre, model = {}, {}

    def check(fold_dir, exp):
        _conditioned(fold_dir, exp)
        weights = {w: getattr(exp.train, w) for w in conditioning.WEIGHTS}
        if centre and weights != centre:
            raise ConfigError(f"{fold_dir}: recipe weights {weights}, the first fold's {centre}")
        centre.update(weights)

    def score(fold_dir, exp, test, weights):
        if fold_dir not in model:  # one fold's model at a time, loaded on its first uncached candidate
            model.clear()
            model[fold_dir] = wd.load_trained(fold_dir, test.fixed.shape[1:])
        res, table = evaluation.evaluate(*model[fold_dir], test, ratios=conditioning.ratios_of(centre, **weights))
        return table, res["seconds_per_pair"]

    if candidates is None:  # around the recipe of the first finished fold
        candidates = hyper_weight_grid(first_fold_experiment(root, num_folds, data_dir)[1].train)
    scored = fold_tables(root, pairs, num_folds, candidates, score, "weights", data_dir, check, progress)
    return choose(root, scored, "network_cv_weights", num_folds, annotate=lambda res: {
        "chosen_on_all_weights": candidates[res["chosen_on_all"]],
        "chosen_weights_per_fold": {k: candidates[v] for k, v in res["chosen_per_fold"].items()}})


def select_refinement(root, pairs: PairSet, num_folds: int = 10, candidates: dict | None = None,
                      data_dir: str | None = None, progress=print) -> dict:
    """The instance refinement of a network's field chosen by CV (module docstring; the fastest within
    `REFINE_TOLERANCE` of the best) among `candidates` `{name:
    (ClassicConfig, composed)}` (default `refine_grid()`; the first is the reference), each applied to the fold
    model's field (at the recipe's weights for a weight-conditioned network), no labels. Cache
    `root/fold{k}/refine/` (the network alone as `network.npz`); writes `root/results_refine_cv.json`. Seconds: the
    refinement's wall seconds a pair after compilation (pair by pair on a CPU), the network's excluded. Returns
    `choose`'s dict with `"refine_cv"`, and `"network"`: the network alone, pooled over the same pairs."""
    fields = {}

    def score(fold_dir, exp, test, candidate):
        if fold_dir not in fields:  # one fold's fields at a time
            fields.clear()
            fields[fold_dir] = cv.predict_test_pairs(fold_dir, pairs, exp)[1]
        u_net = fields[fold_dir]
        if candidate is None:
            return evaluation.pair_table(test, u_net), 0.0
        cfg, composed = candidate
        chunk = chunks.pair_chunk(kind="solver")
        u, seconds = cv.timed_batches(lambda f, m, v: classic.refine_batch(f, m, v, cfg, chunk, composed),
                                      (test.fixed, test.moving, u_net))
        return evaluation.pair_table(test, u), seconds

    candidates = refine_grid() if candidates is None else candidates
    if "network" in candidates:
        raise ConfigError("a refinement candidate may not be called 'network' (the network alone)")
    scored = fold_tables(root, pairs, num_folds, {"network": None, **candidates}, score, "refine", data_dir, None,
                         progress)
    out = choose(root, _without(scored, "network"), "refine_cv", num_folds, REFINE_TOLERANCE)
    out["network"] = evaluation.summarize(scored["pairs"], scored["tables"]["network"], 0.0)
    return out
