"""A training workdir on disk: its lock, config.json, experiment.json (the run's identity), checkpoints, metrics.

    workdir/.lock            flock held while a process trains or writes results (a second one is refused)
    workdir/config.json      the TrainConfig (a population: {"members": [...]}) - `write_config` / `read_config`
    workdir/experiment.json  fold, num_folds, split seed, data source, train/test patients - `claim_identity`
    workdir/checkpoints/K    Orbax, one per finished epoch K (0-based), the last few kept - `Checkpoints`
    workdir/metrics.jsonl    one record per epoch (and member) - `append_metrics`, `read_metrics`, `keep_metrics`
A config or identity that differs from the stored one is refused (naming the fields) once a checkpoint exists;
before the first checkpoint there is nothing to lose, and the new start replaces the record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pathlib

import jax

from jaxreg import files
from jaxreg.errors import ConfigError, DataError, UserError
from jaxreg.training.config import TrainConfig, differing_fields

log = logging.getLogger(__name__)


class WorkdirBusy(UserError, RuntimeError):
    """Another process is training in the same workdir (two writers would corrupt its checkpoints)."""


def prepare(workdir) -> pathlib.Path:
    """The workdir as a Path, created if missing; ConfigError if it is a file or cannot be created."""
    workdir = pathlib.Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"{workdir}: --workdir exists and is not a folder")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{workdir}: cannot create the workdir ({e.strerror})") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise ConfigError(f"{workdir}: the workdir is not writable")
    return workdir


@contextlib.contextmanager
def lock(workdir):
    """Exclusive advisory lock on `workdir/.lock` (flock, released when the process ends, even by SIGKILL)."""
    path = pathlib.Path(workdir) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise WorkdirBusy(f"{workdir}: another process (pid {holder}) is using this workdir; wait for it "
                              f"or use another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def has_checkpoint(workdir) -> bool:
    d = pathlib.Path(workdir) / "checkpoints"
    return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


def read_json(path, what: str) -> dict:
    """A JSON object from `path`, or DataError naming the file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing {what}")
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable {what} ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {what} is not a JSON object")
    return obj


def parse_config(d: dict, path) -> TrainConfig:
    try:
        return TrainConfig.from_json(d)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{path}: not a jaxreg training config ({type(e).__name__}: {e})") from None


def read_config(workdir) -> TrainConfig | list[TrainConfig]:
    """The workdir's TrainConfig (a list for a population); DataError naming config.json if it is not one."""
    path = pathlib.Path(workdir) / "config.json"
    d = read_json(path, "training config (config.json): not a jaxreg training workdir or model folder")
    if "members" in d:
        if not isinstance(d["members"], list) or not d["members"]:
            raise DataError(f"{path}: 'members' must be a non-empty list of training configs")
        return [parse_config(m, path) for m in d["members"]]
    return parse_config(d, path)


def _config_json(cfg) -> dict:
    return {"members": [c.to_json() for c in cfg]} if isinstance(cfg, (list, tuple)) else cfg.to_json()


def write_config(workdir, cfg) -> None:
    """Stores the config (a TrainConfig or a list of them), or checks it against the stored one (call under `lock`).

    Refused with the differing fields named when a checkpoint exists; otherwise the new config replaces the old.
    """
    path = pathlib.Path(workdir) / "config.json"
    new = json.loads(json.dumps(_config_json(cfg)))
    if path.exists() and has_checkpoint(workdir):
        old = json.loads(json.dumps(_config_json(read_config(workdir))))  # fields added later: their old meaning
        if old != new:
            diff = differing_fields(old, new)
            raise ConfigError(f"{path}: the workdir holds a run with a different config ({'; '.join(diff[:4])}"
                              f"{'; ...' if len(diff) > 4 else ''}: stored vs requested); use a new --workdir")
        return
    files.write_json(path, new)


IDENTITY_FIELDS = ("fold", "num_folds", "fold_seed", "data", "phantom_slices", "image_size", "crop_on", "pixel_mm",
                   "test_patients")


def claim_identity(workdir, identity: dict) -> None:
    """Stores experiment.json (call under `lock`), or refuses an identity that differs in IDENTITY_FIELDS from the
    stored one once the workdir has a checkpoint (a fold-0 model must never be scored as fold 1)."""
    path = pathlib.Path(workdir) / "experiment.json"
    if path.exists() and has_checkpoint(workdir):
        saved = read_json(path, "experiment record (experiment.json)")
        diff = [f"{k} ({saved.get(k)!r} vs {identity.get(k)!r})" for k in IDENTITY_FIELDS
                if k in saved and saved.get(k) != identity.get(k)]
        if diff:
            raise ConfigError(f"{path}: the workdir holds a run of another experiment ({'; '.join(diff[:3])}"
                              f"{'; ...' if len(diff) > 3 else ''}: stored vs requested); use a new --workdir")
        return
    files.write_json(path, identity)


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs an unreadable checkpoint as errors and tracebacks; `restore_latest` reports it in one line."""
    quiet = [logging.getLogger(n) for n in ("absl", "orbax", "asyncio", "jax")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)


class Checkpoints:
    """Orbax CheckpointManager: one checkpoint per epoch (the whole state, or a population's), keep the last few."""

    def __init__(self, workdir, keep: int = 3):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.dir = (pathlib.Path(workdir) / "checkpoints").absolute()
        with _quiet_orbax():
            self.mngr = ocp.CheckpointManager(
                self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                               enable_async_checkpointing=False))

    def epochs(self) -> list[int]:
        with _quiet_orbax():
            return sorted(self.mngr.all_steps())

    def save(self, epoch: int, state):
        self.mngr.save(epoch, args=self.ocp.args.StandardSave(jax.device_get(state)))
        self.mngr.wait_until_finished()

    def restore(self, epoch: int, like):
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), jax.device_get(like))
        return self.mngr.restore(epoch, args=self.ocp.args.StandardRestore(abstract))

    def restore_latest(self, like, epoch: int | None = None):
        """(state, epoch) of the newest readable checkpoint (or exactly `epoch`); (None, None) if there is none.

        An unreadable checkpoint is skipped with a warning naming it, falling back to the next older one; if none
        can be read, DataError.
        """
        epochs = self.epochs() if epoch is None else [epoch]
        if epoch is not None and epoch not in self.epochs():
            raise DataError(f"{self.dir}: no checkpoint of epoch {epoch} (have {self.epochs()})")
        errors = []
        for e in reversed(epochs):
            try:
                with _quiet_orbax():
                    state = self.restore(e, like)
            except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint: try the older one
                errors.append(f"epoch {e + 1}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}")
                continue
            if errors:
                print(f"warning: {self.dir}: unreadable checkpoint(s) ({'; '.join(errors)}); using the one of "
                      f"epoch {e + 1}", flush=True)
            return state, e
        if errors:
            raise DataError(f"{self.dir}: no readable checkpoint ({'; '.join(errors)})")
        return None, None

    def close(self):
        self.mngr.close()


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


def keep_metrics(path, epochs_done: int) -> None:
    """Keeps metrics.jsonl's records of the first `epochs_done` epochs (those with a checkpoint): a run killed after
    writing an epoch's record but before its checkpoint reruns that epoch, which then appears once."""
    path = pathlib.Path(path)
    if not path.is_file():
        return
    keep = "".join(json.dumps(r) + "\n" for r in read_metrics(path) if r["epoch"] <= epochs_done)
    if keep != path.read_text():
        path.write_text(keep)


def append_metrics(path, records) -> None:
    """Appends one JSON line per record (before the epoch's checkpoint: a kill in between reruns the epoch)."""
    with pathlib.Path(path).open("a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records))


def load_trained(workdir, image_shape=(112, 112), epoch: int | None = None, member: int | None = None):
    """(Trainer, params) restored from a training workdir (`member`: one member of a population workdir)."""
    from jaxreg.training.step import Trainer, stack, unstack

    workdir = pathlib.Path(workdir)
    cfg = read_config(workdir)
    members = cfg if isinstance(cfg, list) else None
    if members is not None and member is None:
        raise DataError(f"{workdir}: a population of {len(members)} members; choose one (member=0..{len(members) - 1})")
    if members is not None and not 0 <= member < len(members):
        raise DataError(f"{workdir}: member {member} out of range 0..{len(members) - 1}")
    trainer = Trainer(members[member] if members else cfg, tuple(image_shape))
    like = trainer.init_state()
    if members is not None:
        like = {"members": stack([like] * len(members)), "active": jax.numpy.ones(len(members), bool)}
    ckpt = Checkpoints(workdir)
    try:
        state, _ = ckpt.restore_latest(like, epoch)
    finally:
        ckpt.close()
    if state is None:
        raise DataError(f"{workdir / 'checkpoints'}: no checkpoint (the run has not finished an epoch)")
    if members is not None:
        state = unstack(state["members"], member)
    return trainer, jax.device_put(state["params"], trainer.replicated)
