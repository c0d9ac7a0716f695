"""Patient-wise cross-validation: the experiment config, one fold end to end, baselines, fold status, CV workers.

An experiment = data + fold + TrainConfig (`ExperimentConfig`). `run_fold` trains fold k on the other folds'
patients (resumable) and scores its test patients; the run's identity (fold, num_folds, split seed, data source,
test patients) is stored in experiment.json under the workdir lock and checked on every resume and evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import subprocess
import time

import jax
import numpy as np

from jaxreg import classic, conditioning, evaluation, files, selection
from jaxreg.data import load_acdc_pairs, phantom_pairs, split_fold
from jaxreg.data.pairs import PairSet
from jaxreg.errors import ConfigError
from jaxreg.runtime import chunks, signals
from jaxreg.training import loop
from jaxreg.training import workdir as wd
from jaxreg.training.config import TrainConfig, check_int, check_number

CROP_ON = ("moving_labels", "fixed_labels", "union", "image")


def _f(default, help_text):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    train: TrainConfig = _f(TrainConfig(), "The training recipe (its fields are flags of their own).")
    num_folds: int = _f(10, "Patient-wise folds, stratified by pathology group (1: train on all pairs, and the "
                            "reported scores are on the training pairs: the shipped model).")
    fold: int = _f(0, "Test fold, 0..num_folds-1.")
    data_dir: str | None = _f(None, "ACDC-layout folder (patientXXX/...); unset: the synthetic phantom.")
    phantom_slices: int = _f(320, "Phantom slice pairs per direction (without --data_dir).")
    image_size: int = _f(112, "Side of the square crops (pixels), a multiple of 16.")
    crop_on: str = _f("moving_labels", "Where each crop is centred: moving_labels, fixed_labels, union or image.")
    pixel_mm: float | None = _f(None, "Resample ACDC slices in-plane to this pixel size (mm); unset: native.")
    fold_seed: int = _f(0, "Seed of the patient split (and of the phantom).")

    def validate(self) -> "ExperimentConfig":
        """Returns self, or raises ConfigError naming the first bad field (the training recipe included)."""
        self.train.validate()
        check_int("num_folds", self.num_folds, minimum=1)
        check_int("fold", self.fold, minimum=0)
        if self.fold >= self.num_folds:
            raise ConfigError(f"fold must be in 0..{self.num_folds - 1} for num_folds {self.num_folds}; got {self.fold}")
        check_int("phantom_slices", self.phantom_slices, minimum=1)
        check_int("image_size", self.image_size, minimum=16)
        if self.image_size % 16:
            raise ConfigError(f"image_size must be a multiple of 16; got {self.image_size}")
        if self.crop_on not in CROP_ON:
            raise ConfigError(f"crop_on must be one of {', '.join(CROP_ON)}; got {self.crop_on!r}")
        if self.pixel_mm is not None:
            check_number("pixel_mm", self.pixel_mm, minimum=0.0, strict=True)
        check_int("fold_seed", self.fold_seed, minimum=0)
        if self.data_dir is not None and not pathlib.Path(self.data_dir).is_dir():
            raise ConfigError(f"{self.data_dir}: data folder does not exist (--data_dir)")
        return self


def load_pairs(exp: ExperimentConfig) -> PairSet:
    if exp.data_dir:
        return load_acdc_pairs(exp.data_dir, size=exp.image_size, crop_on=exp.crop_on, pixel_mm=exp.pixel_mm)
    return phantom_pairs(exp.phantom_slices, seed=exp.fold_seed, size=exp.image_size, directions=("ED->ES", "ES->ED"))


def split(exp: ExperimentConfig, pairs: PairSet) -> tuple[PairSet, PairSet]:
    """(train, test) pairs of the experiment's fold; with num_folds 1 both are every pair."""
    if exp.num_folds > 1:
        if exp.num_folds > len(pairs.patients):
            raise ConfigError(f"num_folds {exp.num_folds} exceeds the {len(pairs.patients)} patients of the data")
        return split_fold(pairs, exp.fold, exp.num_folds, exp.fold_seed)
    return pairs, pairs


def identity(exp: ExperimentConfig, train_pairs: PairSet, test_pairs: PairSet) -> dict:
    """experiment.json: what makes a workdir's result a result of THIS fold of THIS split of THIS data."""
    return _split_identity(exp) | {"train_patients": train_pairs.patients, "test_patients": test_pairs.patients,
                                   "skipped_patients": dict(train_pairs.skipped)}


def _split_identity(exp: ExperimentConfig) -> dict:
    """experiment.json's fields known before the data is read: the split, the data folder (resolved), the crop."""
    meta = {k: v for k, v in dataclasses.asdict(exp).items() if k not in ("train", "data_dir")}
    return meta | {"data_dir": exp.data_dir,
                   "data": str(pathlib.Path(exp.data_dir).resolve()) if exp.data_dir else "phantom"}


def run_fold(exp: ExperimentConfig, workdir, pairs: PairSet | None = None, progress: bool = True,
             chunk_steps: int | None = None) -> dict:
    """Trains fold `exp.fold` (resuming from `workdir`), evaluates its test patients; returns results.json's dict.

    Checked before anything is written: the config (ConfigError), the data, the workdir. Then, under the workdir's
    lock, experiment.json is claimed (a different fold, split or data is refused once a checkpoint exists).
    A start that fails before its first checkpoint leaves nothing behind.
    """
    exp.validate()
    if finished_result(workdir, exp.num_folds) is not None and not wd.has_checkpoint(workdir):
        raise ConfigError(f"{pathlib.Path(workdir) / 'results.json'}: a finished fold's records without its "
                          "checkpoints (restored from docs/?): training again would overwrite them; use a new --workdir")
    pairs = load_pairs(exp) if pairs is None else pairs
    train_pairs, test_pairs = split(exp, pairs)
    with _claimed_workdir(workdir, identity(exp, train_pairs, test_pairs)) as workdir:
        trainer, state = loop.train_locked(exp.train, train_pairs, workdir, progress, chunk_steps=chunk_steps)
        res, table = evaluation.evaluate(trainer, state["params"], test_pairs,
                                         objective_weights=evaluation.objective_weights(exp.train))
        res.update(fold=exp.fold, num_folds=exp.num_folds, train_pairs=len(train_pairs),
                   data=exp.data_dir or "phantom", test_is_training=exp.num_folds == 1, seed=exp.train.seed)
        evaluation.write_results(workdir, res, test_pairs, table)
    return res


def run_population_fold(exp: ExperimentConfig, members: dict, workdir, pairs: PairSet | None = None,
                        progress: bool = True, chunk_steps: int | None = None,
                        member_chunk: int | None = None) -> dict:
    """`run_fold` for a population: the `{name: TrainConfig}` members trained at once (`train_population`) on fold
    `exp.fold`, each scored on the test patients (with the training objective at its weights); returns `{name:
    results}`, written to `workdir/<name>/results.json`. A finished population is scored again, not retrained.
    """
    exp.validate()
    configs = loop.population_configs(list(members.values()))
    pairs = load_pairs(exp) if pairs is None else pairs
    train_pairs, test_pairs = split(exp, pairs)
    out = {}
    with _claimed_workdir(workdir, identity(exp, train_pairs, test_pairs) | {"members": list(members)}) as workdir:
        trainer, states, active = loop.train_population_locked(configs, train_pairs, workdir, progress,
                                                               chunk_steps, member_chunk)
        for k, name in enumerate(members):
            params = jax.tree.map(lambda x: x[k], states["params"])
            res, table = evaluation.evaluate(trainer, params, test_pairs,
                                             objective_weights=evaluation.objective_weights(configs[k]))
            res.update(fold=exp.fold, num_folds=exp.num_folds, train_pairs=len(train_pairs),
                       data=exp.data_dir or "phantom", member=k, setting=name, frozen=not bool(active[k]),
                       **{w: getattr(configs[k], w) for w in ("delta", "alpha", "beta", "seed")})
            evaluation.write_results(workdir / name, res, test_pairs, table)
            out[name] = res
    return out


def run_hyper_fold(exp: ExperimentConfig, settings: dict, workdir, pairs: PairSet | None = None,
                   progress: bool = True, chunk_steps: int | None = None) -> dict:
    """A weight-conditioned network (`exp.train.conditioned`) trained once on fold `exp.fold` (`run_fold`,
    resumable), then scored on the test patients at every setting: `settings` is `{name: TrainConfig}` differing
    from `exp.train` only in delta, alpha, beta. Returns `{name: results}`, written to `workdir/<name>/results.json`
    with the training objective at the setting's weights (`evaluation.evaluate`'s `objective_weights`; a finished
    setting is read back, not recomputed, unless its record predates that). A fold whose network result and every
    setting's record are finished is read back without its checkpoints (records restored from `docs/`)."""
    if not exp.train.conditioned:
        raise ConfigError("a weight-conditioned run needs model.condition_features > 0 (--config hyper)")
    rescore = wd.has_checkpoint(workdir)  # records without the objective are rescored where the model is here
    done = {name: _setting_result(workdir, name, cfg, rescore) for name, cfg in settings.items()}
    if _finished_recipe(workdir, exp) and all(r is not None for r in done.values()):
        return done
    pairs = load_pairs(exp) if pairs is None else pairs
    run_fold(exp, workdir, pairs, progress, chunk_steps)
    test = check_test_patients(workdir, exp, pairs)
    centre = {w: getattr(exp.train, w) for w in conditioning.WEIGHTS}
    n_train = len(split(exp, pairs)[0])
    trainer = params = None
    out = {}
    if not rescore:  # the model was trained just now: every record needs the objective
        done = {name: _setting_result(workdir, name, cfg) for name, cfg in settings.items()}
    for name, cfg in settings.items():
        weights = {w: getattr(cfg, w) for w in conditioning.WEIGHTS}
        res = done[name]
        if res is None:
            if trainer is None:
                trainer, params = wd.load_trained(workdir, test.fixed.shape[1:])
            res, table = evaluation.evaluate(trainer, params, test, ratios=conditioning.ratios_of(centre, **weights),
                                             objective_weights=evaluation.objective_weights(cfg))
            res.update(fold=exp.fold, num_folds=exp.num_folds, train_pairs=n_train,
                       data=exp.data_dir or "phantom", setting=name, seed=exp.train.seed, **weights)
            evaluation.write_results(pathlib.Path(workdir) / name, res, test, table)
        out[name] = res
    return out


def _finished_recipe(workdir, exp: ExperimentConfig) -> bool:
    """Whether `workdir` holds a finished result of fold `exp.fold` of this split, trained with `exp.train`."""
    workdir = pathlib.Path(workdir)
    res = finished_result(workdir, exp.num_folds)
    if res is None or res.get("fold") != exp.fold or not (workdir / "experiment.json").is_file():
        return False
    meta = wd.read_json(workdir / "experiment.json", "experiment record (experiment.json)")
    want = _split_identity(exp)
    same = all(meta.get(k) == want[k] for k in wd.IDENTITY_FIELDS if k in want)
    return same and wd.read_config(workdir) == exp.train


def _setting_result(workdir, name: str, cfg, need_objective: bool = True) -> dict | None:
    """`workdir/<name>/results.json` of a hyper fold if it is finished at `cfg`'s weights (and, with
    `need_objective`, records the training objective there)."""
    path = evaluation.results_path(pathlib.Path(workdir) / name)
    res = wd.read_json(path, "results") if path.is_file() else None
    if res is None or (need_objective and "objective" not in res) or any(
            res.get(w) != getattr(cfg, w) for w in conditioning.WEIGHTS):
        return None
    return res


@contextlib.contextmanager
def _claimed_workdir(workdir, ident: dict):
    """The prepared workdir, locked, with `ident` claimed as its experiment.json. A start that fails (or is
    interrupted) before its first checkpoint has its records removed, and the workdir if this call created it;
    a busy workdir (another process's) is left alone."""
    workdir = pathlib.Path(workdir)
    created = not workdir.exists()
    workdir = wd.prepare(workdir)
    try:
        with wd.lock(workdir), signals.cleanup_on_signal(lambda: _remove_failed_start(workdir, created)):
            try:
                wd.claim_identity(workdir, ident)
                yield workdir
            except BaseException:
                _remove_failed_start(workdir)
                raise
    except BaseException:
        if created:
            _remove_failed_start(workdir, True)
        raise


def _remove_failed_start(workdir: pathlib.Path, created: bool = False) -> None:
    """Before the first checkpoint there is nothing to resume: the records of a failed (or interrupted) start are
    removed, and the workdir itself if this start created it."""
    if wd.has_checkpoint(workdir):
        return
    for name in ("config.json", "experiment.json", "metrics.jsonl"):
        (workdir / name).unlink(missing_ok=True)
    shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    if created:
        shutil.rmtree(workdir, ignore_errors=True)


def finished_result(workdir, num_folds: int) -> dict | None:
    """The fold result in `workdir/results.json` if it is one of a `num_folds` CV (not an --all_pairs evaluation)."""
    path = pathlib.Path(workdir) / "results.json"
    try:
        res = wd.read_json(path, "results") if path.is_file() else {}
    except Exception:  # noqa: BLE001 - an unreadable result is no finished fold
        return None
    return res if res.get("num_folds") == num_folds and not res.get("all_pairs") else None


def check_test_patients(workdir, exp: ExperimentConfig, pairs: PairSet) -> PairSet:
    """The fold's test pairs, after checking that `pairs` splits into the test patients experiment.json records
    (else ConfigError: the model would be scored on other patients, maybe its own training patients)."""
    meta = wd.read_json(pathlib.Path(workdir) / "experiment.json", "experiment record (experiment.json)")
    if "test_patients" not in meta:
        raise ConfigError(f"{pathlib.Path(workdir) / 'experiment.json'}: no test_patients entry")
    _, test = split(exp, pairs)
    if sorted(test.patients) != sorted(meta["test_patients"]):
        missing = sorted(set(meta["test_patients"]) - set(test.patients))
        raise ConfigError(f"{pathlib.Path(workdir) / 'experiment.json'}: the data ({exp.data_dir or 'phantom'}) "
                          f"splits fold {exp.fold} into other test patients than the run recorded"
                          f"{' (missing: ' + ', '.join(missing[:3]) + ')' if missing else ''}")
    return test


def experiment_of(workdir, data_dir: str | None = None) -> ExperimentConfig:
    """The ExperimentConfig a training workdir was run with (experiment.json + config.json)."""
    workdir = pathlib.Path(workdir)
    meta = wd.read_json(workdir / "experiment.json", "experiment record (experiment.json)")
    cfg = wd.read_config(workdir)
    fields = {k: meta[k] for k in ExperimentConfig.__dataclass_fields__ if k in meta and k != "train"}
    try:
        exp = ExperimentConfig(train=cfg[0] if isinstance(cfg, list) else cfg, **fields)
    except TypeError as e:
        raise ConfigError(f"{workdir / 'experiment.json'}: not an experiment record ({e})") from None
    return dataclasses.replace(exp, data_dir=data_dir) if data_dir else exp


def predict_test_pairs(workdir, pairs: PairSet, exp: ExperimentConfig | None = None) -> tuple[PairSet, np.ndarray]:
    """A fold's test pairs (checked against experiment.json) and its network's displacements `(N, *S, nd)` px."""
    exp = experiment_of(workdir) if exp is None else exp
    test = check_test_patients(workdir, exp, pairs)
    trainer, params = wd.load_trained(workdir, test.fixed.shape[1:])
    return test, evaluation.predict(trainer, params, test.fixed, test.moving)


# methods scored beside the network on a fold's test pairs (no labels used): refine is the additive refinement with
# ClassicConfig() (the CLI's refinement by composition is chosen and scored by `jaxreg.fold_choice.select_refinement`)
BASELINES = ("classic", "refine")
PEERS = ("demons",)  # peer methods scored with them on request (SimpleITK: the bench extra)


def evaluate_baselines(workdir, pairs: PairSet, u_net, meta: dict | None = None,
                       cfg: classic.ClassicConfig = classic.ClassicConfig(), methods=BASELINES) -> dict:
    """`jaxreg.classic` alone, instance refinement of the network's field and (in `methods`) the peers, on a
    fold's test pairs.

    u_net: the network's displacements `(N, *S, nd)` pixels for `pairs`. Returns `{method: (results, u)}` for
    `methods` (from BASELINES + PEERS); writes `results_{method}.json` (with `meta`, e.g. the fold) and
    `pairs_{method}.csv` into workdir. Times include compilation (one batched call per method).
    """
    from jaxreg import peers

    chunk = chunks.pair_chunk(kind="solver")
    runs = {"classic": lambda: classic.register_batch(pairs.fixed, pairs.moving, cfg, chunk)[0],
            "refine": lambda: classic.refine_batch(pairs.fixed, pairs.moving, u_net, cfg, chunk)[0],
            "demons": lambda: peers.demons_batch(pairs.fixed, pairs.moving, threads=1)}
    unknown = [m for m in methods if m not in runs]
    if unknown:
        raise ConfigError(f"unknown baseline method(s) {unknown}; known: {', '.join(runs)}")
    out = {}
    for method in methods:
        t0 = time.perf_counter()
        u = np.asarray(runs[method]())
        table = evaluation.pair_table(pairs, u)
        res = evaluation.summarize(pairs, table, time.perf_counter() - t0, method=method)
        res.update(meta or {}, seconds_include_compile=True,
                   **({"classic_config": dataclasses.asdict(cfg)} if method in BASELINES else {}))
        evaluation.write_results(workdir, res, pairs, table)
        out[method] = (res, u)
    return out


def baseline_result(workdir, method: str, network_result: dict) -> dict | None:
    """`workdir/results_{method}.json` if it scores the same test pairs as the fold's network result, else None."""
    path = evaluation.results_path(workdir, method)
    try:
        res = wd.read_json(path, "results") if path.is_file() else {}
    except Exception:  # noqa: BLE001 - unreadable: not done
        return None
    return res if res.get("pairs") == network_result.get("pairs") and res.get("method") == method else None


def fold_status(workdir, num_folds: int) -> str:
    """One line on a fold's workdir without loading data or JAX state: finished (its Dice), at epoch k, or not started.

    Reads `finished_result`, else `config.json` and `metrics.jsonl` (the time left: the median of the last five
    epochs' seconds).
    """
    workdir = pathlib.Path(workdir)
    res = finished_result(workdir, num_folds)
    if res is not None:
        return (f"finished: Dice {100 * res['dice_mean_after']:.1f}% (before {100 * res['dice_mean_before']:.1f}%), "
                f"folding {res['folding_percent']:.3f}%")
    cfg_path, log_path = workdir / "config.json", workdir / "metrics.jsonl"
    if not cfg_path.is_file():
        return "not started"
    try:
        epochs = wd.read_json(cfg_path, "training config").get("epochs", "?")
    except Exception:  # noqa: BLE001
        epochs = "?"
    recs = wd.read_metrics(log_path)
    if not recs:
        return f"started, no epoch finished (of {epochs})"
    rec = recs[-1]
    out = f"training: epoch {rec['epoch']} of {epochs} done, label term {rec.get('label', float('nan')):.4f}"
    seconds = [r["seconds"] for r in recs[-5:] if "seconds" in r]  # the recent pace (a resumed run restarts it)
    if seconds and isinstance(epochs, int):
        pace = float(np.median(seconds))
        out += f"; ~{(epochs - rec['epoch']) * pace / 3600:.1f} h left at {pace:.0f} s/epoch"
    return out


def worker_plan(folds, workers: int, cpus) -> list[tuple[list[int], list[int]]]:
    """Folds dealt round-robin to `workers` processes, `cpus` split into as many disjoint contiguous groups.

    Returns `[(folds_k, cpus_k)]` for the workers that get a fold (at most `len(folds)` of them).
    """
    folds, cpus = list(folds), sorted(cpus)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1; got {workers}")
    if workers > len(cpus):
        raise ConfigError(f"--workers {workers} needs at least {workers} CPUs; this process may use {len(cpus)} "
                          f"({cpus})")
    n = min(workers, len(folds))
    if n == 0:
        return []
    # contiguous CPU groups, sized as evenly as possible, one per worker that has folds
    bounds = [round(i * len(cpus) / n) for i in range(n + 1)]
    return [(folds[i::n], cpus[bounds[i]:bounds[i + 1]]) for i in range(n)]


def run_pinned(commands, cpu_sets, logs, cwd=None) -> list[int]:
    """Runs the commands at once, each pinned to its CPU set (Linux), its stdout+stderr appended to its log.

    Waits for all of them and returns their exit codes; on KeyboardInterrupt, terminates them (training resumes
    from the last epoch's checkpoint).
    """
    procs = []
    try:
        for cmd, cpus, log in zip(commands, cpu_sets, logs, strict=True):
            pin = (lambda c=tuple(cpus): os.sched_setaffinity(0, c)) if hasattr(os, "sched_setaffinity") else None
            with open(log, "a") as f:
                procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, preexec_fn=pin))
        return [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise


def classic_grid() -> dict[str, classic.ClassicConfig]:
    """The `jaxreg.classic` settings `select_classic` chooses among (`ClassicConfig()` is "a1_e0.1_it20_l3"):
    curvature weight x NGF edge parameter x L-BFGS iteration caps on the 3-level pyramid, a 4-level pyramid, and
    (a second round, added after the first showed more iterations and a fourth level paying) both together and
    twice the iterations again, (a third) the 80-iteration caps as a diffeomorphism (scaling and squaring), and (a
    fourth, for time) that diffeomorphism squared at half or quarter resolution, with fewer squarings or iterations."""
    out = {}
    for iters in ((20, 10, 10), (40, 20, 20)):
        for alpha in (0.25, 0.5, 1.0):
            for eps in (0.1, 0.2):
                out[f"a{alpha:g}_e{eps:g}_it{iters[0]}_l3"] = classic.ClassicConfig(alpha=alpha, epsilon=eps,
                                                                                   max_iters=iters)
    for alpha in (0.5, 1.0):
        out[f"a{alpha:g}_e0.1_it20_l4"] = classic.ClassicConfig(alpha=alpha, levels=(8, 4, 2, 1),
                                                                max_iters=(20, 20, 10, 10))
    for alpha in (0.25, 0.5, 1.0):
        out[f"a{alpha:g}_e0.1_it40_l4"] = classic.ClassicConfig(alpha=alpha, levels=(8, 4, 2, 1),
                                                                max_iters=(40, 40, 20, 20))
    for alpha in (0.5, 1.0):
        out[f"a{alpha:g}_e0.1_it80_l3"] = classic.ClassicConfig(alpha=alpha, max_iters=(80, 40, 40))
    # third round (issue 22's diffeomorphic candidate): exp of a B-spline velocity, 6 squarings; it cannot fold, so
    # smaller curvature weights than the displacement's 0.5 become admissible
    for alpha in (0.25, 0.1):
        out[f"a{alpha:g}_e0.1_it80_l3_ss6"] = classic.ClassicConfig(alpha=alpha, max_iters=(80, 40, 40),
                                                                    diffeomorphic=6)
    # fourth round (issue 22's time target): the squarings at 1/2 or 1/4 of each level's resolution (`_x2`, `_x4`),
    # 4 squarings, or half the iterations
    for name, alpha, iters, steps, factor in (("a0.1_e0.1_it80_l3_ss4", 0.1, (80, 40, 40), 4, 1),  # CV_CHOICE
                                              ("a0.1_e0.1_it80_l3_ss6_x2", 0.1, (80, 40, 40), 6, 2),
                                              ("a0.25_e0.1_it80_l3_ss6_x2", 0.25, (80, 40, 40), 6, 2),
                                              ("a0.1_e0.1_it80_l3_ss4_x2", 0.1, (80, 40, 40), 4, 2),
                                              ("a0.1_e0.1_it40_l3_ss6_x2", 0.1, (40, 20, 20), 6, 2),
                                              ("a0.1_e0.1_it80_l3_ss6_x4", 0.1, (80, 40, 40), 6, 4)):
        out[name] = classic.ClassicConfig(alpha=alpha, max_iters=iters, diffeomorphic=steps, exp_factor=factor)
    return out


def timed_batches(fn, arrays, batch: int = 64):
    """`fn(*chunk)[0]` over `arrays` (each `(N, ...)`) in padded batches of `batch` -> (outputs `(N, ...)` as numpy,
    wall seconds a pair after compilation: the first batch runs once untimed, so every timed call reuses its
    program; the time is divided by the pairs computed, padding included, so the last batch's repeats do not
    count as free work)."""
    n = len(arrays[0])
    pad = (-n) % batch
    padded = [np.concatenate([a, a[:pad]]) for a in arrays]
    jax.block_until_ready(fn(*(a[:batch] for a in padded)))  # compile for the shape
    t0 = time.perf_counter()
    out = np.concatenate([np.asarray(fn(*(a[s:s + batch] for a in padded))[0])
                          for s in range(0, len(padded[0]), batch)])[:n]
    return out, (time.perf_counter() - t0) / max(len(padded[0]), 1)


def classic_table(pairs: PairSet, cfg: classic.ClassicConfig, batch: int = 64):
    """(`evaluation.pair_table` of `jaxreg.classic` on every pair, wall seconds a pair after compilation)."""
    chunk = chunks.pair_chunk(kind="solver")
    u, seconds = timed_batches(lambda f, m: classic.register_batch(f, m, cfg, chunk), (pairs.fixed, pairs.moving),
                               batch)
    return evaluation.pair_table(pairs, u), seconds


def cached_table(path: pathlib.Path, compute):
    """A pair table and its seconds a pair, from `path` (.npz) or computed and stored there (temp + rename)."""
    if path.is_file():
        with np.load(path) as z:
            return (z["before"], z["after"], z["folding"]), float(z["seconds"])
    table, seconds = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    files.save_npz(path, before=table[0], after=table[1], folding=table[2], seconds=seconds)
    return table, seconds


MAX_FOLDING_PERCENT = 0.1  # a classic setting that folds more on the training folds is not chosen


def select_classic(pairs: PairSet, workdir, candidates: dict | None = None, num_folds: int = 10,
                   fold_seed: int = 0, peers=(), progress=print) -> dict:
    """`jaxreg.classic`'s setting chosen by patient-wise CV (`jaxreg.selection`), scored beside the peers.

    Every candidate (default `classic_grid()`) runs once on every pair (cached in `workdir/candidates/NAME.npz`:
    a rerun resumes); each fold is scored with the candidate best on the other folds (highest mean Dice among those
    folding < `MAX_FOLDING_PERCENT` there). Writes
    `results_classic_cv.json` / `pairs_classic_cv.csv` (the pooled nested result, with the choice per fold and the
    choice on all patients) and `results_{peer}.json` into workdir. Returns `{"classic_cv": results, peer:
    results, "candidates": {name: results}}`.
    """
    from jaxreg import peers as peer_methods

    workdir = pathlib.Path(workdir)
    candidates = classic_grid() if candidates is None else candidates
    tables, seconds, out = {}, {}, {"candidates": {}}
    for name, cfg in candidates.items():
        tables[name], seconds[name] = cached_table(workdir / "candidates" / f"{name}.npz",
                                                    lambda cfg=cfg: classic_table(pairs, cfg))
        res = evaluation.summarize(pairs, tables[name], seconds[name] * len(pairs), method=name)
        out["candidates"][name] = res
        progress(f"{name:24s} Dice {100 * res['dice_mean_after']:.2f}%  folding {res['folding_percent']:.4f}%  "
                 f"{1e3 * seconds[name]:.1f} ms/pair")
    folds = selection.pair_folds(pairs, num_folds, fold_seed)
    chosen, pooled = selection.nested_choice(tables, folds, MAX_FOLDING_PERCENT)
    per_pair = np.array([seconds[chosen[int(k)]] for k in folds])
    res = evaluation.summarize(pairs, pooled, float(per_pair.sum()), method="classic_cv")
    res.update(num_folds=num_folds, fold_seed=fold_seed, chosen_per_fold={str(k): v for k, v in chosen.items()},
               chosen_on_all=selection.best(tables, None, MAX_FOLDING_PERCENT), candidates=len(candidates),
               max_folding_percent=MAX_FOLDING_PERCENT,
               seconds_note="wall seconds a pair of each fold's choice, batched (64) on the process's cores")
    res["chosen_on_all_config"] = dataclasses.asdict(candidates[res["chosen_on_all"]])
    evaluation.write_results(workdir, res, pairs, pooled)
    out["classic_cv"] = res
    runs = {"demons": lambda: _timed(lambda: peer_methods.demons_batch(pairs.fixed, pairs.moving, threads=1), pairs)}
    for peer in peers:
        if peer not in runs:
            raise ConfigError(f"unknown peer {peer!r}; known: {', '.join(runs)}")
        table, sec = cached_table(workdir / "peers" / f"{peer}.npz", runs[peer])
        r = evaluation.summarize(pairs, table, sec * len(pairs), method=peer)
        r["seconds_note"] = "wall seconds a pair, one thread"
        evaluation.write_results(workdir, r, pairs, table)
        out[peer] = r
    return out


def _timed(run, pairs: PairSet):
    t0 = time.perf_counter()
    u = np.asarray(run())
    return evaluation.pair_table(pairs, u), (time.perf_counter() - t0) / max(len(pairs), 1)
