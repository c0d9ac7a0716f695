"""Runs several folds (default all) of one experiment; aggregates mean +- std into cv_results.json and cv_results.md.

    python -m experiments.cross_validate --data_dir ../shared/data/acdc --workdir runs/acdc_paper [--folds 0,1,2]
    python -m experiments.cross_validate ... --status    # the same command plus --status: where each fold stands
    python -m experiments.cross_validate ... --workers 2 # folds side by side, each process pinned to its own CPUs
    python -m experiments.cross_validate ... --baselines # also classic and network + refinement on each fold
Each fold trains in WORKDIR/foldK (resumable); finished folds are not retrained.
"""

import dataclasses
import os
import pathlib
import sys

from absl import flags

from experiments import entry, flags_common
from jaxreg import cv, files, report
from jaxreg.errors import ConfigError
from jaxreg.training import workdir as wd

flags.DEFINE_list("folds", None, "Folds to run (default: all).")
flags.DEFINE_bool("status", False, "Print each fold's state (finished, epoch reached, not started) and exit: no "
                  "data is loaded, nothing trains.")
flags.DEFINE_integer("workers", 1, "Train the unfinished folds in this many processes at once, each pinned to its "
                     "own share of the CPUs (logs in WORKDIR/workerK.log); on few cores, XLA:CPU trains more steps "
                     "per second this way than one process on all cores.")
flags.DEFINE_bool("baselines", False, "Also score jaxreg.classic and network + additive instance refinement "
                  "(ClassicConfig(), no labels; experiments.refine_cv chooses and scores the CLI's refinement) on each "
                  "fold's test pairs (results_classic.json, results_refine.json in the fold's workdir; folds that have "
                  "them are skipped); the aggregate reports every method that all --folds have.")
flags.DEFINE_bool("peers", False, "With --baselines, also the peer methods (jaxreg.peers: SimpleITK's multi-resolution "
                  "demons, single-threaded; needs pip install -e '.[bench]'): results_demons.json per fold.")
flags.DEFINE_bool("aggregate", True, "Write cv_results.json over --folds (--workers' own processes skip it).")
FLAGS = flags_common.FLAGS


def main(argv):
    del argv
    exp = flags_common.experiment_from_flags()
    root = pathlib.Path(FLAGS.workdir) if FLAGS.workdir else pathlib.Path(flags_common.default_workdir(exp)).parent
    folds = _folds(exp)
    if FLAGS.status:
        for k in folds:
            print(f"fold {k}: {cv.fold_status(root / f'fold{k}', exp.num_folds)}")
        return
    pending = [k for k in folds if cv.finished_result(root / f"fold{k}", exp.num_folds) is None]
    if FLAGS.workers > 1 and pending:
        _run_workers(root, pending)  # returns once every worker has finished its folds (or exits)
        pending = []
    pairs = cv.load_pairs(exp) if pending else None
    results = []
    for k in folds:
        fold_dir = root / f"fold{k}"
        res = cv.finished_result(fold_dir, exp.num_folds)
        if res is None:
            res = cv.run_fold(dataclasses.replace(exp, fold=k), fold_dir, pairs, progress=FLAGS.progress,
                              chunk_steps=FLAGS.chunk_steps)
        results.append(res)
        print(f"fold {k}: Dice mean {100 * res['dice_mean_after']:.1f}% (before {100 * res['dice_mean_before']:.1f}%), "
              f"folding {res['folding_percent']:.3f}%")
    if FLAGS.baselines and FLAGS.aggregate:
        _score_baselines(exp, root, folds, results, pairs)
    if not FLAGS.aggregate:
        return
    agg = report.aggregate(results)
    subgroups = [k for k in agg if k.startswith("dice_mean_after_")]  # direction / slice region, if every fold has them
    for k in ("dice_LV_after", "dice_RV_after", "dice_MYO_after", "dice_mean_after", "dice_mean_before", *subgroups,
              "folding_percent"):
        scale = 1 if k == "folding_percent" else 100
        print(f"{k:18s} {scale * agg[k]['mean']:.2f} +- {scale * agg[k]['std']:.2f}")
    for method in _baseline_methods():
        base = [cv.baseline_result(root / f"fold{k}", method, r) for k, r in zip(folds, results)]
        if all(b is not None for b in base):
            agg[method] = report.aggregate(base)
            m = agg[method]
            print(f"{method:8s} Dice mean {100 * m['dice_mean_after']['mean']:.2f} +- "
                  f"{100 * m['dice_mean_after']['std']:.2f} (LV {100 * m['dice_LV_after']['mean']:.1f}, RV "
                  f"{100 * m['dice_RV_after']['mean']:.1f}, MYO {100 * m['dice_MYO_after']['mean']:.1f}), folding "
                  f"{m['folding_percent']['mean']:.3f}%")
    files.write_json(root / "cv_results.json", agg)
    patients = [_test_patients(root / f"fold{k}") for k in folds]
    table = report.cv_table(results, patients, {m: agg[m] for m in _baseline_methods() if m in agg})
    files.write_text(root / "cv_results.md", table)
    print(f"wrote {root / 'cv_results.json'} and {root / 'cv_results.md'}")


def _baseline_methods():
    return cv.BASELINES + (cv.PEERS if FLAGS.peers else ())


def _folds(exp):
    """--folds as ints in 0..num_folds-1 (ConfigError otherwise); default all."""
    if not FLAGS.folds:
        return list(range(exp.num_folds))
    try:
        folds = [int(f) for f in FLAGS.folds]
    except ValueError:
        raise ConfigError(f"--folds: expected comma-separated integers; got {','.join(FLAGS.folds)!r}") from None
    bad = [f for f in folds if not 0 <= f < exp.num_folds]
    if bad:
        raise ConfigError(f"--folds: {bad} outside 0..{exp.num_folds - 1} (num_folds {exp.num_folds})")
    return folds


def _test_patients(workdir):
    path = workdir / "experiment.json"
    return wd.read_json(path, "experiment record").get("test_patients") if path.is_file() else None


def _score_baselines(exp, root, folds, results, pairs):
    """`cv.evaluate_baselines` on each fold that lacks its results (the network from the fold's checkpoint)."""
    for k, res in zip(folds, results):
        fold_dir = root / f"fold{k}"
        if all(cv.baseline_result(fold_dir, m, res) is not None for m in _baseline_methods()):
            continue
        pairs = cv.load_pairs(exp) if pairs is None else pairs
        with wd.lock(fold_dir):
            test, u_net = cv.predict_test_pairs(fold_dir, pairs, dataclasses.replace(exp, fold=k))
            done = [m for m in _baseline_methods() if cv.baseline_result(fold_dir, m, res) is not None]
            base = cv.evaluate_baselines(fold_dir, test, u_net, {"fold": k, "num_folds": exp.num_folds},
                                         methods=[m for m in _baseline_methods() if m not in done])
        print(f"fold {k}: " + ", ".join(f"{m} Dice mean {100 * r['dice_mean_after']:.1f}%, folding "
                                        f"{r['folding_percent']:.3f}%" for m, (r, _) in base.items()))


def _run_workers(root, folds):
    """This same command once per worker, with its share of the folds and CPUs; exits (one line) if a worker failed."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    plan = cv.worker_plan(folds, FLAGS.workers, cpus)
    root.mkdir(parents=True, exist_ok=True)
    cmds, logs = [], []
    for i, (fs, cs) in enumerate(plan):
        cmds.append([sys.executable, "-m", "experiments.cross_validate", *sys.argv[1:],
                     f"--folds={','.join(map(str, fs))}", "--workers=1", "--noaggregate"])
        logs.append(root / f"worker{i}.log")
        print(f"worker {i}: folds {','.join(map(str, fs))} on CPUs {','.join(map(str, cs))}; log {logs[-1]}")
    codes = cv.run_pinned(cmds, [cs for _, cs in plan], logs)
    failed = [f"worker {i} (exit {c}; see {logs[i]})" for i, c in enumerate(codes) if c]
    if failed:
        sys.exit("error: failed: " + "; ".join(failed))


if __name__ == "__main__":
    entry.run(main)
