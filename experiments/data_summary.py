"""Prints pair counts, group counts and intensity statistics per fold, and writes an overview PNG.

    python -m experiments.data_summary                                  # synthetic phantom
    python -m experiments.data_summary --data_dir ../shared/data/acdc   # ACDC layout
"""

from absl import flags

from experiments import entry
from jaxreg.data import summary

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "ACDC-layout folder; the synthetic phantom when unset.")
flags.DEFINE_integer("num_folds", 10, "Patient-wise folds.")
flags.DEFINE_integer("seed", 0, "Fold and phantom seed.")
flags.DEFINE_integer("phantom_pairs", 400, "Phantom slice pairs per direction when --data_dir is unset.")
flags.DEFINE_string("png", "data_overview.png", "Overview figure path ('' for none).")


def main(argv):
    del argv
    summary.run(FLAGS.data_dir, FLAGS.num_folds, FLAGS.seed, FLAGS.phantom_pairs, FLAGS.png or None)


if __name__ == "__main__":
    entry.run(main)
