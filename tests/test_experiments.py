"""absl entry points: presets + flag overrides, the ablation grid, cross-validation aggregation."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jaxreg import ablation, cv, report
from jaxreg.training import TrainConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ablation_grid_is_the_papers_table():
    runs = ablation.settings(TrainConfig())
    assert len(runs) == 16  # the optimum + 5 factors x 3 weights: the 18 cells of Table 1 share the optimum
    assert runs["delta_x100"].delta == 100.0 and runs["alpha_x0.01"].alpha == pytest.approx(10.0)
    assert runs["beta_x0"].beta == 0.0 and runs["opt"] == TrainConfig()
    assert all(r.delta == 1.0 for k, r in runs.items() if not k.startswith("delta"))


def test_ablation_subset_runs_and_resumes(tmp_path):
    cmd = [sys.executable, "-m", "experiments.ablation", "--config", "tiny", "--schedule", "tiny", "--noprogress",
           "--workdir", str(tmp_path), "--folds", "0", "--method", "single", "--runs", "beta_x0,opt"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "epoch 1" in out.stderr  # trained (the resume check below relies on this log line)
    runs = json.loads((tmp_path / "ablation.json").read_text())["runs"]
    assert set(runs) == {"opt", "beta_x0"}
    table = (tmp_path / "ablation.md").read_text()
    assert "| x0 | - | - | 83.4 / 0.1 | - | - | 0.0 / 40.6 |" in table  # delta_x0, alpha_x0 not run; beta_x0 filled
    assert (tmp_path / "beta_x0" / "fold0" / "results.json").exists()
    again = subprocess.run(cmd[:-1] + ["opt"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "epoch" not in again.stderr  # both finished: nothing retrains
    bad = subprocess.run(cmd[:-1] + ["alpha_x7"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "unknown settings" in bad.stderr


def test_aggregate_mean_std():
    agg = report.aggregate([{"fold": 0, "dice_mean_after": 0.8},
                                {"fold": 1, "dice_mean_after": 0.9, "dice_mean_after_ed_to_es": 0.7}])
    assert set(report.aggregate([{"fold": 0, "x": 1.0, "flag": True}])) == {"folds", "x"}  # bools are no metric
    assert "dice_mean_after_ed_to_es" not in agg  # a key one fold lacks (older results) is left out
    assert agg["dice_mean_after"]["mean"] == pytest.approx(0.85)
    assert agg["dice_mean_after"]["std"] == pytest.approx(0.05)
    assert agg["folds"] == [0, 1]


def test_cv_table_rows_and_mean():
    base = {"pairs": 10, "dice_LV_after": 0.9, "dice_RV_after": 0.8, "dice_MYO_after": 0.7, "dice_mean_after": 0.8,
            "dice_mean_before": 0.6, "folding_percent": 0.02, "pairs_with_folding": 1}
    results = [base | {"fold": 0, "dice_mean_after_apex": 0.7}, base | {"fold": 1, "dice_mean_after": 0.9,
                                                                       "folding_percent": 0.0, "pairs_with_folding": 0}]
    refine = report.aggregate([r | {"dice_mean_after": 0.95} for r in results])
    patients = [["patient001", "patient002"], ["patient003"]]
    lines = report.cv_table(results, patients, {"refine": refine}).splitlines()
    assert lines[0].startswith("| fold (test patients) | pairs | LV | RV | MYO | mean | before |")
    assert lines[2] == "| 0 (001 002) | 10 | 90.0 | 80.0 | 70.0 | 80.0 | 60.0 | - | - | - | - | 70.0 | 0.020 (1) |"
    assert lines[3].startswith("| 1 (003) | 10 | 90.0 | 80.0 | 70.0 | 90.0 | 60.0 |")
    cells = [c.strip() for c in lines[4].split("|")]
    assert cells[6] == "85.0 +- 5.0" and cells[-2] == "0.010 +- 0.010" and cells[-3] == "-"  # apex: one fold only
    assert lines[5].startswith("| refine, mean +- std | | 90.0 +- 0.0 |") and "95.0 +- 0.0" in lines[5]
    assert len(lines) == 6  # no per-pathology means: no second table
    # per-pathology means: a second table, a column per group, "-" where a fold lacks the group
    groups = [results[0] | {"dice_mean_after_group_dcm": 0.8, "dice_mean_before_group_dcm": 0.5,
                            "dice_mean_after_group_nor": 0.9, "dice_mean_before_group_nor": 0.7},
              results[1] | {"dice_mean_after_group_dcm": 0.7, "dice_mean_before_group_dcm": 0.6}]
    lines = report.cv_table(groups, patients).splitlines()
    assert lines[8] == "| fold | DCM | NOR |"
    assert lines[10] == "| 0 | 80.0 (50.0) | 90.0 (70.0) |" and lines[11] == "| 1 | 70.0 (60.0) | - (-) |"
    assert lines[12] == "| **network, mean +- std** | 75.0 +- 5.0 | - |" and len(lines) == 13


def test_format_results_names_subgroups():
    res = {"pairs": 4, "patients": 2, "folding_percent": 0.0, "pairs_with_folding": 0, "seconds_per_pair": 0.01,
           "pairs_per_second": 100.0}
    for tag, v in (("before", 0.5), ("after", 0.8)):
        res |= {f"dice_{n}_{tag}": v for n in ("LV", "RV", "MYO", "mean")}
        res |= {f"dice_mean_{tag}_{g}": v for g in ("es_to_ed", "apex", "group_hcm")}
    text = report.format_results(res)
    assert "by direction (moving->fixed): ES->ED 50.0% -> 80.0%" in text
    assert "by slice region: apex 50.0% -> 80.0%" in text and "by pathology group: HCM 50.0% -> 80.0%" in text
    assert "folding 0.000% of pixels (0 pairs with any)" in text  # no folding per direction in older results
    assert "folding 0.000% of pixels, ES->ED 0.250% (" in report.format_results(res | {
        "folding_percent_es_to_ed": 0.25})


def test_comparison_table_differences_and_optional_seconds():
    base = {"folding_percent": 0.1, "seconds_per_pair": 0.05, "dice_mean_after": 0.84, "dice_LV_after": 0.88,
            "dice_RV_after": 0.81, "dice_MYO_after": 0.83, "dice_mean_after_group_hcm": 0.75}
    peer = base | {"dice_mean_after": 0.829, "dice_mean_after_group_hcm": 0.759, "seconds_per_pair": 0.25}
    lines = report.comparison_table({"classic": base, "demons": peer}).splitlines()
    assert "| mean | 84.0 | 82.9 | +1.1 |" in lines and "| group HCM | 75.0 | 75.9 | -0.9 |" in lines
    assert lines[-1] == "| s / pair | 0.0500 | 0.2500 | 0.20x |"
    no_time = report.comparison_table({"classic": base, "demons": peer}, seconds=False)
    assert "s / pair" not in no_time and no_time.splitlines()[-1].startswith("| folding % |")


def test_cross_validate_two_tiny_folds(tmp_path):
    cmd = [sys.executable, "-m", "experiments.cross_validate", "--config", "tiny", "--workdir", str(tmp_path),
           "--noprogress", "--epochs", "1", "--alpha", "100"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    agg = json.loads((tmp_path / "cv_results.json").read_text())
    assert agg["folds"] == [0, 1] and 0 <= agg["dice_mean_after"]["mean"] <= 1
    cfg = json.loads((tmp_path / "fold1" / "config.json").read_text())
    assert cfg["alpha"] == 100 and cfg["epochs"] == 1  # flags override the preset
    test0 = set(json.loads((tmp_path / "fold0" / "experiment.json").read_text())["test_patients"])
    test1 = set(json.loads((tmp_path / "fold1" / "experiment.json").read_text())["test_patients"])
    assert test0 and test1 and not test0 & test1
    # re-evaluating a finished fold keeps results.json a fold result: the same numbers and fold metadata, so a
    # rerun of the CV does not retrain it; per-direction Dice is reported
    before = json.loads((tmp_path / "fold0" / "results.json").read_text())
    ev = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--workdir", str(tmp_path / "fold0")],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert "ED->ES" in ev.stdout and "ES->ED" in ev.stdout
    after = json.loads((tmp_path / "fold0" / "results.json").read_text())
    for k in ("fold", "num_folds", "train_pairs", "data", "pairs", "dice_mean_after", "folding_percent"):
        assert after[k] == pytest.approx(before[k]), k
    # a rerun does not retrain finished folds; with --baselines it scores classic and network + refinement on each
    # fold's test pairs and aggregates them beside the network
    base = subprocess.run(cmd + ["--baselines"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert base.returncode == 0 and "epoch 1" not in base.stderr, base.stderr[-2000:]
    assert "dice_mean_after_ed_to_es" in base.stdout
    agg = json.loads((tmp_path / "cv_results.json").read_text())
    for method in ("classic", "refine"):
        per_fold = [json.loads((tmp_path / f"fold{k}" / f"results_{method}.json").read_text()) for k in (0, 1)]
        assert [r["fold"] for r in per_fold] == [0, 1] and per_fold[0]["pairs"] == before["pairs"]
        mean = np.mean([r["dice_mean_after"] for r in per_fold])
        assert agg[method]["dice_mean_after"]["mean"] == pytest.approx(mean)
        assert f"{method:8s} Dice mean" in base.stdout
    table = (tmp_path / "cv_results.md").read_text().splitlines()
    assert [row.split(" ")[1] for row in table[2:4]] == ["0", "1"] and table[5].startswith("| classic, mean +- std")
    # no labels used, yet classic registration overlaps the phantom's structures better than no registration
    assert agg["classic"]["dice_mean_after"]["mean"] > agg["classic"]["dice_mean_before"]["mean"] + 0.05
    assert agg["refine"]["dice_mean_before"]["mean"] == pytest.approx(agg["dice_mean_before"]["mean"])
    stamp = (tmp_path / "fold0" / "results_refine.json").stat().st_mtime_ns
    again_base = subprocess.run(cmd + ["--baselines"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again_base.returncode == 0 and "refine Dice mean" not in again_base.stdout.split("dice_LV_after")[0]
    assert (tmp_path / "fold0" / "results_refine.json").stat().st_mtime_ns == stamp  # scored folds are not rerun
    status = subprocess.run(cmd + ["--status"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert status.returncode == 0 and status.stdout.count("finished: Dice") == 2, status.stdout
    # the same CV with --workers 2: one process per fold, each pinned to its own CPU, then one aggregate
    par = tmp_path / "par"
    cmd_par = [c if c != str(tmp_path) else str(par) for c in cmd] + ["--workers", "2"]
    out_par = subprocess.run(cmd_par, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) < 2:  # e.g. under `taskset -c 0`
        assert out_par.returncode == 2 and "--workers 2 needs at least 2 CPUs" in out_par.stderr
        return
    assert out_par.returncode == 0, out_par.stderr[-2000:]
    assert "worker 0: folds 0 on CPUs" in out_par.stdout and "worker 1: folds 1 on CPUs" in out_par.stdout
    assert "epoch 1" in (par / "worker0.log").read_text() and "epoch 1" in (par / "worker1.log").read_text()
    agg_par = json.loads((par / "cv_results.json").read_text())
    assert agg_par["folds"] == [0, 1]
    for k in (0, 1):  # the same folds, split and trained the same way (thread counts may move the last digits)
        seq = json.loads((tmp_path / f"fold{k}" / "results.json").read_text())
        res = json.loads((par / f"fold{k}" / "results.json").read_text())
        assert res["pairs"] == seq["pairs"] and res["dice_mean_after"] == pytest.approx(seq["dice_mean_after"], abs=1e-3)


def test_worker_plan_deals_folds_and_disjoint_cpu_groups():
    assert cv.worker_plan(range(1, 10), 2, [1, 0]) == [([1, 3, 5, 7, 9], [0]), ([2, 4, 6, 8], [1])]
    plan = cv.worker_plan([0, 1, 2, 3], 3, range(16))
    assert [f for f, _ in plan] == [[0, 3], [1], [2]]
    cpus = [c for _, cs in plan for c in cs]
    assert sorted(cpus) == list(range(16)) and [len(cs) for _, cs in plan] == [5, 6, 5]
    assert cv.worker_plan([7], 4, range(8)) == [([7], list(range(8)))]  # one fold: one worker, every CPU
    assert cv.worker_plan([], 2, range(2)) == []
    with pytest.raises(ValueError, match="needs at least 3 CPUs"):
        cv.worker_plan([0, 1, 2], 3, [0, 1])
    with pytest.raises(ValueError, match=">= 1"):
        cv.worker_plan([0], 0, [0])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU pinning is Linux-only")
def test_run_pinned_pins_each_command_and_returns_exit_codes(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    show = "import os, sys; print(sorted(os.sched_getaffinity(0))); sys.exit(len(os.sched_getaffinity(0)) + 2)"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    codes = cv.run_pinned([[sys.executable, "-c", show]] * 2, [cpus[:1], cpus], logs)
    assert codes == [3, len(cpus) + 2]
    assert logs[0].read_text().strip() == str(cpus[:1]) and logs[1].read_text().strip() == str(cpus)


def test_fold_status_reads_the_workdir(tmp_path):
    assert cv.fold_status(tmp_path / "fold3", 10) == "not started"
    (tmp_path / "config.json").write_text(json.dumps({"epochs": 40}))
    assert cv.fold_status(tmp_path, 10) == "started, no epoch finished (of 40)"
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "label": 0.5}\n{"epoch": 2, "label": 0.25}\n')
    assert cv.fold_status(tmp_path, 10) == "training: epoch 2 of 40 done, label term 0.2500"
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "label": 0.25, "seconds": s}) + "\n"
                                                    for e, s in ((1, 900.0), (2, 100.0), (3, 120.0), (4, 110.0)))
                                            + '{"epoch": 5, "lab')  # a record cut short by a kill: skipped
    assert cv.fold_status(tmp_path, 10) == ("training: epoch 4 of 40 done, label term 0.2500; ~1.1 h left at "
                                                    "115 s/epoch")  # 36 epochs x the median of 900, 100, 120, 110
    res = {"num_folds": 10, "dice_mean_after": 0.8, "dice_mean_before": 0.6, "folding_percent": 0.01}
    (tmp_path / "results.json").write_text(json.dumps(res | {"all_pairs": True}))
    assert cv.fold_status(tmp_path, 10).startswith("training")  # an --all_pairs evaluation is no fold result
    (tmp_path / "results.json").write_text(json.dumps(res))
    assert cv.fold_status(tmp_path, 10) == "finished: Dice 80.0% (before 60.0%), folding 0.010%"
    assert cv.fold_status(tmp_path, 5).startswith("training")  # a result of another CV split


@pytest.mark.parametrize("module,flag", [
    ("train", "--data_dir"), ("cross_validate", "--data_dir"), ("ablation", "--data_dir"),
    ("data_summary", "--data_dir"), ("loss_scales", "--data_dir"), ("classic_cv", "--data_dir"),
    ("evaluate", "--workdir"), ("figures", "--workdir"), ("hyper_weights", "--workdir"),
    ("refine_cv", "--workdir"),
])
def test_bad_path_is_a_one_line_error_in_every_entry_point(tmp_path, module, flag):
    cmd = [sys.executable, "-m", f"experiments.{module}", flag, str(tmp_path / "nope")]
    if flag == "--data_dir" and module not in ("data_summary", "loss_scales", "classic_cv"):
        cmd += ["--workdir", str(tmp_path / "w"), "--noprogress"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and str(tmp_path / "nope") in out.stderr
    assert "does not exist" in out.stderr or "No such file" in out.stderr


def test_fig4_examples_are_the_hardest_pair_of_distinct_patients():
    from jaxreg.figures import hardest_per_patient

    scores = np.array([0.5, 0.1, 0.2, np.nan, 0.3, 0.05])
    patients = np.array(["a", "b", "b", "c", "c", "a"])
    # a's worst is 0.05 (index 5), b's 0.1 (1), c's 0.3 (4; NaN ranks last)
    np.testing.assert_array_equal(hardest_per_patient(scores, patients, 3), [5, 1, 4])
    np.testing.assert_array_equal(hardest_per_patient(scores, patients, 2), [5, 1])
    assert len(hardest_per_patient(scores, patients, 10)) == 3


def test_shipped_model_is_the_tuned_preset_trained_on_all_50_patients():
    from experiments import configs
    from jaxreg.inference import SHIPPED

    assert TrainConfig.from_json(json.loads((SHIPPED / "config.json").read_text())) == configs.get("tuned").train
    exp = json.loads((SHIPPED / "experiment.json").read_text())
    assert exp["num_folds"] == 1 and len(set(exp["train_patients"])) == 50


def test_ablation_hyper_trains_once_and_scores_every_setting_beside_other_methods(tmp_path):
    base = [sys.executable, "-m", "experiments.ablation", "--config", "tiny", "--schedule", "tiny", "--noprogress",
            "--workdir", str(tmp_path), "--folds", "0"]
    out = subprocess.run(base + ["--method", "hyper", "--runs", "opt,alpha_x100,beta_x0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.count("epoch 1/1") == 1  # one training for all settings
    cells = json.loads((tmp_path / "ablation.json").read_text())["runs"]
    assert set(cells) == {"opt", "alpha_x100", "beta_x0"}
    for name in cells:
        res = json.loads((tmp_path / "hyper" / "fold0" / name / "results.json").read_text())
        assert res["setting"] == name and 0 <= res["dice_mean_after"] <= 1
    single = subprocess.run(base + ["--method", "single", "--runs", "opt"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    record = json.loads((tmp_path / "ablation.json").read_text())
    assert set(record["methods"]) == {"hyper", "single"} and record["method"] == "single"
    assert set(record["methods"]["hyper"]["runs"]) == {"opt", "alpha_x100", "beta_x0"}
    text = (tmp_path / "ablation.md").read_text()
    assert "method hyper" in text and "method single" in text
    assert "hyper against single" in text and "| opt |" in text and "Over 1 settings" in text
    # both scored the training objective at opt on the same fold and seed: its ratio stands in the table
    assert "reaches the lower objective at" in text and "of 1 settings" in text
    assert (tmp_path / "ablation.png").stat().st_size > 10_000


def test_shipped_hyper_model_is_the_hyper_preset_with_held_out_patients():
    import dataclasses

    from experiments import configs
    from jaxreg.inference import SHIPPED_MODELS

    folder = SHIPPED_MODELS["hyper"]
    cfg = TrainConfig.from_json(json.loads((folder / "config.json").read_text()))
    assert cfg == dataclasses.replace(configs.get("hyper").train, data_seed=0) and cfg.conditioned
    exp = json.loads((folder / "experiment.json").read_text())
    assert exp["num_folds"] == 10 and len(exp["test_patients"]) == 5
    assert not set(exp["test_patients"]) & set(exp["train_patients"]) and len(set(exp["train_patients"])) == 45
    assert (folder / "MODEL_CARD.md").is_file()
