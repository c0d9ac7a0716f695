"""One experiment = data + fold + TrainConfig: load, split patient-wise, train (resumable), evaluate, aggregate folds."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import time

import numpy as np

from jaxreg import classic
from jaxreg import train as train_lib
from jaxreg.data import load_acdc_pairs, phantom_pairs, split_fold
from jaxreg.data.pairs import PairSet


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    train: train_lib.TrainConfig = train_lib.TrainConfig()
    num_folds: int = 10
    fold: int = 0
    data_dir: str | None = None  # None: the synthetic phantom
    phantom_slices: int = 320  # phantom slice pairs per direction
    image_size: int = 112
    crop_on: str = "moving_labels"
    pixel_mm: float | None = None
    fold_seed: int = 0


def load_pairs(exp: ExperimentConfig) -> PairSet:
    if exp.data_dir:
        return load_acdc_pairs(exp.data_dir, size=exp.image_size, crop_on=exp.crop_on, pixel_mm=exp.pixel_mm)
    return phantom_pairs(exp.phantom_slices, seed=exp.fold_seed, size=exp.image_size, directions=("ED->ES", "ES->ED"))


def run_fold(exp: ExperimentConfig, workdir, pairs: PairSet | None = None, progress: bool = True) -> dict:
    """Trains fold `exp.fold` (resuming from `workdir`), evaluates its test patients; returns results.json's dict."""
    workdir = pathlib.Path(workdir)
    pairs = load_pairs(exp) if pairs is None else pairs
    if exp.num_folds > 1:
        train_pairs, test_pairs = split_fold(pairs, exp.fold, exp.num_folds, exp.fold_seed)
    else:  # train on everything (the shipped model); evaluate on the training pairs
        train_pairs, test_pairs = pairs, pairs
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "experiment.json").write_text(json.dumps(
        {k: v for k, v in dataclasses.asdict(exp).items() if k != "train"}
        | {"train_patients": train_pairs.patients, "test_patients": test_pairs.patients}, indent=2))
    trainer, state = train_lib.train(exp.train, train_pairs, workdir, progress=progress)
    res = train_lib.evaluate(trainer, state["params"], test_pairs, workdir)
    res.update(fold=exp.fold, num_folds=exp.num_folds, train_pairs=len(train_pairs),
               data=exp.data_dir or "phantom")
    (workdir / "results.json").write_text(json.dumps(res, indent=2))
    return res


def finished_result(workdir, num_folds: int) -> dict | None:
    """The fold result in `workdir/results.json` if it is one of a `num_folds` CV (not an --all_pairs evaluation)."""
    path = pathlib.Path(workdir) / "results.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    return res if res.get("num_folds") == num_folds and not res.get("all_pairs") else None


def predict_test_pairs(workdir, pairs: PairSet) -> tuple[PairSet, np.ndarray]:
    """A fold's test pairs (`workdir/experiment.json`) and its network's displacements on them `(N, *S, nd)` pixels."""
    workdir = pathlib.Path(workdir)
    meta = json.loads((workdir / "experiment.json").read_text())
    test = pairs.select_patients(meta["test_patients"])
    trainer, params = train_lib.load_trained(workdir, test.fixed.shape[1:])
    return test, train_lib.predict(trainer, params, test.fixed, test.moving)


BASELINES = ("classic", "refine")  # methods scored beside the network on a fold's test pairs (no labels used)


def evaluate_baselines(workdir, pairs: PairSet, u_net, meta: dict | None = None,
                       cfg: classic.ClassicConfig = classic.ClassicConfig()) -> dict:
    """`jaxreg.classic` alone and instance refinement of the network's field, on a fold's test pairs.

    u_net: the network's displacements `(N, *S, nd)` pixels for `pairs`. Returns `{method: (results, u)}` for
    `BASELINES`; writes `results_{method}.json` (with `meta`, e.g. the fold) and `pairs_{method}.csv` into workdir.
    Times include compilation (one batched call per method).
    """
    workdir = pathlib.Path(workdir)
    runs = {"classic": lambda: classic.register_batch(pairs.fixed, pairs.moving, cfg)[0],
            "refine": lambda: classic.refine_batch(pairs.fixed, pairs.moving, u_net, cfg)[0]}
    out = {}
    for method in BASELINES:
        t0 = time.perf_counter()
        u = np.asarray(runs[method]())
        res = train_lib.summarize(pairs, u, time.perf_counter() - t0, workdir, method=method)
        res.update(meta or {}, seconds_include_compile=True, classic_config=dataclasses.asdict(cfg))
        (workdir / f"results_{method}.json").write_text(json.dumps(res, indent=2))
        out[method] = (res, u)
    return out


def baseline_result(workdir, method: str, network_result: dict) -> dict | None:
    """`workdir/results_{method}.json` if it scores the same test pairs as the fold's network result, else None."""
    path = pathlib.Path(workdir) / f"results_{method}.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    return res if res.get("pairs") == network_result.get("pairs") and res.get("method") == method else None


def fold_status(workdir, num_folds: int) -> str:
    """One line on a fold's workdir without loading data or JAX state: finished (its Dice), at epoch k, or not started.

    Reads `finished_result`, else `config.json` and `metrics.jsonl` (the time left: the median of the last five
    epochs' seconds).
    """
    workdir = pathlib.Path(workdir)
    res = finished_result(workdir, num_folds)
    if res is not None:
        return (f"finished: Dice {100 * res['dice_mean_after']:.1f}% (before {100 * res['dice_mean_before']:.1f}%), "
                f"folding {res['folding_percent']:.3f}%")
    cfg_path, log_path = workdir / "config.json", workdir / "metrics.jsonl"
    if not cfg_path.is_file():
        return "not started"
    epochs = json.loads(cfg_path.read_text()).get("epochs", "?")
    recs = train_lib.read_metrics(log_path)
    if not recs:
        return f"started, no epoch finished (of {epochs})"
    rec = recs[-1]
    out = f"training: epoch {rec['epoch']} of {epochs} done, label term {rec.get('label', float('nan')):.4f}"
    seconds = [r["seconds"] for r in recs[-5:] if "seconds" in r]  # the recent pace (a resumed run restarts it)
    if seconds and isinstance(epochs, int):
        pace = float(np.median(seconds))
        out += f"; ~{(epochs - rec['epoch']) * pace / 3600:.1f} h left at {pace:.0f} s/epoch"
    return out


def worker_plan(folds, workers: int, cpus) -> list[tuple[list[int], list[int]]]:
    """Folds dealt round-robin to `workers` processes, `cpus` split into as many disjoint contiguous groups.

    Returns `[(folds_k, cpus_k)]` for the workers that get a fold (at most `len(folds)` of them).
    """
    folds, cpus = list(folds), sorted(cpus)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1; got {workers}")
    if workers > len(cpus):
        raise ValueError(f"--workers {workers} needs at least {workers} CPUs; this process may use {len(cpus)} "
                         f"({cpus})")
    n = min(workers, len(folds))
    if n == 0:
        return []
    # contiguous CPU groups, sized as evenly as possible, one per worker that has folds
    bounds = [round(i * len(cpus) / n) for i in range(n + 1)]
    return [(folds[i::n], cpus[bounds[i]:bounds[i + 1]]) for i in range(n)]


def run_pinned(commands, cpu_sets, logs, cwd=None) -> list[int]:
    """Runs the commands at once, each pinned to its CPU set (Linux), its stdout+stderr appended to its log.

    Waits for all of them and returns their exit codes; on KeyboardInterrupt, terminates them (training resumes
    from the last epoch's checkpoint).
    """
    procs = []
    try:
        for cmd, cpus, log in zip(commands, cpu_sets, logs, strict=True):
            pin = (lambda c=tuple(cpus): os.sched_setaffinity(0, c)) if hasattr(os, "sched_setaffinity") else None
            with open(log, "a") as f:
                procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, preexec_fn=pin))
        return [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise


def _subgroup_name(key: str) -> str:
    """Printed name of a subgroup key: "ed_to_es" -> "ED->ES", "group_dcm" -> "DCM", "apex" -> "apex"."""
    if "_to_" in key:
        return key.upper().replace("_TO_", "->")
    return key.removeprefix("group_").upper() if key.startswith("group_") else key


def format_results(res: dict) -> str:
    lines = [f"{res['pairs']} test pairs ({res['patients']} patients), fold {res.get('fold', '-')}"]
    lines.append(f"{'':10s} {'LV':>7s} {'RV':>7s} {'MYO':>7s} {'mean':>7s}")
    for tag in ("before", "after"):
        lines.append(f"{'Dice ' + tag:10s} " + " ".join(f"{100 * res[f'dice_{n}_{tag}']:6.1f}%"
                                                     for n in ("LV", "RV", "MYO", "mean")))
    groups = [k.removeprefix("dice_mean_after_") for k in res if k.startswith("dice_mean_after_")]
    for title, keys in (("by direction (moving->fixed)", [g for g in groups if "_to_" in g]),
                        ("by slice region", [g for g in ("base", "mid", "apex") if g in groups]),
                        ("by pathology group", sorted(g for g in groups if g.startswith("group_")))):
        if keys:
            lines.append(f"mean Dice {title}: " + "; ".join(
                f"{_subgroup_name(g)} {100 * res['dice_mean_before_' + g]:.1f}%"
                f" -> {100 * res['dice_mean_after_' + g]:.1f}%" for g in keys))
    by_direction = "".join(f", {_subgroup_name(g)} {res[f'folding_percent_{g}']:.3f}%" for g in groups
                           if "_to_" in g and f"folding_percent_{g}" in res)
    lines.append(f"folding {res['folding_percent']:.3f}% of pixels{by_direction} ({res['pairs_with_folding']} pairs "
                 f"with any); inference {1e3 * res['seconds_per_pair']:.2f} ms/pair ({res['pairs_per_second']:.0f} "
                 "pairs/s)")
    return "\n".join(lines)


def aggregate(results: list[dict]) -> dict:
    """Mean and std over folds of every numeric entry that all folds report (older results may lack newer keys)."""
    keys = [k for k, v in results[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("fold", "num_folds")
            and all(k in r for r in results)]
    out = {"folds": [r.get("fold") for r in results]}
    for k in keys:
        vals = np.array([r[k] for r in results], float)
        out[k] = {"mean": float(vals.mean()), "std": float(vals.std())}
    return out


_TABLE_COLUMNS = (("LV", "dice_LV_after"), ("RV", "dice_RV_after"), ("MYO", "dice_MYO_after"),
                  ("mean", "dice_mean_after"), ("before", "dice_mean_before"),
                  ("ED->ES", "dice_mean_after_ed_to_es"), ("ES->ED", "dice_mean_after_es_to_ed"),
                  ("base", "dice_mean_after_base"), ("mid", "dice_mean_after_mid"), ("apex", "dice_mean_after_apex"))


def cv_table(results: list[dict], test_patients: list | None = None, baselines: dict | None = None) -> str:
    """Markdown table of a CV: one row per fold (Dice % per structure, mean, subgroups, folding), mean +- std.

    results: the folds' results.json dicts; test_patients: per fold, a list of patient ids (or None);
    baselines: `{method: aggregate(...)}` rows appended as mean +- std (e.g. classic, refine). Results with
    per-pathology means (`dice_mean_after_group_*`) get a second table, one column per group.
    """
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    head = "| fold (test patients) | pairs | " + " | ".join(c for c, _ in _TABLE_COLUMNS) + " | folding % (pairs) |"
    lines = [head, "|" + "---|" * (len(_TABLE_COLUMNS) + 3)]
    for i, r in enumerate(results):
        ids = test_patients[i] if test_patients else None
        name = str(r.get("fold", i)) + (" (" + " ".join(p.removeprefix("patient") for p in ids) + ")" if ids else "")
        lines.append(f"| {name} | {r['pairs']} | " + " | ".join(pct(r.get(k)) for _, k in _TABLE_COLUMNS)
                     + f" | {r['folding_percent']:.3f} ({r.get('pairs_with_folding', '-')}) |")

    def agg_row(name, agg):
        cells = [f"{100 * agg[k]['mean']:.1f} +- {100 * agg[k]['std']:.1f}" if k in agg else "-"
                 for _, k in _TABLE_COLUMNS]
        fold = agg["folding_percent"]
        return f"| {name} | | " + " | ".join(cells) + f" | {fold['mean']:.3f} +- {fold['std']:.3f} |"

    network = aggregate(results)
    lines.append(agg_row("**network, mean +- std**", network))
    for method, agg in (baselines or {}).items():
        lines.append(agg_row(f"{method}, mean +- std", agg))
    groups = sorted({k.removeprefix("dice_mean_after_") for r in results for k in r
                     if k.startswith("dice_mean_after_group_")})
    if groups:  # second table: mean Dice after registration per pathology group (before in brackets)
        lines += ["", "Mean Dice % per pathology group (before registration in brackets); std over folds:", "",
                  "| fold | " + " | ".join(_subgroup_name(g) for g in groups) + " |", "|" + "---|" * (len(groups) + 1)]
        for i, r in enumerate(results):
            lines.append(f"| {r.get('fold', i)} | " + " | ".join(
                f"{pct(r.get('dice_mean_after_' + g))} ({pct(r.get('dice_mean_before_' + g))})" for g in groups) + " |")
        for name, agg in [("**network, mean +- std**", network)] + [
                (f"{m}, mean +- std", a) for m, a in (baselines or {}).items()]:
            lines.append(f"| {name} | " + " | ".join(
                f"{100 * agg[k]['mean']:.1f} +- {100 * agg[k]['std']:.1f}" if (k := "dice_mean_after_" + g) in agg
                else "-" for g in groups) + " |")
    return "\n".join(lines) + "\n"

