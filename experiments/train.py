"""Trains one fold of the paper's network and prints Dice before/after and folding.

    python -m experiments.train                          # ~5 min on the synthetic phantom (config "quick")
    python -m experiments.train --data_dir ../shared/data/acdc --fold 0 --workdir runs/acdc/fold0   # paper recipe
Re-running the same command resumes from the latest checkpoint in --workdir.
"""

import logging

import jax

from experiments import entry, flags_common
from jaxreg import experiment

FLAGS = flags_common.FLAGS


def main(argv):
    del argv
    logging.getLogger("absl").setLevel(logging.WARNING)
    exp = flags_common.experiment_from_flags()
    workdir = FLAGS.workdir or flags_common.default_workdir(exp)
    devices = jax.devices()  # --cpu_devices or XLA_FLAGS=--xla_force_host_platform_device_count=N split the CPU
    print(f"data: {exp.data_dir or 'synthetic phantom'}; fold {exp.fold}/{exp.num_folds}; workdir {workdir}; "
          f"devices: {len(devices)} x {devices[0].platform}")
    res = experiment.run_fold(exp, workdir, progress=FLAGS.progress)  # bad input: a one-line error (entry.run)
    print(experiment.format_results(res))


if __name__ == "__main__":
    entry.run(main)
