"""A run folder's records without its models: copied to a committed folder (`docs/`) and back, so a CV that takes
more than one machine's lifetime goes on from what was committed.

Records are every file under the folder (results, per-pair CSVs, configs, metrics, experiment.json, cached
candidate tables `*.npz` of `jaxreg.fold_choice`, reports) except checkpoints, locks, logs and temporary files.
A finished fold restored this way is read back, not retrained (`cv.run_hyper_fold`, `experiments.cross_validate`),
its cached candidates are scored from the cache (`fold_choice.fold_tables`), and `cv.run_fold` refuses to train over
it (no checkpoint to resume from).
"""

from __future__ import annotations

import fnmatch
import pathlib

from jaxreg import files
from jaxreg.errors import ConfigError

# not records: model checkpoints (Orbax folders), a workdir's lock, logs, files.py's temporary files
SKIPPED = ("checkpoints", ".lock", "*.log", ".*.tmp*")


def record_files(root) -> list[pathlib.Path]:
    """The record files under `root`, relative to it, sorted (`SKIPPED` names left out, and everything below them)."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder")
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in SKIPPED):
            out.append(rel)
    return out


def copy_records(src, dst, overwrite: bool = True) -> list[pathlib.Path]:
    """`src`'s record files to the same paths under `dst` (each written whole, `files.write_bytes`); returns those
    written (relative). A file already in `dst` with the same bytes is left alone; one with other bytes is replaced,
    or kept with `overwrite=False` (restoring into a run folder never replaces what the run wrote)."""
    src, dst = pathlib.Path(src), pathlib.Path(dst)
    written = []
    for rel in record_files(src):
        target = dst / rel
        if target.is_file() and not overwrite:
            continue
        data = (src / rel).read_bytes()
        if target.is_file() and target.read_bytes() == data:
            continue
        files.write_bytes(target, data)
        written.append(rel)
    return written
