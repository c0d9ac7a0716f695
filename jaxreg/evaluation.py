"""Scoring displacements: predict with a trained network, per-pair Dice and folding, summaries, result files.

`write_results` is the ONE writer of a workdir's `results.json` / `results_{method}.json` and `pairs_{method}.csv`.
Summary keys: `dice_{LV,RV,MYO,mean}_{before,after}`, subgroup means `dice_mean_{before,after}_{key}` for the
direction (`ed_to_es`, `es_to_ed`), slice region (`base`, `mid`, `apex`: `PairSet.slice_region`) and pathology group
(`group_dcm`, ...), `folding_percent[_{key}]`, `pairs_with_folding`, `seconds_per_pair`, `pairs_per_second`;
the runs `jaxreg.cv` trains add `objective` and `objective_{ngf,curvature,label,dice_loss}` (`evaluate(...,
objective_weights=...)`; `dice_loss` is 0 unless the recipe's `label_dice` > 0).
"""

from __future__ import annotations

import math
import pathlib
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import files, metrics, objective, warp
from jaxreg.data.pairs import PairSet
from jaxreg.training.step import NUM_CLASSES, Trainer

STRUCTURES = ("LV", "RV", "MYO")  # label 3, 1, 2


def predict(trainer: Trainer, params, fixed: np.ndarray, moving: np.ndarray, batch_size: int = 64,
            ratios=None) -> np.ndarray:
    """Finest-level displacements `(N, *S, nd)` pixels for arrays `(N, *S)`, batched (padded to a fixed shape).

    `ratios` `(3,)`: a weight-conditioned network's setting as ratios to its recipe's (`Trainer.fields`)."""
    bs = min(batch_size, max(len(fixed), 1))
    bs = int(math.ceil(bs / trainer.num_devices) * trainer.num_devices)
    out = []
    for (f, m), valid in _padded_batches((fixed, moving), bs):
        f, m = trainer.shard_batch(f, m)
        out.append(np.asarray(trainer.eval_fields(params, f, m, ratios))[:valid])
    return np.concatenate(out) if out else np.zeros((0,) + fixed.shape[1:] + (fixed.ndim - 1,), np.float32)


def _padded_batches(arrays, bs: int):
    """Yields (the arrays' next `bs` rows, zero-padded to `bs`, the number of real rows): one program shape."""
    for s in range(0, len(arrays[0]), bs):
        chunk = [a[s:s + bs] for a in arrays]
        pad = bs - len(chunk[0])
        if pad:
            chunk = [np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) for a in chunk]
        yield chunk, bs - pad


@jax.jit
def pair_metrics(fixed_labels, moving_labels, u):
    """One pair: (Dice before `(3,)`, Dice after `(3,)` for LV, RV, MYO; folding fraction) for int labels `(*S)`
    and u `(*S, nd)` pixels (the moving labels warped with the soft one-hot + argmax of `warp.warp_labels`)."""
    warped = jnp.argmax(warp.warp_labels(moving_labels, u, NUM_CLASSES), axis=-1)
    return (metrics.dice(fixed_labels, moving_labels, (3, 1, 2)), metrics.dice(fixed_labels, warped, (3, 1, 2)),
            metrics.folding_fraction(u))


def pair_table(pairs: PairSet, u) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: Dice before `(N, 3)`, after `(N, 3)` (LV, RV, MYO; NaN where a structure is absent), folding `(N,)`."""
    fl, ml = pairs.fixed_labels.astype(np.int32), pairs.moving_labels.astype(np.int32)
    return tuple(np.asarray(a) for a in jax.vmap(pair_metrics)(fl, ml, jnp.asarray(u)))


def _nanmean(x, axis=None):
    with warnings.catch_warnings():  # an empty or all-NaN selection is NaN, said once in the result, not warned
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def summarize(pairs: PairSet, table, seconds: float, method: str = "network") -> dict:
    """The summary dict of `pair_table(pairs, u)` (see the module docstring for its keys)."""
    before, after, fold = table
    res = {"method": method, "pairs": len(pairs), "patients": len(pairs.patients)}
    for tag, d in (("before", before), ("after", after)):
        for j, nm in enumerate(STRUCTURES):
            res[f"dice_{nm}_{tag}"] = float(_nanmean(d[:, j]))
        res[f"dice_mean_{tag}"] = float(_nanmean(_nanmean(d, axis=1)))
    directions = [d.lower().replace("->", "_to_") for d in np.asarray(pairs.direction).tolist()]
    pathology = ["group_" + str(g).lower() for g in np.asarray(pairs.group).tolist()]
    for labels in (np.array(directions), pairs.slice_region(), np.array(pathology)):
        for key in sorted(set(labels.tolist())):
            sel = labels == key
            res[f"dice_mean_before_{key}"] = float(_nanmean(_nanmean(before[sel], axis=1)))
            res[f"dice_mean_after_{key}"] = float(_nanmean(_nanmean(after[sel], axis=1)))
            res[f"folding_percent_{key}"] = float(100 * fold[sel].mean())
    res["folding_percent"] = float(100 * fold.mean()) if len(fold) else float("nan")
    res["pairs_with_folding"] = int((fold > 0).sum())
    res["seconds_per_pair"] = seconds / max(len(pairs), 1)
    res["pairs_per_second"] = len(pairs) / seconds if seconds > 0 else None
    if pairs.skipped:
        res["skipped_patients"] = dict(pairs.skipped)
    return res


def objective_terms(trainer: Trainer, params, pairs: PairSet, batch_size: int = 64, ratios=None) -> dict:
    """The training objective's unweighted terms per pair `{ngf, curvature, label, dice_loss: (N,)}` on `pairs` as
    they are (no augmentation), summed over the levels (`Trainer.terms`; `ratios` as in `predict`), batched and
    padded."""
    bs = min(batch_size, max(len(pairs), 1))
    onehot = lambda x: jax.nn.one_hot(x.astype(np.int32), NUM_CLASSES, dtype=jnp.float32)  # noqa: E731
    out = []
    for (f, m, fl, ml), valid in _padded_batches((pairs.fixed, pairs.moving, pairs.fixed_labels,
                                                  pairs.moving_labels), bs):
        t = trainer.eval_terms(params, jnp.asarray(f, jnp.float32), jnp.asarray(m, jnp.float32), onehot(fl),
                               onehot(ml), ratios)
        out.append({k: np.asarray(v)[:valid] for k, v in t.items()})
    return {k: np.concatenate([o[k] for o in out]) if out else np.zeros((0,), np.float32) for k in objective.TERMS}


def objective_weights(cfg) -> dict:
    """A recipe's (`TrainConfig`'s) loss weights in flag units, as `objective_summary` and `evaluate` take them."""
    return {k: getattr(cfg, k) for k in ("delta", "alpha", "beta", "curvature_scale", "label_dice")}


def objective_summary(terms: dict, delta: float, alpha: float, beta: float, curvature_scale: float,
                      label_dice: float = 0.0) -> dict:
    """`objective`: the mean over pairs of delta * ngf + alpha * curvature_scale * curvature + beta * (label +
    label_dice * dice_loss) (`objective.combine`) for `objective_terms`' per-pair terms; `objective_<term>`: the
    unweighted terms' means."""
    w = objective.weights(delta, alpha, beta, curvature_scale, label_dice)
    res = {"objective": float(np.mean(np.asarray(objective.combine(terms, w))))}
    res.update({f"objective_{k}": float(np.mean(v)) for k, v in terms.items()})
    return res


def evaluate(trainer: Trainer, params, pairs: PairSet, batch_size: int = 64, method: str = "network", ratios=None,
             objective_weights: dict | None = None):
    """(summary, table) of the network on `pairs` (at `ratios`, see `predict`); the timing excludes compilation
    (one warm-up batch first). With `objective_weights` (`objective_weights(cfg)`: flag units) the summary also
    holds the training objective at those weights on the pairs (`objective_summary`; the network at `ratios`)."""
    predict(trainer, params, pairs.fixed[:batch_size], pairs.moving[:batch_size], batch_size, ratios)  # compile
    t0 = time.perf_counter()
    u = predict(trainer, params, pairs.fixed, pairs.moving, batch_size, ratios)
    seconds = time.perf_counter() - t0
    table = pair_table(pairs, u)
    res = summarize(pairs, table, seconds, method)
    if objective_weights is not None:
        terms = objective_terms(trainer, params, pairs, batch_size, ratios)
        res.update(objective_summary(terms, **objective_weights))
    return res, table


def results_path(workdir, method: str = "network") -> pathlib.Path:
    return pathlib.Path(workdir) / ("results.json" if method == "network" else f"results_{method}.json")


def write_results(workdir, res: dict, pairs: PairSet | None = None, table=None) -> pathlib.Path:
    """Writes `results[_{method}].json` (and, with pairs + table, `pairs_{method}.csv`) into workdir; returns the
    JSON's path. Each file through a temporary name and a rename: never half-written."""
    import json
    import os

    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    method = res.get("method", "network")
    if pairs is not None and table is not None:
        before, after, fold = table
        lines = ["patient,group,slice,direction," + ",".join(f"dice_{n}_before" for n in STRUCTURES) + ","
                 + ",".join(f"dice_{n}_after" for n in STRUCTURES) + ",folding_percent"]
        for i in range(len(pairs)):
            lines.append(f"{pairs.patient[i]},{pairs.group[i]},{pairs.slice_index[i]},{pairs.direction[i]},"
                         + ",".join(f"{v:.4f}" for v in before[i]) + "," + ",".join(f"{v:.4f}" for v in after[i])
                         + f",{100 * fold[i]:.4f}")
        files.write_text(workdir / f"pairs_{method}.csv", "\n".join(lines) + "\n")
    return files.write_json(results_path(workdir, method), res)
