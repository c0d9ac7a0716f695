"""jaxreg.ablation's summaries: the cells over folds x seeds, the seed spread, and two methods' agreement."""

import numpy as np
import pytest

from jaxreg import ablation


def _run(fold, seed, dice, folding=0.0):
    return {"fold": fold, "seed": seed, "dice_mean_after": dice, "folding_percent": folding}


def test_cells_pool_folds_and_seeds_and_seed_spread_stays_within_a_fold():
    runs = {"opt": [_run(0, 0, 0.80), _run(0, 1, 0.84), _run(1, 0, 0.70), _run(1, 1, 0.70)],
            "beta_x10": [_run(0, 0, 0.9, 0.1)], "alpha_x0": []}
    cells = ablation.summarize_cells(runs)
    assert set(cells) == {"opt", "beta_x10"}  # a setting without runs has no cell
    opt = cells["opt"]
    assert opt["runs"] == 4
    assert opt["dice"] == pytest.approx(0.76) and opt["dice_std"] == pytest.approx(np.std([0.8, 0.84, 0.7, 0.7]))
    # fold 0's seeds differ by 0.04 (std 0.02), fold 1's not at all: the seed spread is 0.01, far below the
    # 0.058 pooled std that fold difficulty inflates
    assert opt["seed_std"] == pytest.approx(0.01)
    assert cells["beta_x10"]["seed_std"] is None and cells["beta_x10"]["folding"] == pytest.approx(0.1)


def test_agreement_is_the_mean_and_largest_difference_over_shared_settings():
    a = {"opt": {"dice": 0.87}, "alpha_x10": {"dice": 0.84}, "beta_x0": {"dice": 0.80}}
    b = {"opt": {"dice": 0.86}, "alpha_x10": {"dice": 0.86}, "delta_x0": {"dice": 0.5}}
    agree = ablation.agreement(a, b)
    assert agree["settings"] == 2 and set(agree["dice_diff"]) == {"opt", "alpha_x10"}
    assert agree["dice_diff"]["alpha_x10"] == pytest.approx(-0.02)
    assert agree["mean_diff"] == pytest.approx(-0.005) and agree["mean_abs_diff"] == pytest.approx(0.015)
    assert agree["max_abs_diff"] == pytest.approx(0.02)
    text = ablation.agreement_table("hyper", a, "population", b)
    assert "| alpha_x10 | 84.0 | 86.0 | -2.0 | - | - |" in text
    assert "mean |difference| 1.50, largest 2.00" in text
    assert ablation.agreement(a, {})["mean_abs_diff"] is None
