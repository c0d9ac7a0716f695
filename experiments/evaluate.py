"""Evaluates a training workdir's checkpoint on its fold's test patients (or on all pairs of --data_dir).

    python -m experiments.evaluate --workdir runs/acdc_paper/fold0 [--data_dir ../shared/data/acdc] [--all_pairs]
Writes pairs_network.csv and results.json into --out (default: the workdir) and prints the summary. The data must
split into the test patients the run recorded (experiment.json), else the model could be scored on its own
training patients: refused.
"""

import pathlib

from absl import flags

from experiments import entry
from jaxreg import cv, evaluation, report
from jaxreg.errors import ConfigError
from jaxreg.training import workdir as wd

flags.DEFINE_string("workdir", None, "Training workdir (config.json, experiment.json, checkpoints/).", required=True)
flags.DEFINE_string("data_dir", None, "Override the data folder recorded in experiment.json.")
flags.DEFINE_bool("all_pairs", False, "Evaluate every pair, not just the fold's test patients.")
flags.DEFINE_integer("epoch", None, "Checkpoint epoch (0-based); default the latest.")
flags.DEFINE_string("out", None, "Output folder; default the workdir.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    workdir = pathlib.Path(FLAGS.workdir)
    if not workdir.is_dir():
        raise ConfigError(f"{workdir}: --workdir does not exist (or is not a folder)")
    out = wd.prepare(FLAGS.out or workdir)
    with wd.lock(out):
        exp = cv.experiment_of(workdir, FLAGS.data_dir).validate()
        all_pairs = cv.load_pairs(exp)
        pairs = all_pairs if FLAGS.all_pairs else cv.check_test_patients(workdir, exp, all_pairs)
        train_pairs, _ = cv.split(exp, all_pairs)
        trainer, params = wd.load_trained(workdir, pairs.fixed.shape[1:], FLAGS.epoch)
        res, table = evaluation.evaluate(trainer, params, pairs)
        # the same metadata as a training run's results.json, so cross_validate still sees the fold as finished
        res.update(fold=exp.fold, num_folds=exp.num_folds, train_pairs=len(train_pairs),
                   data=exp.data_dir or "phantom", test_is_training=exp.num_folds == 1)
        if FLAGS.all_pairs:
            res["all_pairs"] = True
        evaluation.write_results(out, res, pairs, table)
    print(report.format_results(res))


if __name__ == "__main__":
    entry.run(main)
