"""A run's workdir and the entry points' checks (issue 24): the identity of a run, configs checked before anything
is written, failed starts that leave nothing behind, corrupt checkpoints, and one-line errors with exit status 2."""

import dataclasses
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jaxreg import cv
from jaxreg.errors import ConfigError, DataError, TrainingDiverged, UserError
from jaxreg.training import TrainConfig, train
from jaxreg.training import workdir as wd
from tests.test_train import TINY_MODEL

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = cv.ExperimentConfig(train=TrainConfig(model=TINY_MODEL, epochs=1, augment=1, batch_size=4), num_folds=2,
                           phantom_slices=16, image_size=64)


@pytest.mark.parametrize("field,value,message", [
    ("epochs", 0, "epochs must be >= 1"), ("epochs", -1, "epochs must be >= 1"),
    ("batch_size", -4, "batch_size must be >= 1"), ("batch_size", 0, "batch_size must be >= 1"),
    ("alpha", -30000.0, "alpha must be >= 0"), ("beta", -1.0, "beta must be >= 0"),
    ("augment", 0, "augment must be >= 1"), ("learning_rate", -1.0, "learning_rate must be > 0"),
    ("learning_rate", float("nan"), "learning_rate must be a finite number"), ("seed", -1, "seed must be >= 0"),
    ("lr_schedule", "step", "lr_schedule must be one of"), ("level_weights", (1.0, 1.0), "one weight per output"),
    ("epsilon", 0.0, "epsilon must be > 0"), ("batch_size", 2.5, "batch_size must be an integer"),
])
def test_every_train_field_is_checked(field, value, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TINY.train, **{field: value}).validate()


@pytest.mark.parametrize("field,value,message", [
    ("num_folds", 0, "num_folds must be >= 1"), ("fold", 2, "fold must be in 0..1"), ("fold", -1, "fold must be"),
    ("image_size", 60, "multiple of 16"), ("crop_on", "heart", "crop_on must be one of"),
    ("pixel_mm", -1.0, "pixel_mm must be > 0"), ("data_dir", "/no/such/acdc", "does not exist"),
])
def test_every_experiment_field_is_checked(field, value, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TINY, **{field: value}).validate()


def test_model_fields_are_checked():
    bad = dataclasses.replace(TINY_MODEL, level_factors=(1, 2, 4))
    with pytest.raises(ConfigError, match="coarse -> fine"):
        dataclasses.replace(TINY.train, model=bad).validate()
    with pytest.raises(ConfigError, match="decoder_features needs one entry"):
        dataclasses.replace(TINY.train, model=dataclasses.replace(TINY_MODEL, decoder_features=(8, 8))).validate()


def test_a_workdir_is_never_resumed_under_another_fold(tmp_path):
    wdir = tmp_path / "run"
    res = cv.run_fold(TINY, wdir, progress=False)
    stored = (wdir / "experiment.json").read_text()
    with pytest.raises(ConfigError, match=r"another experiment \(fold \(0 vs 1\)"):
        cv.run_fold(dataclasses.replace(TINY, fold=1), wdir, progress=False)
    with pytest.raises(ConfigError, match="fold_seed"):
        cv.run_fold(dataclasses.replace(TINY, fold_seed=3), wdir, progress=False)
    assert (wdir / "experiment.json").read_text() == stored  # the refused runs changed nothing
    assert json.loads((wdir / "results.json").read_text())["fold"] == 0 == res["fold"]
    # evaluating the fold-0 model as fold 1 would score it on its own training patients: refused
    pairs = cv.load_pairs(TINY)
    with pytest.raises(ConfigError, match="other test patients"):
        cv.check_test_patients(wdir, dataclasses.replace(TINY, fold=1), pairs)
    assert len(cv.check_test_patients(wdir, TINY, pairs)) == res["pairs"]
    # a second process is refused before it writes anything (experiment.json included)
    with wd.lock(wdir):
        with pytest.raises(wd.WorkdirBusy):
            cv.run_fold(TINY, wdir, progress=False)
    assert (wdir / "experiment.json").read_text() == stored
    # the changed training config is named field by field
    with pytest.raises(ConfigError, match=r"different config \(alpha \(1000.0 vs 5.0\)"):
        cv.run_fold(dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, alpha=5.0)), wdir,
                    progress=False)


def test_a_diverging_start_names_the_step_and_leaves_nothing_behind(tmp_path):
    bad = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, delta=1e38, beta=1e38))
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at epoch 1, step 1 of"):
        cv.run_fold(bad, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()  # created by the failed start, removed with it
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(TrainingDiverged):
        cv.run_fold(bad, tmp_path / "mine", progress=False)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [".lock", "notes.txt"]
    # the corrected command is not blocked by the failed one's records
    assert cv.run_fold(TINY, tmp_path / "mine", progress=False)["fold"] == 0


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    from jaxreg.data import phantom_pairs

    pairs = phantom_pairs(8, seed=0, size=64)
    cfg = dataclasses.replace(TINY.train, epochs=2)
    _, ref = train(cfg, pairs, tmp_path / "ref", progress=False)
    train(dataclasses.replace(cfg), pairs, tmp_path / "run", progress=False)
    for f in (tmp_path / "run" / "checkpoints" / "1").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    _, state = train(cfg, pairs, tmp_path / "run", progress=False)  # epoch 2 retrained from epoch 1's checkpoint
    out = capsys.readouterr()
    assert "unreadable checkpoint" in out.out and "using the one of epoch 1" in out.out
    assert "Traceback" not in out.out + out.err
    for a, b in zip(jax_leaves(ref), jax_leaves(state)):
        np.testing.assert_array_equal(a, b)
    assert [r["epoch"] for r in wd.read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2]
    for f in (tmp_path / "run" / "checkpoints").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.raises(DataError, match="no readable checkpoint"):
        wd.load_trained(tmp_path / "run", (64, 64))


def jax_leaves(state):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state["params"]))]


def test_config_files_that_are_not_configs_name_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DataError, match=r"config.json: not a jaxreg training config"):
        wd.read_config(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2")
    with pytest.raises(DataError, match=r"config.json: unreadable"):
        wd.read_config(tmp_path)
    (tmp_path / "experiment.json").write_text("{}")
    with pytest.raises(DataError, match="config.json"):  # not blamed on experiment.json
        cv.experiment_of(tmp_path)
    assert issubclass(DataError, UserError) and issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "epochs must be >= 1"), (["--num_folds", "0"], "num_folds must be >= 1"),
    (["--seed", "-1"], "seed must be >= 0"), (["--config", "__init__"], "unknown preset '__init__'"),
    (["--epochs", "abc"], "epochs"), (["--encoder_features", "4,x"], "encoder_features"),
    (["--workdir", "FILE"], "not a folder"),
])
def test_entry_point_flags_are_one_line_exit_2_and_write_nothing(tmp_path, args, message):
    (tmp_path / "FILE").write_text("x")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    cmd = [sys.executable, "-m", "experiments.train", "--config", "tiny", "--noprogress"]
    if "--workdir" not in args:
        cmd += ["--workdir", str(tmp_path / "w")]
    out = subprocess.run(cmd + args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    err = out.stderr.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1] and "Traceback" not in out.stderr
    assert not (tmp_path / "w").exists() and (tmp_path / "FILE").read_text() == "x"


def test_helpfull_lists_every_config_field():
    out = subprocess.run([sys.executable, "-m", "experiments.train", "--helpfull"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    text = out.stdout + out.stderr
    for cls in (cv.ExperimentConfig, TrainConfig, type(TINY_MODEL)):
        for f in dataclasses.fields(cls):
            if f.name not in ("train", "model"):
                assert f"--{f.name}" in text or f"--[no]{f.name}" in text, f.name
