"""Evaluates a training workdir's checkpoint on its fold's test patients (or on all pairs of --data_dir).

    python -m experiments.evaluate --workdir runs/acdc_paper/fold0 [--data_dir ../shared/data/acdc] [--all_pairs]
Writes pairs_network.csv and results.json into --out (default: the workdir) and prints the summary.
"""

import json
import pathlib
import sys

from absl import app, flags

from jaxreg import experiment, train
from jaxreg.data import DataError, split_fold

flags.DEFINE_string("workdir", None, "Training workdir (config.json, experiment.json, checkpoints/).", required=True)
flags.DEFINE_string("data_dir", None, "Override the data folder recorded in experiment.json.")
flags.DEFINE_bool("all_pairs", False, "Evaluate every pair, not just the fold's test patients.")
flags.DEFINE_integer("epoch", None, "Checkpoint epoch (0-based); default the latest.")
flags.DEFINE_string("out", None, "Output folder; default the workdir.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    wd = pathlib.Path(FLAGS.workdir)
    try:
        meta = json.loads((wd / "experiment.json").read_text())
        cfg_exp = experiment.ExperimentConfig(**{k: v for k, v in meta.items()
                                                 if k in experiment.ExperimentConfig.__dataclass_fields__})
        if FLAGS.data_dir:
            cfg_exp = experiment.ExperimentConfig(**{**cfg_exp.__dict__, "data_dir": FLAGS.data_dir})
        pairs = experiment.load_pairs(cfg_exp)
        if not FLAGS.all_pairs:
            pairs = pairs.select_patients(meta["test_patients"]) if meta.get("test_patients") else pairs
        trainer, params = train.load_trained(wd, pairs.fixed.shape[1:], FLAGS.epoch)
    except (DataError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    res = train.evaluate(trainer, params, pairs, FLAGS.out or wd)
    res["fold"] = cfg_exp.fold
    print(experiment.format_results(res))


if __name__ == "__main__":
    app.run(main)
