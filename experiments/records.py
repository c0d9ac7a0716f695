"""Copies a run folder's records (no checkpoints, locks or logs: `jaxreg.records`) to a committed folder, or back.

    python -m experiments.records --src runs/ablation_hyper/hyper --dst docs/ablation_hyper --folds 2   # a new fold
    python -m experiments.records --src docs/ablation_hyper --dst runs/ablation_hyper/hyper --folds 0,1,2 --restore
`--folds K,...`: only SRC/fold<K> (default: everything under SRC). `--restore`: files already in DST are kept.
"""

import pathlib

from absl import flags

from experiments import entry
from jaxreg import records
from jaxreg.errors import ConfigError

flags.DEFINE_string("src", None, "Folder to copy the records from.", required=True)
flags.DEFINE_string("dst", None, "Folder to copy them to (created).", required=True)
flags.DEFINE_list("folds", None, "Only these folds' folders (SRC/fold<K> to DST/fold<K>).")
flags.DEFINE_bool("restore", False, "Keep files DST already has (a run's own files are never replaced).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    src, dst = pathlib.Path(FLAGS.src), pathlib.Path(FLAGS.dst)
    pairs = [(src / f"fold{k}", dst / f"fold{k}") for k in FLAGS.folds] if FLAGS.folds else [(src, dst)]
    for s, d in pairs:
        if not s.is_dir():
            raise ConfigError(f"{s}: no such folder (--src{', --folds' if FLAGS.folds else ''})")
        written = records.copy_records(s, d, overwrite=not FLAGS.restore)
        print(f"{s} -> {d}: {len(written)} record files written")


if __name__ == "__main__":
    entry.run(main)
