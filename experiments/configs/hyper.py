"""The weight-conditioned ("hyper") network: `tuned`'s recipe, every training sample drawing its own loss weights.

Each sample's (delta, alpha, beta) is drawn around tuned's (1, 300, 5e4): half the samples vary one weight (as
Table 1 does), half all three; a varied weight is log-uniform over x0.01 .. x100, or 0 with probability 0.1. The
network reads the weights through FiLM layers (a 64-wide MLP, per-channel scale and shift after every
convolution). One training answers every cell of Table 1 (`experiments.ablation --method hyper`);
`jaxreg.load_model("hyper")` is this recipe trained on ACDC. docs/decisions.md, "Weight-conditioned model".
"""

import dataclasses

from experiments.configs import tuned


def get_config():
    exp = tuned.get_config()
    model = dataclasses.replace(exp.train.model, condition_features=64)
    return dataclasses.replace(exp, train=dataclasses.replace(exp.train, model=model, hyper_range=100.0,
                                                              hyper_zero_prob=0.1, hyper_axes_prob=0.5))
