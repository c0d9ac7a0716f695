"""Trains one fold of the paper's network and prints Dice before/after and folding.

    python -m experiments.train                          # ~3 min on the synthetic phantom (config "quick")
    python -m experiments.train --data_dir ../shared/data/acdc/training --fold 0 --workdir runs/acdc/fold0
Re-running the same command resumes from the latest checkpoint in --workdir. Every config field is a flag
(`--helpfull`); `--config` picks the preset they override.
"""

import logging

import jax

from experiments import entry, flags_common
from jaxreg import cv, report

FLAGS = flags_common.FLAGS


def main(argv):
    del argv
    logging.getLogger("absl").setLevel(logging.WARNING)
    devices = jax.devices()  # --cpu_devices or XLA_FLAGS=--xla_force_host_platform_device_count=N split the CPU
    print(f"devices: {len(devices)} x {devices[0].platform}", flush=True)
    exp = flags_common.experiment_from_flags()
    workdir = flags_common.workdir_from_flags(exp)
    print(f"data: {exp.data_dir or 'synthetic phantom'}; fold {exp.fold}/{exp.num_folds}; workdir {workdir}",
          flush=True)
    res = cv.run_fold(exp, workdir, progress=FLAGS.progress, chunk_steps=FLAGS.chunk_steps)
    print(report.format_results(res))


if __name__ == "__main__":
    entry.run(main)
