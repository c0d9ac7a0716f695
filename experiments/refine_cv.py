"""Instance refinement of a network's fields, its setting chosen by patient-wise cross-validation.

    python -m experiments.refine_cv --workdir runs/acdc_tuned/cv [--data_dir ../shared/data/acdc/training]
WORKDIR holds the folds of a CV of a network (`fold0` .. `fold9`: `experiments.cross_validate`, or
`experiments.ablation --method hyper`'s WORKDIR/hyper); the finished folds are used, the others skipped. Each
fold's network field on its test pairs is refined with every candidate of `jaxreg.fold_choice.refine_grid`
(additive or by composition; cached in WORKDIR/foldK/refine), and each fold is scored with the candidate best on
the other finished folds (`jaxreg.fold_choice.select_refinement`). Writes results_refine_cv.json, its pairs CSV
and refine_cv.md into WORKDIR; prints the comparison with the network alone.
"""

from absl import flags

from experiments import entry
from jaxreg import cv, files, fold_choice, report
from jaxreg.errors import ConfigError

flags.DEFINE_string("workdir", None, "Folder of the CV's fold workdirs (fold0 .. foldK).", required=True)
flags.DEFINE_string("data_dir", None, "ACDC-layout folder; default: the one the folds recorded.")
flags.DEFINE_integer("num_folds", 10, "Folds of the CV.")
flags.DEFINE_list("candidates", None, "Only these candidates of jaxreg.fold_choice.refine_grid (default: all).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    grid = fold_choice.refine_grid()
    unknown = sorted(set(FLAGS.candidates or ()) - set(grid))
    if unknown:
        raise ConfigError(f"--candidates: unknown {unknown}; known: {', '.join(grid)}")
    candidates = {n: grid[n] for n in FLAGS.candidates} if FLAGS.candidates else grid
    root, exp = fold_choice.first_fold_experiment(FLAGS.workdir, FLAGS.num_folds, FLAGS.data_dir)
    out = fold_choice.select_refinement(root, cv.load_pairs(exp), FLAGS.num_folds, candidates, exp.data_dir)
    text = report.fold_choice_report(
        out, "refine_cv", "Refinement of the network's fields (no labels), chosen per fold", "network", "network alone")
    files.write_text(root / "refine_cv.md", text)
    print(text)


if __name__ == "__main__":
    entry.run(main)
