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
    assert "| alpha_x10 | 84.0 | 86.0 | -2.0 | - | - | - |" in text  # no objectives recorded: no ratio
    assert "mean |difference| 1.50, largest 2.00" in text
    assert ablation.agreement(a, {})["mean_abs_diff"] is None


def test_objective_ratio_is_the_geometric_mean_over_common_runs_and_the_table_names_the_lower():
    def obj(fold, seed, dice, value):
        return _run(fold, seed, dice) | {"objective": value}

    hyper = ablation.summarize_cells({"opt": [obj(7, 0, 0.85, 100.0), obj(8, 0, 0.86, 200.0), obj(9, 0, 0.8, 5.0)],
                                      "alpha_x100": [obj(7, 0, 0.78, 130.0)], "beta_x0": [_run(7, 0, 0.8)]})
    members = ablation.summarize_cells({"opt": [obj(7, 0, 0.84, 400.0), obj(8, 0, 0.86, 50.0)],
                                        "alpha_x100": [obj(7, 0, 0.74, 100.0)], "beta_x0": [_run(7, 0, 0.75)]})
    assert hyper["opt"]["objectives"] == {"fold7_seed0": 100.0, "fold8_seed0": 200.0, "fold9_seed0": 5.0}
    # fold 9 has no member run: left out; ratios 0.25 and 4 -> geometric mean 1 (the arithmetic mean would be 2.1)
    assert ablation.objective_ratio(hyper["opt"], members["opt"]) == pytest.approx(1.0)
    agree = ablation.agreement(hyper, members)
    assert agree["objective_ratio"]["alpha_x100"] == pytest.approx(1.3)
    assert agree["objective_ratio"]["beta_x0"] is None  # records without the objective
    text = ablation.agreement_table("hyper", hyper, "population", members)
    assert "| alpha_x100 | 78.0 | 74.0 | +4.0 | - | - | 1.300 |" in text
    assert "hyper reaches the lower objective at 0 of 2 settings; population at: opt, alpha_x100." in text


def test_record_keeps_every_method_in_a_fixed_order_whichever_ran_last():
    meta = {"schedule": "short", "folds": [7], "seeds": 1, "data": "acdc"}
    pop = {"opt": {"dice": 0.84, "dice_std": 0.0, "folding": 0.0, "folding_std": 0.0}}
    hyp = {"opt": {"dice": 0.86, "dice_std": 0.0, "folding": 0.0, "folding_std": 0.0}}
    first = ablation.record({}, "population", meta | {"method": "population"}, pop)
    second = ablation.record(first, "hyper", meta | {"method": "hyper"}, hyp)
    assert list(second["methods"]) == ["hyper", "population"] and second["runs"] == hyp
    assert second["method"] == "hyper" and second["paper"]["alpha_x0"] == (0.0, 40.6)
    rerun = ablation.record(second, "population", meta | {"method": "population"}, hyp)
    assert list(rerun["methods"]) == ["hyper", "population"] and rerun["methods"]["population"]["runs"] == hyp
    text = ablation.markdown(rerun["methods"])
    assert "hyper against population" in text and "population against hyper" not in text
    assert text.index("method hyper,") < text.index("method population,")
