"""The training step, pure: augmentation, the multi-level loss (`jaxreg.objective`) with its weights as data, Adam.

`Trainer` holds the model, the optimiser, the device mesh and the jitted programs built from these functions:
    step(state, fixed, moving, fixed_labels, moving_labels, key, deform, weights) -> (state, metrics)
    run_steps(state, data, index, deform, keys, valid, weights)  # a chunk of steps, one host read
    fields(params, fixed, moving) -> u `(B, *S, nd)` pixels (inference, chunked on CPU)
    terms(params, fixed, moving, fixed_onehot, moving_onehot) -> the objective's per-pair terms (scoring)
and their population forms over P members stacked on a leading axis (`population_run_steps`). Loss weights are
arrays (`objective.weights`), so one compiled program serves every (delta, alpha, beta).

A chunk of steps runs one of two ways (`Trainer.loop`), with the same numbers:
- "scan" (accelerators): the chunk is one `lax.scan` program; the host waits once per chunk.
- "dispatch" (XLA:CPU): one jitted step program per step, dispatched asynchronously from Python (no host sync
  inside the chunk), and a population's members one jitted member step after another on one shared batch.
  XLA:CPU runs this network's convolution gradients ~35x slower inside a while loop (any `lax.scan`,
  `fori_loop` or `lax.map` body; jax-ml/jax#12868): 20.2 s against 0.56 s a step at batch 30 x 112^2.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxreg import conditioning, objective
from jaxreg.data import augment as augment_lib
from jaxreg.errors import ConfigError
from jaxreg.models import RegNet, dense_fields, finest_displacement
from jaxreg.runtime import chunks
from jaxreg.training.config import TrainConfig

NUM_CLASSES = 4
LOOPS = ("scan", "dispatch")


def loss_weights(cfg: TrainConfig) -> dict:
    """The recipe's weights as arrays (`objective.weights`): delta, alpha_eff, beta, beta * label_dice."""
    return objective.weights(cfg.delta, cfg.alpha, cfg.beta, cfg.curvature_scale, cfg.label_dice)


def loss_fn(params, model: RegNet, batch, weights: dict, cfg: TrainConfig):
    """Batch mean of sum over levels of delta*D + alpha_eff*R + beta*(B + label_dice*Dice loss) (`objective`);
    returns (loss, unweighted batch-mean terms).

    A weight-conditioned recipe's batch carries per-sample ratios `(B, 3)` to `weights` (the centre): sample b is
    conditioned on them, weighted by `weights * ratios[b]` and divided by `conditioning.loss_scale(ratios[b])`.
    """
    fixed, moving, fixed_oh, moving_oh = batch[:4]
    if not cfg.conditioned:
        fields = dense_fields(model.apply(params, fixed, moving), fixed.shape[1:], cfg.model)
        terms = objective.multilevel_terms(fields, fixed, moving, fixed_oh, moving_oh, cfg.model.level_factors,
                                           cfg.level_weights, cfg.epsilon, cfg.squared_ngf, cfg.label_dice > 0)
        return objective.combine(terms, weights), terms
    ratios = batch[4]
    controls = model.apply(params, fixed, moving, conditioning.encode(ratios))
    fields = dense_fields(controls, fixed.shape[1:], cfg.model)
    terms = objective.multilevel_sample_terms(fields, fixed, moving, fixed_oh, moving_oh, cfg.model.level_factors,
                                              cfg.level_weights, cfg.epsilon, cfg.squared_ngf, cfg.label_dice > 0)
    per_sample = objective.combine(terms, conditioning.scaled_weights(weights, ratios))
    loss = jnp.mean(per_sample / conditioning.loss_scale(ratios, cfg.hyper_range))
    return loss, {k: jnp.mean(v) for k, v in terms.items()}


def learning_rate_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """The Adam step size: a float for "constant", an optax schedule (step -> lr) for "cosine"."""
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    if cfg.lr_schedule == "cosine":
        return optax.cosine_decay_schedule(cfg.learning_rate, max(cfg.epochs * steps_per_epoch, 1))
    raise ValueError(f"lr_schedule must be 'constant' or 'cosine'; got {cfg.lr_schedule!r}")


def prepare_batch(key, fixed, moving, fixed_labels, moving_labels, deform, cfg: TrainConfig):
    """Images `(B, *S)`, int labels -> (fixed, moving, one-hot, one-hot), freshly deformed (and intensity-augmented,
    `cfg.augment_gamma/bias/noise`) where `deform`; a weight-conditioned recipe appends each sample's loss-weight
    ratios `(B, 3)` (`conditioning.sample_ratios`)."""
    aug = augment_lib.augment_batch(key, fixed, moving, fixed_labels, moving_labels, NUM_CLASSES,
                                    cfg.augment_stride, cfg.augment_max_disp)
    if cfg.augment_gamma or cfg.augment_bias or cfg.augment_noise:  # static: off, the step is the paper's
        images = augment_lib.intensity_batch(jax.random.fold_in(key, 2), *aug[:2], cfg.augment_gamma,
                                             cfg.augment_bias, cfg.augment_noise)
        aug = (*images, *aug[2:])
    plain = augment_lib.onehot_pair(fixed, moving, fixed_labels, moving_labels, NUM_CLASSES)
    batch = jax.tree.map(lambda a, b: jnp.where(deform, a, b), aug, plain)
    if cfg.conditioned:
        ratios = conditioning.sample_ratios(jax.random.fold_in(key, 1), fixed.shape[0], cfg.hyper_range,
                                            cfg.hyper_zero_prob, cfg.hyper_axes_prob)
        batch = (*batch, ratios)
    return batch


def apply_step(state, batch, weights, model, tx, cfg: TrainConfig):
    """One Adam step of one member on a prepared batch -> (new state, metrics {loss, *objective.TERMS})."""
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], model, batch, weights, cfg)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, dict(terms, loss=loss)


def guarded_step(state, batch, weights, active, model, tx, cfg: TrainConfig):
    """`apply_step` that freezes a member: if the loss or the new parameters are not finite, or `active` is False,
    the old state is kept and the member is inactive. Returns (state, metrics, active)."""
    new, m = apply_step(state, batch, weights, model, tx, cfg)
    finite = jnp.isfinite(m["loss"]) & jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(new["params"])]))
    keep = active & finite
    new = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, state)
    return new, m, keep


def apply_population_step(states, batch, weights, active, model, tx, cfg: TrainConfig, member_chunk: int):
    """`guarded_step` for P stacked members on ONE batch (common random numbers).

    states, weights: pytrees with a leading member axis P; active `(P,)` bool. `member_chunk` members are vmapped
    together, the chunks run one after another (`lax.map`): P suits a GPU. (On XLA:CPU a `lax.map` is a while
    loop and slow, so `Trainer` dispatches members from the host there instead.) Returns (states, metrics `(P,)`
    each, active).
    """
    def one(args):
        state, w, on = args
        return guarded_step(state, batch, w, on, model, tx, cfg)

    members = active.shape[0]
    if member_chunk >= members:
        return jax.vmap(one)((states, weights, active))
    return jax.lax.map(one, (states, weights, active), batch_size=member_chunk if member_chunk > 1 else None)


@dataclasses.dataclass
class Trainer:
    """The jitted programs of one recipe (model, optimiser, shardings); pure functions underneath."""

    cfg: TrainConfig
    image_shape: tuple
    steps_per_epoch: int = 1  # sets the length of a decaying learning-rate schedule
    # inference: pairs per lax.map chunk on each device, keeping a CPU core's activations in cache (8 on CPU; None on
    # an accelerator: the whole shard at once, which a GPU wants)
    infer_chunk: int | None = None
    member_chunk: int | None = None  # population members vmapped together (None: 1 on CPU, all on an accelerator)
    loop: str | None = None  # how a chunk of steps runs: "scan" or "dispatch" (module docstring; None: by device)

    def __post_init__(self):
        self.model = RegNet(self.cfg.model)
        self.tx = optax.adam(learning_rate_schedule(self.cfg, self.steps_per_epoch))
        devices = jax.devices()
        accelerator = devices[0].platform != "cpu"
        if self.infer_chunk is None:
            self.infer_chunk = chunks.pair_chunk(devices[0].platform) or 2**31 - 1
        if self.member_chunk is None:
            self.member_chunk = 2**31 - 1 if accelerator else 1
        if self.loop is None:
            self.loop = "scan" if accelerator else "dispatch"
        if self.loop not in LOOPS:
            raise ConfigError(f"loop must be one of {', '.join(LOOPS)}; got {self.loop!r}")
        self.mesh = jax.make_mesh((len(devices),), ("data",), devices=devices,
                                  axis_types=(jax.sharding.AxisType.Auto,))
        self.data_sharding = NamedSharding(self.mesh, P("data"))
        self.replicated = NamedSharding(self.mesh, P())
        self.step = jax.jit(self._step, donate_argnums=(0,))
        self.eval_fields = jax.jit(self.fields)
        self.eval_terms = jax.jit(self.terms)
        # scan: one program a chunk; dispatch: one program a step (gather + augment + step), or for a population
        # one batch program a step and one program a member (group) step
        self._scan_steps = jax.jit(self._run_steps, donate_argnums=(0,))
        self._scan_population = jax.jit(self._population_run_steps, donate_argnums=(0, 1))
        self._gather_step = jax.jit(self._indexed_step, donate_argnums=(0,))
        self._batch = jax.jit(self._prepared_batch)
        self._member_step = jax.jit(self._members_step, donate_argnums=(0,))

    def compilations(self) -> int:
        """Programs compiled so far by the training steps (a test that weights never recompile reads this)."""
        return sum(f._cache_size() for f in (self.step, self._scan_steps, self._scan_population,
                                             self._gather_step, self._batch, self._member_step))

    def run_steps(self, state, data, index, deform, keys, valid, weights):
        """`len(index)` steps over the device-resident training set, the host waiting at most once.

        data: (fixed, moving, fixed_labels, moving_labels) `(N, *S)`; index `(T, B)` int; deform, valid `(T,)`
        bool; keys `(T,)`. A step with valid False changes nothing (pads the last chunk of an epoch, so every chunk
        has one length and compiles once). Returns (state, metrics `(T,)` each; 0 where not valid).
        """
        if self.loop == "scan":
            return self._scan_steps(state, data, index, deform, keys, valid, weights)
        ok, rows = np.asarray(valid), []
        for t in range(len(ok)):
            if ok[t]:
                state, m = self._gather_step(state, data, index[t], keys[t], deform[t], weights)
            else:
                m = _zero_metrics(())
            rows.append(m)
        return state, stack(rows)

    def population_run_steps(self, states, active, data, index, deform, keys, valid, weights):
        """`run_steps` for P stacked members seeing the same batches and augmentations (common random numbers);
        returns (states, active, metrics `(T, P)` each)."""
        if self.loop == "scan":
            return self._scan_population(states, active, data, index, deform, keys, valid, weights)
        members = active.shape[0]
        groups = [slice(a, min(a + self.member_chunk, members)) for a in range(0, members, self.member_chunk)]
        part = [(_take(states, g), _take(weights, g), active[g]) for g in groups]
        ok, rows = np.asarray(valid), []
        for t in range(len(ok)):
            if not ok[t]:
                rows.append(_zero_metrics((members,)))
                continue
            batch = self._batch(data, index[t], keys[t], deform[t])  # once for all members
            out = []
            for k, (s, w, a) in enumerate(part):
                s, m, a = self._member_step(s, batch, w, a)
                part[k] = (s, w, a)
                out.append(m)
            rows.append(jax.tree.map(lambda *x: jnp.concatenate(x), *out))
        states = jax.tree.map(lambda *x: jnp.concatenate(x), *[s for s, _, _ in part])
        active = jnp.concatenate([a for _, _, a in part])
        return states, active, stack(rows)

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    def init_state(self, seed: int | None = None) -> dict:
        """Parameters from `seed` (default the config's), Adam state, step 0; replicated over the devices."""
        x = jnp.zeros((1,) + tuple(self.image_shape), jnp.float32)
        c = jnp.zeros((1, conditioning.FEATURES), jnp.float32) if self.cfg.conditioned else None
        params = self.model.init(jax.random.key(self.cfg.seed if seed is None else seed), x, x, c)
        state = {"params": params, "opt_state": self.tx.init(params), "step": jnp.zeros((), jnp.int32)}
        return jax.device_put(state, self.replicated)

    def _step(self, state, fixed, moving, fixed_labels, moving_labels, key, deform, weights):
        batch = prepare_batch(key, fixed, moving, fixed_labels, moving_labels, deform, self.cfg)
        return apply_step(state, batch, weights, self.model, self.tx, self.cfg)

    def _indexed_step(self, state, data, idx, key, deform, weights):
        return self._step(state, *self._gather(data, idx), key, deform, weights)

    def _prepared_batch(self, data, idx, key, deform):
        return prepare_batch(key, *self._gather(data, idx), deform, self.cfg)

    def _members_step(self, states, batch, weights, active):
        """A group of stacked members (vmapped) on one prepared batch -> (states, metrics, active)."""
        if active.shape[0] == 1:  # one member: the plain step (a vmap over one member makes grouped convolutions)
            out = guarded_step(unstack(states, 0), batch, unstack(weights, 0), active[0], self.model, self.tx,
                               self.cfg)
            return jax.tree.map(lambda x: x[None], out)
        return jax.vmap(lambda s, w, a: guarded_step(s, batch, w, a, self.model, self.tx, self.cfg))(
            states, weights, active)

    def _gather(self, data, idx):
        """The batch `idx` `(B,)` of the device-resident training set, sharded over the devices."""
        arrays = [jnp.take(a, idx, axis=0) for a in data]
        if self.num_devices > 1:
            arrays = [jax.lax.with_sharding_constraint(a, self.data_sharding) for a in arrays]
        return arrays

    def _run_steps(self, state, data, index, deform, keys, valid, weights):
        """`run_steps` as one lax.scan (the "scan" loop)."""
        def body(state, xs):
            idx, flag, key, ok = xs

            def run(state):
                return self._step(state, *self._gather(data, idx), key, flag, weights)

            def skip(state):
                return state, _zero_metrics(())

            return jax.lax.cond(ok, run, skip, state)

        return jax.lax.scan(body, state, (index, deform, keys, valid))

    def _population_run_steps(self, states, active, data, index, deform, keys, valid, weights):
        """`population_run_steps` as one lax.scan (the "scan" loop)."""
        members = active.shape[0]

        def body(carry, xs):
            idx, flag, key, ok = xs

            def run(carry):
                states, active = carry
                f, m, fl, ml = self._gather(data, idx)
                batch = prepare_batch(key, f, m, fl, ml, flag, self.cfg)  # once for all members
                states, metrics, active = apply_population_step(states, batch, weights, active, self.model,
                                                                self.tx, self.cfg, self.member_chunk)
                return (states, active), metrics

            def skip(carry):
                return carry, _zero_metrics((members,))

            return jax.lax.cond(ok, run, skip, carry)

        (states, active), metrics = jax.lax.scan(body, (states, active), (index, deform, keys, valid))
        return states, active, metrics

    def fields(self, params, fixed, moving, ratios=None):
        """Finest-level displacements `(B, *S, nd)` pixels for `(B, *S)` images (jit-able; chunked on CPU).

        `ratios`: a weight-conditioned network's loss weights as ratios to its recipe's, `(3,)` or `(B, 3)`
        (delta, alpha, beta; `conditioning.ratios_of`); None: the recipe's own (ones). Unconditioned: must be None.
        """
        if not self.cfg.conditioned and ratios is not None:
            raise ValueError("this network is not weight-conditioned: it takes no loss weights")
        b = fixed.shape[0]
        ratios = jnp.ones((3,), jnp.float32) if ratios is None else jnp.asarray(ratios, jnp.float32)
        condition = jnp.broadcast_to(conditioning.encode(ratios), (b, conditioning.FEATURES))

        def chunked(params, f, m, c):
            def one(f, m, c):
                c = c if self.cfg.conditioned else None
                return finest_displacement(self.model.apply(params, f, m, c), f.shape[1:], self.cfg.model)

            return chunks.map_pairs(one, self.infer_chunk, f, m, c)  # each chunk's activations stay in cache

        if self.num_devices > 1 and b % self.num_devices == 0:
            # data parallel: each device runs its shard of the batch in chunks
            return jax.shard_map(chunked, mesh=self.mesh, in_specs=(P(), P("data"), P("data"), P("data")),
                                 out_specs=P("data"))(params, fixed, moving, condition)
        return chunked(params, fixed, moving, condition)

    def terms(self, params, fixed, moving, fixed_onehot, moving_onehot, ratios=None):
        """The training objective's unweighted per-pair terms `{ngf, curvature, label, dice_loss: (B,)}` summed over
        the levels (`objective.multilevel_sample_terms`, no augmentation) for `(B, *S)` images and one-hot labels
        `(B, *S, C)`; `ratios` as in `fields`. Weighted by `objective.weights` they give the loss the network was
        trained on (the Dice loss is computed only for a recipe with `label_dice` > 0, else 0, as in training)."""
        if not self.cfg.conditioned and ratios is not None:
            raise ValueError("this network is not weight-conditioned: it takes no loss weights")
        condition = None
        if self.cfg.conditioned:
            ratios = jnp.ones((3,), jnp.float32) if ratios is None else jnp.asarray(ratios, jnp.float32)
            condition = jnp.broadcast_to(conditioning.encode(ratios), (fixed.shape[0], conditioning.FEATURES))
        fields = dense_fields(self.model.apply(params, fixed, moving, condition), fixed.shape[1:], self.cfg.model)
        return objective.multilevel_sample_terms(fields, fixed, moving, fixed_onehot, moving_onehot,
                                                 self.cfg.model.level_factors, self.cfg.level_weights,
                                                 self.cfg.epsilon, self.cfg.squared_ngf, self.cfg.label_dice > 0)

    def upload(self, *arrays):
        """Arrays put once on every device (the training set of a device-resident loop)."""
        return [jax.device_put(a, self.replicated) for a in arrays]

    def shard_batch(self, *arrays):
        return [jax.device_put(a, self.data_sharding) for a in arrays]


def _zero_metrics(shape) -> dict:
    return {k: jnp.zeros(shape, jnp.float32) for k in (*objective.TERMS, "loss")}


def _take(tree, members: slice):
    return jax.tree.map(lambda x: x[members], tree)


def steps_of(n: int, cfg: TrainConfig) -> int:
    """Steps in one epoch of `n` training pairs (the ragged tail of each epoch is dropped)."""
    return (n * cfg.augment) // cfg.batch_size


def stack(trees):
    """Pytrees of one structure -> one pytree with a leading member axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, k: int):
    """Member `k` of a stacked pytree."""
    return jax.tree.map(lambda x: x[k], tree)


__all__ = ["LOOPS", "NUM_CLASSES", "Trainer", "apply_population_step", "apply_step", "guarded_step", "learning_rate_schedule", "loss_fn",
           "loss_weights", "prepare_batch", "stack", "steps_of", "unstack"]
