"""Runs several folds (default all) of one experiment and aggregates mean +- std into cv_results.json.

    python -m experiments.cross_validate --data_dir ../shared/data/acdc --workdir runs/acdc_paper [--folds 0,1,2]
    python -m experiments.cross_validate ... --status    # the same command plus --status: where each fold stands
Each fold trains in WORKDIR/foldK (resumable); finished folds are not retrained.
"""

import json
import pathlib

from absl import flags

from experiments import entry, flags_common
from jaxreg import experiment

flags.DEFINE_list("folds", None, "Folds to run (default: all).")
flags.DEFINE_bool("status", False, "Print each fold's state (finished, epoch reached, not started) and exit: no "
                  "data is loaded, nothing trains.")
FLAGS = flags_common.FLAGS


def main(argv):
    del argv
    exp = flags_common.experiment_from_flags()
    root = pathlib.Path(FLAGS.workdir or flags_common.default_workdir(exp)).parent if not FLAGS.workdir \
        else pathlib.Path(FLAGS.workdir)
    folds = [int(f) for f in FLAGS.folds] if FLAGS.folds else list(range(exp.num_folds))
    if FLAGS.status:
        for k in folds:
            print(f"fold {k}: {experiment.fold_status(root / f'fold{k}', exp.num_folds)}")
        return
    pairs = experiment.load_pairs(exp)
    results = []
    for k in folds:
        wd = root / f"fold{k}"
        res = experiment.finished_result(wd, exp.num_folds)
        if res is None:
            res = experiment.run_fold(experiment.ExperimentConfig(**{**exp.__dict__, "fold": k}), wd, pairs,
                                      progress=FLAGS.progress)
        results.append(res)
        print(f"fold {k}: Dice mean {100 * res['dice_mean_after']:.1f}% (before {100 * res['dice_mean_before']:.1f}%), "
              f"folding {res['folding_percent']:.3f}%")
    agg = experiment.aggregate(results)
    (root / "cv_results.json").write_text(json.dumps(agg, indent=2))
    subgroups = [k for k in agg if k.startswith("dice_mean_after_")]  # direction / slice region, if every fold has them
    for k in ("dice_LV_after", "dice_RV_after", "dice_MYO_after", "dice_mean_after", "dice_mean_before", *subgroups,
              "folding_percent"):
        scale = 1 if k == "folding_percent" else 100
        print(f"{k:18s} {scale * agg[k]['mean']:.2f} +- {scale * agg[k]['std']:.2f}")


if __name__ == "__main__":
    entry.run(main)
