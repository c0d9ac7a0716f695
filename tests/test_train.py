"""Network, loss and training loop on tiny configs: identity start, loss = library terms, resume after SIGKILL,
two-device data parallelism equal to one device, and the files a run leaves behind."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg import bspline, evaluation, losses, warp
from jaxreg import training as train
from jaxreg.data import phantom_pairs
from jaxreg.models import RegNet, RegNetConfig, dense_fields

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_MODEL = RegNetConfig(encoder_features=(4, 8, 8, 8, 8), decoder_features=(8, 8, 8))


def test_model_levels_shared_encoder_and_identity_start():
    model = RegNet(TINY_MODEL)
    x = jnp.zeros((2, 64, 64))
    params = model.init(jax.random.key(0), x, x)
    top = params["params"].keys()
    assert sum(k.startswith("Encoder") for k in top) == 1  # one encoder, applied to both streams
    out = model.apply(params, jax.random.uniform(jax.random.key(1), (2, 64, 64)), x)
    assert [o.shape for o in out] == [(2,) + bspline.control_grid_shape((16, 16), 4) + (2,),
                                      (2,) + bspline.control_grid_shape((32, 32), 4) + (2,),
                                      (2,) + bspline.control_grid_shape((64, 64), 4) + (2,)]
    assert all(float(jnp.abs(o).max()) == 0.0 for o in out)  # zero heads: training starts at the identity
    with pytest.raises(ValueError, match="divisible by 16"):
        model.apply(params, jnp.zeros((1, 60, 60)), jnp.zeros((1, 60, 60)))


def test_3d_variant_is_a_parameter():
    model = RegNet(RegNetConfig(encoder_features=(2, 4, 4, 4, 4), decoder_features=(4, 4, 4)))
    x = jnp.zeros((1, 32, 32, 32))
    out = model.apply(model.init(jax.random.key(0), x, x), x, x)
    assert out[-1].shape == (1,) + bspline.control_grid_shape((32, 32, 32), 4) + (3,)


def _perturbed(params):
    """Initial parameters plus 0.1 N(0, 1) noise (fixed keys): zero heads would give u = 0 everywhere."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    return jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_chunked_inference_equals_one_batch():
    tr = train.Trainer(train.TrainConfig(model=TINY_MODEL), (64, 64), infer_chunk=4)
    params = _perturbed(tr.init_state()["params"])
    fixed, moving = jax.random.uniform(jax.random.key(1), (2, 10, 64, 64))  # 10 pairs: 2 chunks + a remainder
    chunked = tr.eval_fields(params, fixed, moving)
    whole = dataclasses.replace(tr, infer_chunk=64).eval_fields(params, fixed, moving)
    assert chunked.shape == (10, 64, 64, 2) and float(jnp.abs(whole).max()) > 0.1
    np.testing.assert_allclose(chunked, whole, atol=1e-5)


def test_loss_is_the_sum_of_library_terms():
    cfg = train.TrainConfig(model=TINY_MODEL, delta=1.0, alpha=10.0, curvature_scale=0.5, beta=5.0, label_dice=0.3)
    model = RegNet(cfg.model)
    ps = phantom_pairs(2, seed=0, size=64)
    f, m = jnp.asarray(ps.fixed), jnp.asarray(ps.moving)
    fo, mo = jax.nn.one_hot(ps.fixed_labels, 4), jax.nn.one_hot(ps.moving_labels, 4)

    # each computation jitted as a whole: run eagerly, every primitive compiles on its own (~4x the test's time)
    @jax.jit
    def init():
        params = model.init(jax.random.key(0), f, m)
        return jax.tree.map(lambda p: p + 0.01 * jax.random.normal(jax.random.key(2), p.shape), params)

    @jax.jit
    def reference(params):  # the loss written out from the library's terms, level by level, pair by pair
        fields = dense_fields(model.apply(params, f, m), (64, 64), cfg.model)
        want = 0.0
        for u, fac in zip(fields, cfg.model.level_factors):
            for i in range(2):
                fl = f[i].reshape(64 // fac, fac, 64 // fac, fac).mean((1, 3))
                ml = m[i].reshape(64 // fac, fac, 64 // fac, fac).mean((1, 3))
                fol = fo[i].reshape(64 // fac, fac, 64 // fac, fac, 4).mean((1, 3))
                mol = mo[i].reshape(64 // fac, fac, 64 // fac, fac, 4).mean((1, 3))
                d = losses.ngf(fl, warp.warp(ml, u[i]), eps=0.1)
                r = losses.curvature(u[i])
                wl = warp.warp(mol, u[i])
                b = jnp.mean((wl - fol) ** 2) * (64 // fac) ** 2 / 64**2
                # soft Dice of the three foreground labels, summed over pixels
                inter, size = (wl * fol)[..., 1:].sum((0, 1)), (wl + fol)[..., 1:].sum((0, 1))
                dice = 1.0 - jnp.mean((2 * inter + 1e-5) / (size + 1e-5))
                want += (d + 10.0 * 0.5 * r + 5.0 * b + 5.0 * 0.3 * dice) / 2
        return want

    params = init()
    loss_of = jax.jit(lambda p, c: train.loss_fn(p, model, (f, m, fo, mo), train.loss_weights(c), c),
                      static_argnums=1)
    loss, terms = loss_of(params, cfg)
    np.testing.assert_allclose(loss, reference(params), rtol=2e-4)
    assert set(terms) == {"ngf", "curvature", "label", "dice_loss"}
    assert 0.0 < float(terms["dice_loss"]) < 3.0  # three levels, each in [0, 1]
    off = dataclasses.replace(cfg, label_dice=0.0)  # not computed at weight 0: the loss loses exactly its share
    loss_off, terms_off = loss_of(params, off)
    assert float(terms_off["dice_loss"]) == 0.0
    np.testing.assert_allclose(loss_off, loss - 5.0 * 0.3 * terms["dice_loss"], rtol=1e-5)  # batch means


def test_intensity_augmentation_changes_only_the_deformed_passes_images():
    from jaxreg.training.step import prepare_batch

    ps = phantom_pairs(4, seed=0, size=64)
    args = (jax.random.key(0), jnp.asarray(ps.fixed), jnp.asarray(ps.moving), jnp.asarray(ps.fixed_labels),
            jnp.asarray(ps.moving_labels))
    base = train.TrainConfig(model=TINY_MODEL)
    cfg = dataclasses.replace(base, augment_gamma=0.3, augment_bias=0.2, augment_noise=0.02)
    plain, aug = prepare_batch(*args, jnp.asarray(True), base), prepare_batch(*args, jnp.asarray(True), cfg)
    for k in (2, 3):  # the same deformation: the labels are the same
        np.testing.assert_array_equal(aug[k], plain[k])
    for k in (0, 1):
        assert float(jnp.abs(aug[k] - plain[k]).mean()) > 0.01
    off = prepare_batch(*args, jnp.asarray(False), cfg)  # the pass without deformation keeps the images as they are
    np.testing.assert_array_equal(off[0], ps.fixed)
    np.testing.assert_array_equal(off[1], ps.moving)


def test_config_json_round_trip_and_old_runs():
    cfg = train.TrainConfig(model=TINY_MODEL, alpha=7.0, curvature_scale=0.3)
    assert train.TrainConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    old = cfg.to_json()
    del old["curvature_scale"]  # written before the field existed: alpha acted unscaled
    assert train.TrainConfig.from_json(old).curvature_scale == 1.0
    del old["lr_schedule"]
    assert train.TrainConfig.from_json(old).lr_schedule == "constant"


def test_cosine_schedule_decays_over_all_steps_and_resumes(tmp_path):
    cfg = train.TrainConfig(model=TINY_MODEL, learning_rate=2e-3, epochs=4, lr_schedule="cosine")
    lr = train.learning_rate_schedule(cfg, steps_per_epoch=5)
    np.testing.assert_allclose([lr(0), lr(10), lr(20)], [2e-3, 1e-3, 0.0], atol=1e-9)
    assert train.learning_rate_schedule(dataclasses.replace(cfg, lr_schedule="constant"), 5) == 2e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        train.learning_rate_schedule(dataclasses.replace(cfg, lr_schedule="step"), 5)
    # a workdir written before lr_schedule existed (field absent) still resumes under the default config
    pairs = phantom_pairs(8, size=64)
    cfg = train.TrainConfig(model=TINY_MODEL, epochs=1, augment=1, batch_size=4)
    _, first = train.train(cfg, pairs, tmp_path, progress=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["lr_schedule"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="different config"):
        train.train(dataclasses.replace(cfg, lr_schedule="cosine"), pairs, tmp_path, progress=False)
    # killed after writing epoch 2's metrics (and half a line) but before its checkpoint: the rerun drops them
    with (tmp_path / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps({"epoch": 2, "loss": 1.0}) + '\n{"epoch": 3, "lo')
    _, state = train.train(cfg, pairs, tmp_path, progress=False)  # same config: resumes, nothing left to train
    assert int(state["step"]) == int(first["step"]) > 0
    assert [json.loads(r)["epoch"] for r in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]


def _run_tiny(workdir, extra_env=None, epochs=3, popen=False, args=()):
    env = dict(os.environ, **(extra_env or {}))
    cmd = [sys.executable, "-m", "experiments.train", "--config", "tiny", "--workdir", str(workdir), "--noprogress",
           f"--epochs={epochs}", *args]
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _params(workdir):
    _, params = train.load_trained(workdir, (64, 64))
    return jax.tree.leaves(jax.device_get(params))


def test_run_files_and_resume_after_sigkill_equal_uninterrupted(tmp_path):
    ref = tmp_path / "ref"
    stdout = _run_tiny(ref)
    assert "Dice before" in stdout and "Dice after" in stdout and "folding" in stdout
    for name in ("config.json", "experiment.json", "metrics.jsonl", "results.json", "pairs_network.csv"):
        assert (ref / name).is_file(), name
    recs = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in recs)
    res = json.loads((ref / "results.json").read_text())
    assert 0 <= res["dice_mean_after"] <= 1 and res["folding_percent"] >= 0
    # kill -9 during the second epoch, then rerun the same command
    killed = tmp_path / "killed"
    proc = _run_tiny(killed, popen=True)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "0").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists()
    _run_tiny(killed)
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]  # each epoch once
    for a, b in zip(_params(ref), _params(killed)):
        np.testing.assert_array_equal(a, b)


def _naive_dice(a, b, label):
    x, y = a == label, b == label
    return 2 * np.sum(x & y) / (np.sum(x) + np.sum(y)) if (x.sum() + y.sum()) else np.nan


def test_summarize_matches_naive_dice_per_structure_and_direction(tmp_path):
    pairs = phantom_pairs(6, seed=3, size=32, directions=("ED->ES", "ES->ED"))
    u = np.zeros(pairs.fixed.shape + (2,), np.float32)  # identity: after == before
    res = evaluation.summarize(pairs, evaluation.pair_table(pairs, u), 1.0)
    evaluation.write_results(tmp_path, res, pairs, evaluation.pair_table(pairs, u))
    naive = np.array([[_naive_dice(f, m, lab) for lab in (3, 1, 2)]
                      for f, m in zip(pairs.fixed_labels, pairs.moving_labels)])
    for j, name in enumerate(("LV", "RV", "MYO")):
        assert res[f"dice_{name}_before"] == pytest.approx(np.nanmean(naive[:, j]), abs=1e-5)
        assert res[f"dice_{name}_after"] == pytest.approx(np.nanmean(naive[:, j]), abs=1e-5)
    for d, key in (("ED->ES", "ed_to_es"), ("ES->ED", "es_to_ed")):
        sel = pairs.direction == d
        assert sel.any()
        assert res[f"dice_mean_after_{key}"] == pytest.approx(np.nanmean(np.nanmean(naive[sel], 1)), abs=1e-5)
    region = pairs.slice_region()
    for key in ("base", "mid", "apex"):
        sel = region == key
        assert sel.any()
        assert res[f"dice_mean_before_{key}"] == pytest.approx(np.nanmean(np.nanmean(naive[sel], 1)), abs=1e-5)
    for group in set(pairs.group.tolist()):
        sel = pairs.group == group
        assert res[f"dice_mean_after_group_{group.lower()}"] == pytest.approx(np.nanmean(np.nanmean(naive[sel], 1)),
                                                                              abs=1e-5)
    assert res["folding_percent"] == 0 and res["pairs"] == len(pairs) and res["folding_percent_es_to_ed"] == 0
    assert json.loads((tmp_path / "results.json").read_text()) == res
    rows = (tmp_path / "pairs_network.csv").read_text().splitlines()
    assert len(rows) == len(pairs) + 1 and rows[0].startswith("patient,group,slice,direction,")
    assert rows[1].split(",")[:4] == [pairs.patient[0], pairs.group[0], str(pairs.slice_index[0]), pairs.direction[0]]


def test_two_devices_equal_one(tmp_path):
    assert "devices: 1 x cpu" in _run_tiny(tmp_path / "one", epochs=1)
    two = _run_tiny(tmp_path / "two", epochs=1, extra_env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert "devices: 2 x cpu" in two
    for a, b in zip(_params(tmp_path / "one"), _params(tmp_path / "two")):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # the evaluation after training ran data parallel too (each device its shard, in chunks): same Dice per pair
    one, two = ((tmp_path / d / "pairs_network.csv").read_text().splitlines() for d in ("one", "two"))
    assert len(one) == len(two) > 2
    np.testing.assert_allclose([[float(v) for v in r.split(",")[4:]] for r in one[1:]],
                               [[float(v) for v in r.split(",")[4:]] for r in two[1:]], atol=2e-3)
    # --cpu_devices=2 (jax_num_cpu_devices, as in the inference test below) gives the same two devices
    flag = subprocess.run([sys.executable, "-m", "experiments.train", "--cpu_devices=2", "--data_dir",
                           str(tmp_path / "no_such_dir")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert flag.returncode == 2 and "devices: 2 x cpu" in flag.stdout and "no_such_dir" in flag.stderr
    bad = subprocess.run([sys.executable, "-m", "experiments.train", "--config", "tiny", "--cpu_devices=0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--cpu_devices must be >= 1" in bad.stderr


_SHARDED_INFERENCE = """
import sys, jax, numpy as np
jax.config.update("jax_num_cpu_devices", 2)
from jaxreg import training as train
from jaxreg.models import RegNetConfig
tr = train.Trainer(train.TrainConfig(model=RegNetConfig(encoder_features=(4, 8, 8, 8, 8), decoder_features=(8, 8, 8))),
                   (64, 64), infer_chunk=2)
from tests.test_train import _perturbed
params = _perturbed(tr.init_state()["params"])
f, m = np.random.default_rng(0).uniform(size=(2, 10, 64, 64)).astype(np.float32)
sharded = tr.eval_fields(params, *tr.shard_batch(f, m))  # 5 pairs a device: 2 chunks + a remainder each
odd = tr.eval_fields(params, f[:9], m[:9])  # not divisible by the devices: one device, chunked
np.savez(sys.argv[1], sharded=sharded, odd=odd, params=np.concatenate([x.ravel() for x in jax.tree.leaves(params)]))
"""


def test_inference_over_two_devices_equals_one(tmp_path):
    out = subprocess.run([sys.executable, "-c", _SHARDED_INFERENCE, str(tmp_path / "two.npz")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    two = np.load(tmp_path / "two.npz")
    tr = train.Trainer(train.TrainConfig(model=TINY_MODEL), (64, 64), infer_chunk=64)
    params = _perturbed(tr.init_state()["params"])
    np.testing.assert_array_equal(two["params"], np.concatenate([x.ravel() for x in jax.tree.leaves(params)]))
    f, m = np.random.default_rng(0).uniform(size=(2, 10, 64, 64)).astype(np.float32)
    whole = np.asarray(tr.eval_fields(params, f, m))
    assert 0.1 < np.abs(whole).max() < 100
    np.testing.assert_allclose(two["sharded"], whole, atol=1e-5)
    np.testing.assert_allclose(two["odd"], whole[:9], atol=1e-5)


def test_changed_config_in_same_workdir_is_refused_naming_the_field(tmp_path):
    cfg = train.TrainConfig(model=TINY_MODEL, epochs=1, augment=1, batch_size=4)
    ps = phantom_pairs(8, seed=0, size=64)
    train.train(cfg, ps, tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"different config \(alpha \(1000.0 vs 1.0\)"):
        train.train(dataclasses.replace(cfg, alpha=1.0), ps, tmp_path, progress=False)


def test_second_trainer_in_same_workdir_is_refused_until_the_first_ends(tmp_path):
    cfg = train.TrainConfig(model=TINY_MODEL, epochs=1, augment=1, batch_size=4)
    ps = phantom_pairs(8, seed=0, size=64)
    with train.lock(tmp_path):  # stands for another process training in tmp_path
        with pytest.raises(train.WorkdirBusy, match=f"pid {os.getpid()}"):
            train.train(cfg, ps, tmp_path, progress=False)
        assert not (tmp_path / "config.json").exists()  # refused before touching the run
    train.train(cfg, ps, tmp_path, progress=False)  # lock released: the run goes ahead
    assert (tmp_path / "config.json").exists()
