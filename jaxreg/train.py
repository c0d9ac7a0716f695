"""Training of the paper's network: multi-level NGF + curvature + label loss, Optax Adam, data parallel, Orbax resume.

Loss convention (see BUILD_NOTES.md, "Loss scales"): per output level l, on images average-pooled to that level,
    L_l = delta * NGF_pix + alpha * curvature_scale * curvature_pix + beta * label_ssd_pix / (0.5 * N * C)
where *_pix are jaxreg.losses with spacing=1 (pixel sums, displacement in level pixels), N the pixel count of the
finest level and C the label channels: at the finest level the label term is the mean squared one-hot error over
pixels and channels. Pixel sums weight a coarse level by its pixel count, so the levels are summed unweighted.
The flags take the paper's delta=1, alpha=1e3, beta=5e4, eps=0.1; `curvature_scale` (default 0.01) maps the
paper's alpha to our pixel-sum curvature. It was chosen by validation on a held-out fold (BUILD_NOTES.md): with
alpha acting at full strength (scale 1) the network is over-regularised (ACDC Dice 69 % against 78 % at 0.01).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxreg import losses, metrics, warp
from jaxreg.data import augment as augment_lib
from jaxreg.data.pairs import PairSet
from jaxreg.models import RegNet, RegNetConfig, dense_fields, finest_displacement

log = logging.getLogger(__name__)

NUM_CLASSES = 4


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One experiment. Defaults are the paper's recipe (Hering et al. 2019, Sec. 2)."""

    delta: float = 1.0
    alpha: float = 1e3
    curvature_scale: float = 0.01  # alpha_pixel_sum = alpha * curvature_scale (the paper's discretisation is unknown)
    beta: float = 5e4
    epsilon: float = 0.1
    squared_ngf: bool = True
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # "constant" (the paper) or "cosine" (decays to 0 over all epochs)
    batch_size: int = 30
    epochs: int = 40
    augment: int = 8  # passes over the training pairs per epoch: 1 original + (augment - 1) freshly deformed
    augment_stride: int = 16
    augment_max_disp: float = 3.0
    level_weights: tuple = (1.0, 1.0, 1.0)
    seed: int = 0
    model: RegNetConfig = RegNetConfig()

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(d: dict) -> "TrainConfig":
        d = dict(d)
        d["model"] = RegNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["model"].items()})
        d.setdefault("curvature_scale", 1.0)  # runs written before the field existed used alpha unscaled
        d.setdefault("lr_schedule", "constant")
        return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def level_losses(u, fixed, moving, fixed_oh, moving_oh, cfg: TrainConfig, n_finest: int):
    """Loss terms of one level for one sample: u `(*S, nd)` level pixels, images `(*S)`, one-hot `(*S, C)`."""
    d = losses.ngf(fixed, warp.warp(moving, u), eps=cfg.epsilon, squared=cfg.squared_ngf)
    r = losses.curvature(u)
    b = losses.label_ssd(fixed_oh, warp.warp(moving_oh, u)) / (0.5 * n_finest * fixed_oh.shape[-1])
    return d, r, b


def loss_fn(params, model: RegNet, batch, cfg: TrainConfig):
    """Batch mean of sum over levels of delta*D + alpha*curvature_scale*R + beta*B; returns (loss, terms)."""
    fixed, moving, fixed_oh, moving_oh = batch
    controls = model.apply(params, fixed, moving)
    spatial = fixed.shape[1:]
    fields = dense_fields(controls, spatial, cfg.model)
    n_finest = math.prod(spatial)
    tot = {"ngf": 0.0, "curvature": 0.0, "label": 0.0}
    for w, u, factor in zip(cfg.level_weights, fields, cfg.model.level_factors):
        pool = jax.vmap(lambda a, factor=factor: warp.downsample(a, factor, len(spatial)))
        f, m, fo, mo = pool(fixed), pool(moving), pool(fixed_oh), pool(moving_oh)
        d, r, b = jax.vmap(lambda *a: level_losses(*a, cfg, n_finest))(u, f, m, fo, mo)
        tot["ngf"] += w * jnp.mean(d)
        tot["curvature"] += w * jnp.mean(r)
        tot["label"] += w * jnp.mean(b)
    loss = cfg.delta * tot["ngf"] + cfg.alpha * cfg.curvature_scale * tot["curvature"] + cfg.beta * tot["label"]
    return loss, tot


def learning_rate_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """The Adam step size: a float for "constant", an optax schedule (step -> lr) for "cosine"."""
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    if cfg.lr_schedule == "cosine":
        return optax.cosine_decay_schedule(cfg.learning_rate, max(cfg.epochs * steps_per_epoch, 1))
    raise ValueError(f"lr_schedule must be 'constant' or 'cosine'; got {cfg.lr_schedule!r}")


@dataclasses.dataclass
class Trainer:
    """Holds the jitted step, shardings and the model; pure functions underneath."""

    cfg: TrainConfig
    image_shape: tuple
    steps_per_epoch: int = 1  # sets the length of a decaying learning-rate schedule
    # inference: pairs per lax.map chunk on each device, keeping a CPU core's activations in cache (8 on CPU; None on
    # an accelerator: the whole shard at once, which a GPU wants)
    infer_chunk: int | None = None

    def __post_init__(self):
        self.model = RegNet(self.cfg.model)
        self.tx = optax.adam(learning_rate_schedule(self.cfg, self.steps_per_epoch))
        devices = jax.devices()
        if self.infer_chunk is None:
            self.infer_chunk = 8 if devices[0].platform == "cpu" else 2**31 - 1
        self.mesh = jax.make_mesh((len(devices),), ("data",), devices=devices,
                                  axis_types=(jax.sharding.AxisType.Auto,))
        self.data_sharding = NamedSharding(self.mesh, P("data"))
        self.replicated = NamedSharding(self.mesh, P())
        self.step = jax.jit(self._step, donate_argnums=(0,))
        self.eval_fields = jax.jit(self._eval_fields)

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    def init_state(self) -> dict:
        x = jnp.zeros((1,) + tuple(self.image_shape), jnp.float32)
        params = self.model.init(jax.random.key(self.cfg.seed), x, x)
        state = {"params": params, "opt_state": self.tx.init(params), "step": jnp.zeros((), jnp.int32)}
        return jax.device_put(state, self.replicated)

    def _step(self, state, fixed, moving, fixed_labels, moving_labels, key, deform):
        cfg = self.cfg
        aug = augment_lib.augment_batch(key, fixed, moving, fixed_labels, moving_labels, NUM_CLASSES,
                                        cfg.augment_stride, cfg.augment_max_disp)
        plain = augment_lib.onehot_pair(fixed, moving, fixed_labels, moving_labels, NUM_CLASSES)
        batch = jax.tree.map(lambda a, b: jnp.where(deform, a, b), aug, plain)
        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], self.model, batch, cfg)
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
        return new, dict(terms, loss=loss)

    def _eval_fields(self, params, fixed, moving):
        def chunked(params, f, m):
            def fields(f, m):
                return finest_displacement(self.model.apply(params, f, m), f.shape[1:], self.cfg.model)

            if f.shape[0] <= self.infer_chunk:
                return fields(f, m)
            # chunks of `infer_chunk` pairs in sequence (lax.map vmaps within a chunk, remainder included), so each
            # chunk's activations stay in cache
            return jax.lax.map(lambda fm: fields(fm[0][None], fm[1][None])[0], (f, m), batch_size=self.infer_chunk)

        if self.num_devices > 1 and fixed.shape[0] % self.num_devices == 0:
            # data parallel: each device runs its shard of the batch in chunks
            return jax.shard_map(chunked, mesh=self.mesh, in_specs=(P(), P("data"), P("data")),
                                 out_specs=P("data"))(params, fixed, moving)
        return chunked(params, fixed, moving)

    def shard_batch(self, *arrays):
        return [jax.device_put(a, self.data_sharding) for a in arrays]


def epoch_batches(n: int, cfg: TrainConfig, epoch: int, multiple: int):
    """Deterministic (per seed and epoch) list of (indices, deform flag) for one epoch; drops the ragged tail."""
    rng = np.random.default_rng([cfg.seed, epoch])
    order = np.concatenate([rng.permutation(n) for _ in range(max(cfg.augment, 1))])
    flags = np.concatenate([np.full(n, p > 0) for p in range(max(cfg.augment, 1))])
    bs = cfg.batch_size
    if bs % multiple:
        raise ValueError(f"batch_size {bs} must be divisible by the number of devices ({multiple})")
    steps = len(order) // bs
    if steps == 0:
        raise ValueError(f"batch_size {bs} exceeds the {len(order)} samples of an epoch")
    perm = rng.permutation(steps)  # mix original and deformed passes
    return [(order[s * bs:(s + 1) * bs], bool(flags[s * bs])) for s in perm]


class _Checkpoints:
    """Orbax CheckpointManager wrapper: one checkpoint per epoch (state + epoch), keep the last few."""

    def __init__(self, workdir: pathlib.Path, keep: int = 3):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.mngr = ocp.CheckpointManager(
            (workdir / "checkpoints").absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False),
        )

    def latest_epoch(self):
        return self.mngr.latest_step()

    def save(self, epoch: int, state):
        self.mngr.save(epoch, args=self.ocp.args.StandardSave(jax.device_get(state)))
        self.mngr.wait_until_finished()

    def restore(self, epoch: int, like):
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), jax.device_get(like))
        return self.mngr.restore(epoch, args=self.ocp.args.StandardRestore(abstract))

    def close(self):
        self.mngr.close()


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


class WorkdirBusy(RuntimeError):
    """Another process is training in the same workdir (two writers would corrupt its checkpoints)."""


@contextlib.contextmanager
def workdir_lock(workdir):
    """Exclusive advisory lock on `workdir/.lock` (flock, released when the process ends, even by SIGKILL)."""
    path = pathlib.Path(workdir) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise WorkdirBusy(f"{workdir}: another process (pid {holder}) is training in this workdir; wait for it "
                              f"or use another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def train(cfg: TrainConfig, train_pairs: PairSet, workdir, progress: bool = True,
          on_epoch: Callable[[int, dict], Any] | None = None) -> tuple[Trainer, dict]:
    """Trains (or resumes) in `workdir`; returns the trainer and the final state. Writes config.json, metrics.jsonl.

    Holds `workdir_lock` while it runs: a second process training in the same workdir gets `WorkdirBusy`.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with workdir_lock(workdir):
        return _train_locked(cfg, train_pairs, workdir, progress, on_epoch)


def _train_locked(cfg, train_pairs, workdir, progress, on_epoch):
    cfg_path = workdir / "config.json"
    if cfg_path.exists():
        saved = TrainConfig.from_json(json.loads(cfg_path.read_text()))  # fields added later take their old meaning
        if saved != TrainConfig.from_json(json.loads(json.dumps(cfg.to_json()))):
            raise ValueError(f"{cfg_path}: workdir holds a run with a different config; use a new --workdir")
    else:
        cfg_path.write_text(json.dumps(cfg.to_json(), indent=2))
    image_shape = train_pairs.fixed.shape[1:]
    n = len(train_pairs)
    trainer = Trainer(cfg, image_shape, steps_per_epoch=len(epoch_batches(n, cfg, 0, len(jax.devices()))))
    state = trainer.init_state()
    ckpt = _Checkpoints(workdir)
    start = 0
    latest = ckpt.latest_epoch()
    if latest is not None:
        state = jax.device_put(ckpt.restore(latest, state), trainer.replicated)
        start = latest + 1
        log.info("resumed from %s after epoch %d of %d", workdir, latest + 1, cfg.epochs)
    metrics_path = workdir / "metrics.jsonl"
    _keep_metrics(metrics_path, start)
    root_key = jax.random.key(cfg.seed)
    for epoch in range(start, cfg.epochs):
        batches = epoch_batches(n, cfg, epoch, trainer.num_devices)
        ekey = jax.random.fold_in(root_key, epoch)
        sums, t0 = {}, time.time()
        bar = _progress(enumerate(batches), len(batches), f"epoch {epoch + 1}/{cfg.epochs}", progress)
        for i, (idx, deform) in bar:
            arrays = trainer.shard_batch(train_pairs.fixed[idx], train_pairs.moving[idx],
                                         train_pairs.fixed_labels[idx].astype(np.int32),
                                         train_pairs.moving_labels[idx].astype(np.int32))
            state, m = trainer.step(state, *arrays, jax.random.fold_in(ekey, i), jnp.asarray(deform))
            m = {k: float(v) for k, v in m.items()}
            if not all(np.isfinite(v) for v in m.values()):
                raise FloatingPointError(f"non-finite loss at epoch {epoch} step {i}: {m}")
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            if progress and hasattr(bar, "set_postfix"):
                bar.set_postfix({k: f"{v:.3g}" for k, v in m.items()})
        rec = {"epoch": epoch + 1, "steps": int(state["step"]), "seconds": round(time.time() - t0, 2),
               **{k: v / len(batches) for k, v in sums.items()}}
        with metrics_path.open("a") as fh:  # before the checkpoint: a kill in between reruns the epoch (trimmed above)
            fh.write(json.dumps(rec) + "\n")
        ckpt.save(epoch, state)
        log.info("epoch %d: %s", epoch + 1, rec)
        if on_epoch is not None:
            on_epoch(epoch, rec)
    ckpt.close()
    return trainer, state


def read_metrics(path) -> list[dict]:
    """The per-epoch records of a `metrics.jsonl`, skipping a line cut short by a kill; [] if there is no file."""
    path = pathlib.Path(path)
    recs = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("epoch"), int):
            recs.append(rec)
    return recs


def _keep_metrics(path: pathlib.Path, epochs_done: int):
    """Keeps metrics.jsonl's records of the first `epochs_done` epochs (those with a checkpoint): a run killed after
    writing an epoch's record but before its checkpoint reruns that epoch, which then appears once."""
    if not path.is_file():
        return
    keep = "".join(json.dumps(r) + "\n" for r in read_metrics(path) if r["epoch"] <= epochs_done)
    if keep != path.read_text():
        path.write_text(keep)


def predict(trainer: Trainer, params, fixed: np.ndarray, moving: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Finest-level displacements `(N, *S, nd)` pixels for arrays `(N, *S)`, batched (padded to a fixed shape)."""
    n = len(fixed)
    bs = min(batch_size, max(n, 1))
    bs = int(math.ceil(bs / trainer.num_devices) * trainer.num_devices)
    out = []
    for s in range(0, n, bs):
        f, m = fixed[s:s + bs], moving[s:s + bs]
        pad = bs - len(f)
        if pad:
            f = np.concatenate([f, np.zeros((pad,) + f.shape[1:], f.dtype)])
            m = np.concatenate([m, np.zeros((pad,) + m.shape[1:], m.dtype)])
        f, m = trainer.shard_batch(f, m)
        out.append(np.asarray(trainer.eval_fields(params, f, m))[: bs - pad])
    return np.concatenate(out) if out else np.zeros((0,) + fixed.shape[1:] + (fixed.ndim - 1,), np.float32)


STRUCTURE_NAMES = {3: "LV", 1: "RV", 2: "MYO"}


def evaluate(trainer: Trainer, params, pairs: PairSet, workdir=None, batch_size: int = 64) -> dict:
    """Dice per structure before/after, folding fraction and inference time; per-pair CSV + results.json in workdir."""
    u = predict(trainer, params, pairs.fixed[:batch_size], pairs.moving[:batch_size], batch_size)  # compile
    t0 = time.perf_counter()
    u = predict(trainer, params, pairs.fixed, pairs.moving, batch_size)
    seconds = time.perf_counter() - t0
    return summarize(pairs, u, seconds, workdir)


@jax.jit
def _pair_metrics(fixed_labels, moving_labels, u):
    warped = jnp.argmax(warp.warp_labels(moving_labels, u, NUM_CLASSES), axis=-1)
    return (metrics.dice(fixed_labels, moving_labels, (3, 1, 2)), metrics.dice(fixed_labels, warped, (3, 1, 2)),
            metrics.folding_fraction(u))


def summarize(pairs: PairSet, u: np.ndarray, seconds: float, workdir=None, method: str = "network") -> dict:
    """Dice (LV, RV, MYO, mean; mean per direction) before/after warping the moving labels with u, folding; CSV/JSON.

    u: `(N, H, W, 2)` pixels. Subgroup means: `dice_mean_{before,after}_ed_to_es` (ED moving) and `_es_to_ed`,
    `_base`, `_mid`, `_apex` (`PairSet.slice_region`), and `_group_{g}` per pathology group (ACDC's Info.cfg
    Group, lower case: `_group_dcm`, `_group_nor`, ...); `folding_percent_{subgroup}` likewise.
    """
    fl, ml = pairs.fixed_labels.astype(np.int32), pairs.moving_labels.astype(np.int32)
    before, after, fold = (np.asarray(a) for a in jax.vmap(_pair_metrics)(fl, ml, jnp.asarray(u)))
    names = ["LV", "RV", "MYO"]
    res = {"method": method, "pairs": len(pairs), "patients": len(pairs.patients)}
    for tag, d in (("before", before), ("after", after)):
        for j, nm in enumerate(names):
            res[f"dice_{nm}_{tag}"] = float(np.nanmean(d[:, j]))
        res[f"dice_mean_{tag}"] = float(np.nanmean(np.nanmean(d, axis=1)))
    # subgroups: direction (ED->ES -> key ed_to_es), slice region (base, mid, apex), pathology (group_dcm, ...)
    directions = [d.lower().replace("->", "_to_") for d in np.asarray(pairs.direction).tolist()]
    pathology = ["group_" + str(g).lower() for g in np.asarray(pairs.group).tolist()]
    for labels in (np.array(directions), pairs.slice_region(), np.array(pathology)):
        for key in sorted(set(labels.tolist())):
            sel = labels == key
            res[f"dice_mean_before_{key}"] = float(np.nanmean(np.nanmean(before[sel], axis=1)))
            res[f"dice_mean_after_{key}"] = float(np.nanmean(np.nanmean(after[sel], axis=1)))
            res[f"folding_percent_{key}"] = float(100 * fold[sel].mean())
    res["folding_percent"] = float(100 * fold.mean())
    res["pairs_with_folding"] = int((fold > 0).sum())
    res["seconds_per_pair"] = seconds / max(len(pairs), 1)
    res["pairs_per_second"] = len(pairs) / seconds if seconds > 0 else float("inf")
    if workdir is not None:
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        with (workdir / f"pairs_{method}.csv").open("w") as fh:
            fh.write("patient,group,slice,direction," + ",".join(f"dice_{n}_before" for n in names) + ","
                     + ",".join(f"dice_{n}_after" for n in names) + ",folding_percent\n")
            for i in range(len(pairs)):
                fh.write(f"{pairs.patient[i]},{pairs.group[i]},{pairs.slice_index[i]},{pairs.direction[i]},"
                         + ",".join(f"{v:.4f}" for v in before[i]) + "," + ",".join(f"{v:.4f}" for v in after[i])
                         + f",{100 * fold[i]:.4f}\n")
        (workdir / f"results_{method}.json" if method != "network" else workdir / "results.json").write_text(
            json.dumps(res, indent=2))
    return res


def _open_run(workdir, epoch: int | None = None):
    """(TrainConfig, checkpoint manager, epoch) of the latest (or given) checkpoint in a training workdir."""
    workdir = pathlib.Path(workdir)
    cfg_path = workdir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: not a jaxreg training workdir (no config.json)")
    cfg = TrainConfig.from_json(json.loads(cfg_path.read_text()))
    ckpt = _Checkpoints(workdir)
    epoch = ckpt.latest_epoch() if epoch is None else epoch
    if epoch is None:
        raise FileNotFoundError(f"{workdir / 'checkpoints'}: no checkpoint")
    return cfg, ckpt, epoch


def load_trained(workdir, image_shape=(112, 112), epoch: int | None = None):
    """(Trainer, params) restored from a training workdir."""
    cfg, ckpt, epoch = _open_run(workdir, epoch)
    trainer = Trainer(cfg, tuple(image_shape))
    state = ckpt.restore(epoch, trainer.init_state())
    ckpt.close()
    return trainer, jax.device_put(state["params"], trainer.replicated)




def identity_terms(pairs: PairSet) -> dict:
    """Mean loss terms at u = 0 over a PairSet: NGF (squared/unsquared) and label SSD as pixel sums, and the label
    term as the training loss normalises it (mean squared one-hot error). The check behind the loss convention."""
    f, m = jnp.asarray(pairs.fixed), jnp.asarray(pairs.moving)
    fo = jax.nn.one_hot(pairs.fixed_labels, NUM_CLASSES)
    mo = jax.nn.one_hot(pairs.moving_labels, NUM_CLASSES)
    n = math.prod(pairs.fixed.shape[1:])
    ssd = jax.vmap(losses.label_ssd)(fo, mo)
    return {"ngf_pix": float(jnp.mean(jax.vmap(losses.ngf)(f, m))),
            "ngf_unsquared_pix": float(jnp.mean(jax.vmap(lambda a, b: losses.ngf(a, b, squared=False))(f, m))),
            "label_ssd_pix": float(jnp.mean(ssd)),
            "label_mse": float(jnp.mean(ssd) / (0.5 * n * NUM_CLASSES))}
