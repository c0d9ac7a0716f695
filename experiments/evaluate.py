"""Evaluates a training workdir's checkpoint on its fold's test patients (or on all pairs of --data_dir).

    python -m experiments.evaluate --workdir runs/acdc_paper/fold0 [--data_dir ../shared/data/acdc] [--all_pairs]
Writes pairs_network.csv and results.json into --out (default: the workdir) and prints the summary.
"""

import json
import pathlib

from absl import flags

from experiments import entry
from jaxreg import experiment, train

flags.DEFINE_string("workdir", None, "Training workdir (config.json, experiment.json, checkpoints/).", required=True)
flags.DEFINE_string("data_dir", None, "Override the data folder recorded in experiment.json.")
flags.DEFINE_bool("all_pairs", False, "Evaluate every pair, not just the fold's test patients.")
flags.DEFINE_integer("epoch", None, "Checkpoint epoch (0-based); default the latest.")
flags.DEFINE_string("out", None, "Output folder; default the workdir.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    wd = pathlib.Path(FLAGS.workdir)
    meta = json.loads((wd / "experiment.json").read_text())  # bad input: a one-line error (entry.run)
    try:
        cfg_exp = experiment.ExperimentConfig(**{k: v for k, v in meta.items()
                                                 if k in experiment.ExperimentConfig.__dataclass_fields__})
        if FLAGS.data_dir:
            cfg_exp = experiment.ExperimentConfig(**{**cfg_exp.__dict__, "data_dir": FLAGS.data_dir})
        all_pairs = experiment.load_pairs(cfg_exp)
        pairs = all_pairs
        if not FLAGS.all_pairs:
            pairs = pairs.select_patients(meta["test_patients"]) if meta.get("test_patients") else pairs
        n_train = len(all_pairs.select_patients(meta["train_patients"])) if meta.get("train_patients") else None
        trainer, params = train.load_trained(wd, pairs.fixed.shape[1:], FLAGS.epoch)
    except KeyError as e:
        raise ValueError(f"{wd / 'experiment.json'}: no entry {e}") from None
    out = pathlib.Path(FLAGS.out or wd)
    res = train.evaluate(trainer, params, pairs, out)
    # the same metadata as a training run's results.json, so cross_validate still sees the fold as finished
    res.update(fold=cfg_exp.fold, num_folds=cfg_exp.num_folds, train_pairs=n_train,
               data=cfg_exp.data_dir or "phantom")
    if FLAGS.all_pairs:
        res["all_pairs"] = True
    (out / "results.json").write_text(json.dumps(res, indent=2))
    print(experiment.format_results(res))


if __name__ == "__main__":
    entry.run(main)
