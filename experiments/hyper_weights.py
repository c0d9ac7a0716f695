"""A weight-conditioned network's test-time loss weights chosen by patient-wise cross-validation.

    python -m experiments.hyper_weights --workdir runs/ablation_hyper/hyper [--data_dir ../shared/data/acdc/training]
WORKDIR holds the folds of a CV of a weight-conditioned network (`fold0` .. `fold9`, as `experiments.ablation
--method hyper` trains them); the finished folds are used, the others skipped. Each fold's model scores its test
pairs at every setting of `jaxreg.fold_choice.hyper_weight_grid` (alpha and beta scaled around the recipe's; cached
in WORKDIR/foldK/weights), and each fold is scored with the setting best on the other finished folds
(`jaxreg.fold_choice.select_hyper_weights`). Writes results_network_cv_weights.json, its pairs CSV and
hyper_weights.md into WORKDIR; prints the comparison with the recipe's setting.
"""

from absl import flags

from experiments import entry
from jaxreg import cv, files, fold_choice, report

flags.DEFINE_string("workdir", None, "Folder of the CV's fold workdirs (fold0 .. foldK).", required=True)
flags.DEFINE_string("data_dir", None, "ACDC-layout folder; default: the one the folds recorded.")
flags.DEFINE_integer("num_folds", 10, "Folds of the CV.")
flags.DEFINE_list("alpha_factors", ["1", "0.3", "0.1", "0.03"], "Factors on the recipe's alpha to choose among.")
flags.DEFINE_list("beta_factors", ["1", "3", "10", "30"], "Factors on the recipe's beta to choose among.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    alpha = entry.nonnegative_floats("alpha_factors", FLAGS.alpha_factors)
    beta = entry.nonnegative_floats("beta_factors", FLAGS.beta_factors)
    root, exp = fold_choice.first_fold_experiment(FLAGS.workdir, FLAGS.num_folds, FLAGS.data_dir)
    grid = fold_choice.hyper_weight_grid(exp.train, alpha, beta)
    out = fold_choice.select_hyper_weights(root, cv.load_pairs(exp), FLAGS.num_folds, grid, exp.data_dir)
    res = out["network_cv_weights"]
    title = (f"Weight-conditioned network's test-time weights (alpha x {','.join(FLAGS.alpha_factors)}, beta x "
             f"{','.join(FLAGS.beta_factors)} around the recipe's {exp.train.alpha:g}, {exp.train.beta:g})")
    text = report.fold_choice_report(out, "network_cv_weights", title, "first", "recipe's weights") + (
        "\nThe chosen setting on all finished folds: " + ", ".join(
            f"{w} {v:g}" for w, v in res["chosen_on_all_weights"].items()) + "\n")
    files.write_text(root / "hyper_weights.md", text)
    print(text)


if __name__ == "__main__":
    entry.run(main)
