"""Loss terms at the identity on ACDC, as in ../shared/notes/loss-scales.md (2 pairs per patient, ED fixed).

    python -m experiments.loss_scales --data_dir ../shared/data/acdc/training
"""

import jax
import numpy as np
from absl import flags

from experiments import entry
from jaxreg import objective
from jaxreg.data import load_acdc_pairs

flags.DEFINE_string("data_dir", "../shared/data/acdc/training", "ACDC-layout folder.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    ps = load_acdc_pairs(FLAGS.data_dir, directions=("ES->ED",), crop_on="fixed_labels")
    idx = np.concatenate([np.flatnonzero(ps.patient == p)[:2] for p in ps.patients])
    sub = ps.subset(idx)
    onehot = [jax.nn.one_hot(a, 4) for a in (sub.fixed_labels, sub.moving_labels)]
    print(f"{len(idx)} pairs:", objective.identity_terms(sub.fixed, sub.moving, *onehot))


if __name__ == "__main__":
    entry.run(main)
