"""Loss terms at the identity on ACDC, as in ../shared/notes/loss-scales.md (2 pairs per patient, ED fixed).

    python -m experiments.loss_scales --data_dir ../shared/data/acdc/training
"""

import numpy as np
from absl import flags

from experiments import entry
from jaxreg import train
from jaxreg.data import load_acdc_pairs

flags.DEFINE_string("data_dir", "../shared/data/acdc/training", "ACDC-layout folder.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    ps = load_acdc_pairs(FLAGS.data_dir, directions=("ES->ED",), crop_on="fixed_labels")
    idx = np.concatenate([np.flatnonzero(ps.patient == p)[:2] for p in ps.patients])
    print(f"{len(idx)} pairs:", train.identity_terms(ps.subset(idx)))


if __name__ == "__main__":
    entry.run(main)
