"""The training loop: a single run (`train`) or a population of members at once (`train_population`).

The training set is uploaded to the device once; each epoch's batch order (numpy, seeded by the data seed and the
epoch: the same as every earlier version of this loop) goes up as one small index array, and its steps run in
chunks of `chunk_steps` (`Trainer.run_steps`: one `lax.scan` on an accelerator, asynchronously dispatched steps on
XLA:CPU), the host reading the metrics once per chunk: progress bar and NaN check per chunk, naming the step. One checkpoint per epoch; a rerun resumes after the last.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg.data.pairs import PairSet
from jaxreg.errors import ConfigError, TrainingDiverged
from jaxreg.training import workdir as wd
from jaxreg.training.config import TrainConfig
from jaxreg.training.step import Trainer, loss_weights, stack, steps_of

DEFAULT_CHUNK = 32  # steps per chunk at most: the host checks and reports this often


def epoch_batches(n: int, cfg: TrainConfig, epoch: int, multiple: int = 1):
    """Deterministic (per data seed and epoch) list of (indices, deform flag) for one epoch; drops the ragged tail."""
    rng = np.random.default_rng([cfg.resolved_data_seed, epoch])
    order = np.concatenate([rng.permutation(n) for _ in range(cfg.augment)])
    flags = np.concatenate([np.full(n, p > 0) for p in range(cfg.augment)])
    bs = cfg.batch_size
    if bs % multiple:
        raise ConfigError(f"batch_size {bs} must be divisible by the number of devices ({multiple})")
    steps = len(order) // bs
    if steps == 0:
        raise ConfigError(f"batch_size {bs} exceeds the {len(order)} samples of an epoch ({n} training pairs x "
                          f"augment {cfg.augment})")
    perm = rng.permutation(steps)  # mix original and deformed passes
    return [(order[s * bs:(s + 1) * bs], bool(flags[s * bs])) for s in perm]


def chunk_plan(steps: int, chunk_steps: int | None) -> tuple[int, int]:
    """(chunks, chunk length) covering `steps` with chunks of equal length, each at most `chunk_steps`."""
    limit = DEFAULT_CHUNK if chunk_steps is None else chunk_steps
    if limit < 1:
        raise ConfigError(f"chunk_steps must be >= 1; got {limit}")
    chunks = math.ceil(steps / min(limit, steps))
    return chunks, math.ceil(steps / chunks)


def _epoch_inputs(n, cfg, epoch, trainer, chunks, length):
    """Index `(C, L, B)`, deform and valid `(C, L)`, keys `(C, L)` of one epoch, padded to whole chunks."""
    batches = epoch_batches(n, cfg, epoch, trainer.num_devices)
    steps = len(batches)
    pad = chunks * length - steps
    index = np.stack([b for b, _ in batches] + [batches[0][0]] * pad).astype(np.int32)
    deform = np.array([d for _, d in batches] + [False] * pad)
    valid = np.arange(chunks * length) < steps
    ekey = jax.random.fold_in(jax.random.key(cfg.resolved_data_seed), epoch)
    keys = jax.vmap(lambda i: jax.random.fold_in(ekey, i))(jnp.arange(chunks * length))
    shape = (chunks, length)
    return (index.reshape(shape + index.shape[1:]), deform.reshape(shape), valid.reshape(shape),
            keys.reshape(shape), steps)


def _progress(total, desc, enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def _device_data(trainer: Trainer, pairs: PairSet):
    return trainer.upload(np.asarray(pairs.fixed, np.float32), np.asarray(pairs.moving, np.float32),
                          np.asarray(pairs.fixed_labels, np.int32), np.asarray(pairs.moving_labels, np.int32))


def train(cfg: TrainConfig, train_pairs: PairSet, workdir, progress: bool = True,
          on_epoch: Callable[[int, dict], Any] | None = None, chunk_steps: int | None = None,
          loop: str | None = None):
    """Trains (or resumes) in `workdir`; returns (trainer, final state). Writes config.json, metrics.jsonl, checkpoints.

    `loop`: "scan" or "dispatch" (`jaxreg.training.step`; default by device), the same numbers either way.

    Checks the config first (ConfigError), then holds `workdir.lock` while it runs: a second process training in
    the same workdir gets `WorkdirBusy`.
    """
    cfg.validate()
    workdir = wd.prepare(workdir)
    with wd.lock(workdir):
        return train_locked(cfg, train_pairs, workdir, progress, on_epoch, chunk_steps, loop)


def train_locked(cfg: TrainConfig, train_pairs: PairSet, workdir, progress: bool = True,
                 on_epoch: Callable[[int, dict], Any] | None = None, chunk_steps: int | None = None,
                 loop: str | None = None):
    """`train` for a caller that already holds `workdir.lock(workdir)` (e.g. a CV fold that evaluates after)."""
    workdir = pathlib.Path(workdir)
    n = len(train_pairs)
    trainer = Trainer(cfg, train_pairs.fixed.shape[1:], steps_per_epoch=len(epoch_batches(n, cfg, 0, len(jax.devices()))),
                      loop=loop)
    wd.write_config(workdir, cfg)
    ckpt = wd.Checkpoints(workdir)
    state = trainer.init_state()
    restored, latest = ckpt.restore_latest(state)
    start = 0 if latest is None else latest + 1
    if restored is not None:
        state = jax.device_put(restored, trainer.replicated)
    metrics_path = workdir / "metrics.jsonl"
    wd.keep_metrics(metrics_path, start)
    data = _device_data(trainer, train_pairs)
    weights = loss_weights(cfg)
    chunks, length = chunk_plan(steps_of(n, cfg), chunk_steps)
    for epoch in range(start, cfg.epochs):
        index, deform, valid, keys, steps = _epoch_inputs(n, cfg, epoch, trainer, chunks, length)
        sums, t0 = {}, time.time()
        bar = _progress(steps, f"epoch {epoch + 1}/{cfg.epochs}", progress)
        for c in range(chunks):
            state, m = trainer.run_steps(state, data, index[c], deform[c], keys[c], valid[c], weights)
            m = {k: np.asarray(v)[valid[c]] for k, v in jax.device_get(m).items()}  # one host read per chunk
            bad = np.flatnonzero(~np.all([np.isfinite(v) for v in m.values()], axis=0))
            if bad.size:
                step = c * length + int(bad[0])
                raise TrainingDiverged(f"{workdir}: non-finite loss at epoch {epoch + 1}, step {step + 1} of "
                                       f"{steps} ({ {k: float(v[bad[0]]) for k, v in m.items()} }); lower "
                                       "--learning_rate or the loss weights")
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
            if bar is not None:
                bar.update(len(m["loss"]))
                bar.set_postfix({k: f"{v[-1]:.3g}" for k, v in m.items()})
        if bar is not None:
            bar.close()
        rec = {"epoch": epoch + 1, "steps": int(state["step"]), "seconds": round(time.time() - t0, 2),
               **{k: v / steps for k, v in sums.items()}}
        wd.append_metrics(metrics_path, [rec])
        ckpt.save(epoch, state)
        print(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in rec.items()
                                                             if k not in ("epoch",)), file=sys.stderr, flush=True)
        if on_epoch is not None:
            on_epoch(epoch, rec)
    ckpt.close()
    return trainer, state


# what population members may differ in: the loss weights and the seeds (not label_dice: whether the Dice loss is
# computed at all is decided once for the compiled step)
SHARED_OK = ("delta", "alpha", "curvature_scale", "beta", "seed", "data_seed")


def population_configs(members: Sequence[TrainConfig]) -> list[TrainConfig]:
    """Checked member configs with one shared data seed (the first member's): ConfigError naming a field that
    differs between members in anything but the loss weights and the initialisation seed."""
    if not members:
        raise ConfigError("a population needs at least one member")
    for m in members:
        m.validate()
    first = members[0]
    data_seed = first.resolved_data_seed
    out = []
    for k, m in enumerate(members):
        for f in dataclasses.fields(TrainConfig):
            if f.name not in SHARED_OK and getattr(m, f.name) != getattr(first, f.name):
                raise ConfigError(f"population member {k}: {f.name} {getattr(m, f.name)!r} differs from member 0's "
                                  f"{getattr(first, f.name)!r}; members differ only in {', '.join(SHARED_OK)}")
        out.append(dataclasses.replace(m, data_seed=data_seed))
    return out


def train_population(members: Sequence[TrainConfig], train_pairs: PairSet, workdir, progress: bool = True,
                     chunk_steps: int | None = None, member_chunk: int | None = None,
                     on_epoch: Callable[[int, list], Any] | None = None, loop: str | None = None):
    """Trains P members at once in `workdir`: returns (trainer, stacked states, active `(P,)`).

    Members differ in loss weights and initialisation seed; all see the same batches and augmentations (the first
    member's data seed: common random numbers, so differences between members are not batch noise). Member k's
    parameters equal those of a single `train(members[k] with that data seed)` up to float rounding. A member
    whose loss goes non-finite is frozen at its last good state and reported (member, epoch, step); the others
    go on. metrics.jsonl: one record per member per epoch (`member`); one checkpoint per epoch for all of them.
    `member_chunk`: members vmapped together (default 1 on CPU, all on an accelerator); `loop` as in `train`.
    """
    members = population_configs(members)
    workdir = wd.prepare(workdir)
    with wd.lock(workdir):
        return train_population_locked(members, train_pairs, workdir, progress, chunk_steps, member_chunk, on_epoch,
                                       loop)


def train_population_locked(members, train_pairs, workdir, progress=True, chunk_steps=None, member_chunk=None,
                            on_epoch=None, loop=None):
    """`train_population` for a caller holding `workdir.lock(workdir)`; `members` from `population_configs`."""
    cfg = members[0]
    n = len(train_pairs)
    trainer = Trainer(cfg, train_pairs.fixed.shape[1:], steps_per_epoch=len(epoch_batches(n, cfg, 0, len(jax.devices()))),
                      member_chunk=member_chunk, loop=loop)
    wd.write_config(workdir, list(members))
    P = len(members)
    state = {"members": stack([trainer.init_state(m.seed) for m in members]), "active": jnp.ones(P, bool)}
    ckpt = wd.Checkpoints(workdir)
    restored, latest = ckpt.restore_latest(state)
    start = 0 if latest is None else latest + 1
    if restored is not None:
        state = restored
    metrics_path = workdir / "metrics.jsonl"
    wd.keep_metrics(metrics_path, start)
    data = _device_data(trainer, train_pairs)
    weights = stack([loss_weights(m) for m in members])
    chunks, length = chunk_plan(steps_of(n, cfg), chunk_steps)
    states, active = jax.device_put(state["members"]), jax.device_put(state["active"])
    for epoch in range(start, cfg.epochs):
        index, deform, valid, keys, steps = _epoch_inputs(n, cfg, epoch, trainer, chunks, length)
        sums, frozen, t0 = {}, {}, time.time()
        bar = _progress(steps, f"epoch {epoch + 1}/{cfg.epochs} ({P} members)", progress)
        for c in range(chunks):
            was = np.asarray(active)
            states, active, m = trainer.population_run_steps(states, active, data, index[c], deform[c], keys[c],
                                                             valid[c], weights)
            m = {k: np.asarray(v)[valid[c]] for k, v in jax.device_get(m).items()}  # (steps, P), one read per chunk
            now = np.asarray(active)
            for k in np.flatnonzero(was & ~now):
                bad = np.flatnonzero(~np.isfinite(m["loss"][:, k]))
                step = c * length + (int(bad[0]) if bad.size else 0)
                frozen[int(k)] = step + 1
                print(f"warning: {workdir}: member {k} (delta {members[k].delta:g}, alpha {members[k].alpha:g}, "
                      f"beta {members[k].beta:g}, seed {members[k].seed}): non-finite loss at epoch {epoch + 1}, "
                      f"step {step + 1}; frozen at its last good state", file=sys.stderr, flush=True)
            for k, v in m.items():
                v = np.where(np.isfinite(v), v, 0.0)
                sums[k] = sums.get(k, 0.0) + v.sum(0)
            if bar is not None:
                bar.update(len(m["loss"]))
        if bar is not None:
            bar.close()
        if not np.asarray(active).any():
            raise TrainingDiverged(f"{workdir}: every member's loss became non-finite by epoch {epoch + 1}; lower "
                                   "--learning_rate or the loss weights")
        seconds = round(time.time() - t0, 2)
        recs = [{"epoch": epoch + 1, "member": k, "steps": (epoch + 1) * steps, "seconds": seconds,
                 "active": bool(np.asarray(active)[k]), **({"frozen_at_step": frozen[k]} if k in frozen else {}),
                 **{name: float(v[k]) / steps for name, v in sums.items()}} for k in range(P)]
        wd.append_metrics(metrics_path, recs)
        ckpt.save(epoch, {"members": states, "active": active})
        print(f"epoch {epoch + 1}/{cfg.epochs}: {P} members in {seconds:.1f} s, label term "
              + " ".join(f"{r['label']:.4f}" for r in recs), file=sys.stderr, flush=True)
        if on_epoch is not None:
            on_epoch(epoch, recs)
    ckpt.close()
    return trainer, states, np.asarray(active)
