"""Loss weights as data, the device-resident loops (scan, dispatch) and population training (jaxreg.training)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg import training as train
from jaxreg.data import phantom_pairs
from jaxreg.errors import ConfigError
from jaxreg.training import loop, step
from jaxreg.training import workdir as wd
from tests.test_train import TINY_MODEL

CFG = train.TrainConfig(model=TINY_MODEL, epochs=1, augment=2, batch_size=4)


@pytest.fixture(scope="module")
def pairs():
    return phantom_pairs(6, seed=0, size=64)  # 6 pairs x augment 2 = 3 steps of 4 an epoch


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


@pytest.mark.parametrize("how", step.LOOPS)
def test_changing_loss_weights_does_not_recompile(pairs, how):
    tr = train.Trainer(CFG, (64, 64), loop=how)
    state = tr.init_state()
    data = tr.upload(pairs.fixed, pairs.moving, pairs.fixed_labels.astype(np.int32),
                     pairs.moving_labels.astype(np.int32))
    index = jnp.asarray(np.arange(8).reshape(2, 4) % len(pairs), jnp.int32)
    keys = jax.random.split(jax.random.key(0), 2)
    deform, valid = jnp.array([True, False]), jnp.array([True, True])
    losses_seen = []
    for w in ((1.0, 1e3, 5e4), (0.0, 10.0, 5e4), (1.0, 0.0, 0.0)):
        state, m = tr.run_steps(state, data, index, deform, keys, valid, step.loss_weights(
            dataclasses.replace(CFG, delta=w[0], alpha=w[1], beta=w[2])))
        losses_seen.append(float(m["loss"][0]))
    assert tr.compilations() == 1  # three weight settings, one compiled program
    assert len(set(losses_seen)) == 3  # and the weights did act


@pytest.mark.parametrize("how", step.LOOPS)
def test_device_loop_equals_the_per_step_loop(pairs, tmp_path, how):
    """train() (data on the device, chunks of steps as one scan or as dispatched steps, a padded last chunk)
    against the plain loop of jitted steps on host-gathered batches that every earlier version ran: the same
    parameters to float rounding."""
    cfg = dataclasses.replace(CFG, epochs=2)
    _, state = train.train(cfg, pairs, tmp_path, progress=False, chunk_steps=2, loop=how)  # 3 steps: chunks of 2, 1 padded
    tr = train.Trainer(cfg, (64, 64), steps_per_epoch=3)
    ref = tr.init_state()
    weights = step.loss_weights(cfg)
    for epoch in range(2):
        ekey = jax.random.fold_in(jax.random.key(cfg.seed), epoch)
        for i, (idx, deform) in enumerate(loop.epoch_batches(len(pairs), cfg, epoch)):
            ref, _ = tr.step(ref, pairs.fixed[idx], pairs.moving[idx], pairs.fixed_labels[idx].astype(np.int32),
                             pairs.moving_labels[idx].astype(np.int32), jax.random.fold_in(ekey, i),
                             jnp.asarray(deform), weights)
    assert int(state["step"]) == int(ref["step"]) == 6
    for a, b in zip(_leaves(state["params"]), _leaves(ref["params"])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    recs = wd.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in recs] == [1, 2] and all(np.isfinite(r["loss"]) for r in recs)


@pytest.mark.parametrize("how,member_chunk", [("dispatch", 1), ("dispatch", 2), ("scan", 1), ("scan", 4)])
def test_population_members_equal_their_single_runs(pairs, tmp_path, how, member_chunk):
    """2 settings x 2 seeds trained at once; each member against its own separate run (same seed, same data seed:
    the population's), for either loop and members mapped one at a time or vmapped together. Tolerance: float
    rounding of the mapped or vmapped step, 1e-4 relative."""
    members = [dataclasses.replace(CFG, alpha=a, beta=b, seed=s, data_seed=7)
               for (a, b) in ((1e3, 5e4), (10.0, 0.0)) for s in (0, 1)]
    tr, states, active = train.train_population(members, pairs, tmp_path / "pop", progress=False, loop=how,
                                                member_chunk=member_chunk)
    assert active.tolist() == [True] * 4
    recs = wd.read_metrics(tmp_path / "pop" / "metrics.jsonl")
    assert sorted((r["epoch"], r["member"]) for r in recs) == [(1, k) for k in range(4)]
    for k, m in enumerate(members):
        _, single = train.train(m, pairs, tmp_path / f"single{k}", progress=False)
        for a, b in zip(_leaves(step.unstack(states, k)["params"]), _leaves(single["params"])):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # members that started from one seed but trained with other weights ended apart: the weights acted per member
    p0, p2 = _leaves(step.unstack(states, 0)["params"]), _leaves(step.unstack(states, 2)["params"])
    assert max(float(np.abs(a - b).max()) for a, b in zip(p0, p2)) > 1e-4
    _, params = wd.load_trained(tmp_path / "pop", (64, 64), member=3)
    for a, b in zip(_leaves(params), _leaves(step.unstack(states, 3)["params"])):
        np.testing.assert_array_equal(a, b)


def test_killed_population_resumes_to_the_same_parameters(pairs, tmp_path):
    members = [dataclasses.replace(CFG, epochs=2, alpha=a) for a in (1e3, 100.0)]
    _, ref, _ = train.train_population(members, pairs, tmp_path / "ref", progress=False)

    def die(epoch, recs):
        raise KeyboardInterrupt  # stands for a kill after the first epoch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        train.train_population(members, pairs, tmp_path / "killed", progress=False, on_epoch=die)
    assert wd.has_checkpoint(tmp_path / "killed")
    _, resumed, _ = train.train_population(members, pairs, tmp_path / "killed", progress=False)
    for a, b in zip(_leaves(ref), _leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    assert [r["epoch"] for r in wd.read_metrics(tmp_path / "killed" / "metrics.jsonl")] == [1, 1, 2, 2]


def test_a_diverging_member_is_frozen_and_reported_the_others_go_on(pairs, tmp_path, capsys):
    members = [CFG, dataclasses.replace(CFG, beta=1e38, delta=1e38)]  # the second overflows to inf at once
    tr, states, active = train.train_population(members, pairs, tmp_path, progress=False)
    assert active.tolist() == [True, False]
    err = capsys.readouterr().err
    assert "member 1" in err and "non-finite loss at epoch 1, step 1" in err
    frozen = step.unstack(states, 1)
    init = tr.init_state(CFG.seed)
    for a, b in zip(_leaves(frozen["params"]), _leaves(init["params"])):  # frozen before its first update
        np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(x).all() for x in _leaves(step.unstack(states, 0)["params"]))
    recs = {r["member"]: r for r in wd.read_metrics(tmp_path / "metrics.jsonl")}
    assert recs[1]["active"] is False and recs[1]["frozen_at_step"] == 1 and recs[0]["active"] is True


def test_population_members_may_differ_only_in_weights_and_seed():
    with pytest.raises(ConfigError, match="member 1: batch_size 8 differs"):
        loop.population_configs([CFG, dataclasses.replace(CFG, batch_size=8)])
    out = loop.population_configs([CFG, dataclasses.replace(CFG, seed=3, alpha=1.0)])
    assert [m.data_seed for m in out] == [0, 0] and out[1].seed == 3  # one data seed: common random numbers
    assert json.loads(json.dumps([m.to_json() for m in out]))[1]["alpha"] == 1.0
    with pytest.raises(ConfigError, match="member 1: label_dice 0.1 differs"):  # the compiled step computes it or not
        loop.population_configs([CFG, dataclasses.replace(CFG, label_dice=0.1)])
