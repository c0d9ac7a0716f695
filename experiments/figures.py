"""Fig. 3 and Fig. 4 for one fold: before, classic (jaxreg.classic) and the network, on the fold's test pairs.

    python -m experiments.figures --workdir runs/acdc_paper/fold0 [--data_dir ../shared/data/acdc/training]
Also instance refinement (network field + classic iterations at the finest level, no labels).
Writes fig3_dice.png, fig4_examples.png, results_classic.json, results_refine.json and pairs_*.csv into --workdir.
Images derived from ACDC stay out of the repository (research-only licence).
"""

import pathlib

import numpy as np
from absl import flags

from experiments import entry
from jaxreg.errors import ConfigError
from jaxreg import cv, evaluation, figures
from jaxreg.training import workdir as wd

flags.DEFINE_string("workdir", None, "Training workdir of one fold.", required=True)
flags.DEFINE_string("data_dir", None, "Override the data folder recorded in experiment.json.")
flags.DEFINE_integer("examples", 3, "Pairs in Fig. 4.")
FLAGS = flags.FLAGS


def _dice(pairs, u):
    before, after, _ = evaluation.pair_table(pairs, u)
    return before, after


def main(argv):
    del argv
    workdir = pathlib.Path(FLAGS.workdir)
    if not workdir.is_dir():
        raise ConfigError(f"{workdir}: --workdir does not exist")
    exp = cv.experiment_of(workdir, FLAGS.data_dir).validate()
    with wd.lock(workdir):
        pairs, u_net = cv.predict_test_pairs(workdir, cv.load_pairs(exp), exp)
        base = cv.evaluate_baselines(workdir, pairs, u_net, {"fold": exp.fold, "num_folds": exp.num_folds})
    (res_cl, u_cl), (res_ref, u_ref) = base["classic"], base["refine"]
    before, after_net = _dice(pairs, u_net)
    _, after_cl = _dice(pairs, u_cl)
    _, after_ref = _dice(pairs, u_ref)
    figures.dice_boxplot({"before": before, "classic": after_cl, "network": after_net, "network + refine": after_ref},
                         workdir / "fig3_dice.png",
                         title=f"{len(pairs)} test pairs, fold {exp.fold}")
    # the hardest pair before registration of each of the first FLAGS.examples patients in that order
    idx = figures.hardest_per_patient(np.nanmean(before, 1), pairs.patient, FLAGS.examples)
    figures.example_pairs(pairs.fixed[idx], pairs.moving[idx], {"classic": u_cl[idx], "network": u_net[idx]},
                          workdir / "fig4_examples.png")
    print(f"Dice mean: before {100 * np.nanmean(before):.1f}%, classic {100 * np.nanmean(after_cl):.1f}%, "
          f"network {100 * np.nanmean(after_net):.1f}%, network + refine {100 * np.nanmean(after_ref):.1f}%; "
          f"folding % classic {res_cl['folding_percent']:.4f}, refine {res_ref['folding_percent']:.4f}; "
          f"classic {1e3 * res_cl['seconds_per_pair']:.1f} ms/pair, refine {1e3 * res_ref['seconds_per_pair']:.1f}")
    print(f"wrote {workdir / 'fig3_dice.png'} and {workdir / 'fig4_examples.png'}")


if __name__ == "__main__":
    entry.run(main)
