"""jaxreg.classic's settings chosen by patient-wise cross-validation, against SimpleITK's multi-resolution demons.

    python -m experiments.classic_cv --data_dir ../shared/data/acdc/training --workdir runs/classic_cv --peers demons
Every candidate of `jaxreg.cv.classic_grid` runs once on all pairs (cached in WORKDIR/candidates: a rerun resumes),
each fold is scored with the candidate best on the other folds' patients (`jaxreg.selection`), and the pooled
result is set beside the peers (`--peers demons` needs `pip install -e ".[bench]"`). Writes results_classic_cv.json,
results_demons.json, their per-pair CSVs and classic_cv.md into WORKDIR; prints the comparison.
"""

import pathlib

from absl import flags

from experiments import entry
from jaxreg import cv, files, report
from jaxreg.data import load_acdc_pairs
from jaxreg.errors import ConfigError

flags.DEFINE_string("data_dir", None, "ACDC-layout folder (patientXXX/...).", required=True)
flags.DEFINE_string("workdir", "runs/classic_cv", "Output folder (candidate caches, results, classic_cv.md).")
flags.DEFINE_integer("num_folds", 10, "Patient-wise folds (stratified by pathology group).")
flags.DEFINE_integer("fold_seed", 0, "Seed of the patient split (the CV's).")
flags.DEFINE_list("candidates", None, "Only these candidates of jaxreg.cv.classic_grid (default: all).")
flags.DEFINE_list("peers", [], "Peer methods to score beside (demons).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if not pathlib.Path(FLAGS.data_dir).is_dir():
        raise ConfigError(f"{FLAGS.data_dir}: --data_dir does not exist")
    grid = cv.classic_grid()
    unknown = sorted(set(FLAGS.candidates or ()) - set(grid))
    if unknown:
        raise ConfigError(f"--candidates: unknown {unknown}; known: {sorted(grid)}")
    candidates = {n: grid[n] for n in FLAGS.candidates} if FLAGS.candidates else grid
    pairs = load_acdc_pairs(FLAGS.data_dir)
    out = cv.select_classic(pairs, FLAGS.workdir, candidates, FLAGS.num_folds, FLAGS.fold_seed, FLAGS.peers)
    res = out["classic_cv"]
    text = (f"{len(pairs)} pairs of {len(pairs.patients)} patients; jaxreg.classic chosen per fold on the other "
            f"{FLAGS.num_folds - 1} folds among {res['candidates']} settings: "
            + ", ".join(f"fold {k} {v}" for k, v in res["chosen_per_fold"].items())
            + f"; chosen on all patients: {res['chosen_on_all']}\n\n"
            + report.comparison_table({"classic (CV-chosen)": res, **{p: out[p] for p in FLAGS.peers}},
                                      seconds=False)
            + "\nTimes: each candidate and peer is cached with the seconds of the run that computed it, so they are "
              "not side by side here; `benchmarks/bench_classic.py` times both in one process.\n")
    files.write_text(pathlib.Path(FLAGS.workdir) / "classic_cv.md", text)
    print(text)


if __name__ == "__main__":
    entry.run(main)
