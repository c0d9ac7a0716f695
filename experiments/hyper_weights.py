"""A weight-conditioned network's test-time loss weights chosen by patient-wise cross-validation.

    python -m experiments.hyper_weights --workdir runs/ablation_hyper/hyper [--data_dir ../shared/data/acdc/training]
WORKDIR holds the folds of a CV of a weight-conditioned network (`fold0` .. `fold9`, as `experiments.ablation
--method hyper` trains them); the finished folds are used, the others skipped. Each fold's model scores its test
pairs at every setting of `jaxreg.cv.hyper_weight_grid` (alpha and beta scaled around the recipe's; cached in
WORKDIR/foldK/weights), each fold is scored with the setting best on the other finished folds
(`jaxreg.cv.select_hyper_weights`). Writes results_network_cv_weights.json, its pairs CSV and hyper_weights.md
into WORKDIR; prints the comparison with the recipe's setting.
"""

import pathlib

from absl import flags

from experiments import entry
from jaxreg import cv, report
from jaxreg.errors import ConfigError

flags.DEFINE_string("workdir", None, "Folder of the CV's fold workdirs (fold0 .. foldK).", required=True)
flags.DEFINE_string("data_dir", None, "ACDC-layout folder; default: the one the folds recorded.")
flags.DEFINE_integer("num_folds", 10, "Folds of the CV.")
flags.DEFINE_list("alpha_factors", ["1", "0.3", "0.1", "0.03"], "Factors on the recipe's alpha to choose among.")
flags.DEFINE_list("beta_factors", ["1", "3", "10", "30"], "Factors on the recipe's beta to choose among.")
FLAGS = flags.FLAGS


def _factors(name, values):
    try:
        out = tuple(float(v) for v in values)
    except ValueError:
        raise ConfigError(f"--{name}: expected comma-separated numbers; got {','.join(values)!r}") from None
    if not out or any(not v >= 0.0 or v == float("inf") for v in out):
        raise ConfigError(f"--{name}: expected finite numbers >= 0; got {','.join(values)}")
    return out


def main(argv):
    del argv
    root = pathlib.Path(FLAGS.workdir)
    if not root.is_dir():
        raise ConfigError(f"{root}: --workdir does not exist")
    alpha, beta = _factors("alpha_factors", FLAGS.alpha_factors), _factors("beta_factors", FLAGS.beta_factors)
    folds = [k for k in range(FLAGS.num_folds) if cv.finished_result(root / f"fold{k}", FLAGS.num_folds)]
    if not folds:
        raise ConfigError(f"{root}: no finished fold of a {FLAGS.num_folds}-fold CV")
    exp = cv.experiment_of(root / f"fold{folds[0]}", FLAGS.data_dir)
    if not exp.train.conditioned:
        raise ConfigError(f"{root / f'fold{folds[0]}'}: not a weight-conditioned network (--config hyper)")
    pairs = cv.load_pairs(exp)
    out = cv.select_hyper_weights(root, pairs, FLAGS.num_folds, cv.hyper_weight_grid(exp.train, alpha, beta),
                                  exp.data_dir)
    res = out["network_cv_weights"]
    lines = [f"Weight-conditioned network, folds {','.join(map(str, out['folds']))} of {FLAGS.num_folds} "
             f"({res['pairs']} pairs, {res['patients']} patients), {res['candidates']} settings (alpha x "
             f"{','.join(FLAGS.alpha_factors)}, beta x {','.join(FLAGS.beta_factors)} around the recipe's "
             f"{exp.train.alpha:g}, {exp.train.beta:g}); admissible: folding < {res['max_folding_percent']} % on "
             f"the other folds.", "",
             "Chosen per fold (on the other finished folds): " + ", ".join(
                 f"fold {k} {v} ({100 * res['dice_mean_after_per_fold'][k]:.1f} %)"
                 for k, v in res["chosen_per_fold"].items()),
             f"Chosen on all finished folds (the setting to use): {res['chosen_on_all']} = "
             + ", ".join(f"{w} {v:g}" for w, v in res["chosen_on_all_weights"].items()), "",
             "Pooled over the finished folds' pairs (not a mean over folds):", "",
             report.comparison_table({"weights chosen by CV": res, "recipe's weights": out["centre"]},
                                     seconds=False),
             "Every setting, pooled (for reading only: a choice on these would be a choice on the reported pairs):",
             "", "| setting | Dice % | folding % | apex | ED->ES | HCM |", "|---|---|---|---|---|---|"]
    for name, r in out["candidates"].items():
        lines.append(f"| {name} | {100 * r['dice_mean_after']:.2f} | {r['folding_percent']:.4f} | "
                     f"{100 * r.get('dice_mean_after_apex', float('nan')):.1f} | "
                     f"{100 * r.get('dice_mean_after_ed_to_es', float('nan')):.1f} | "
                     f"{100 * r.get('dice_mean_after_group_hcm', float('nan')):.1f} |")
    text = "\n".join(lines) + "\n"
    path = root / "hyper_weights.md"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    print(text)


if __name__ == "__main__":
    entry.run(main)
