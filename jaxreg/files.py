"""Result files written whole or not at all: each writer writes a hidden temporary file beside the target, then
renames it over the target (`os.replace`, atomic within one filesystem), so a run killed mid-write leaves the old
file or the new one, never half of either. Every result file of jaxreg is written through here."""

from __future__ import annotations

import json
import math
import os
import pathlib

import numpy as np


def json_safe(x):
    """NaN/inf as None (JSON null), recursively; tuples as lists: result files stay valid JSON."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _replace(path, write, suffix: str = ".tmp") -> pathlib.Path:
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path, text: str) -> pathlib.Path:
    """`text` to `path` (markdown, CSV), whole or not at all."""
    return _replace(path, lambda tmp: tmp.write_text(text))


def write_json(path, obj) -> pathlib.Path:
    """`obj` as indented JSON (NaN/inf as null, `json_safe`) to `path`, whole or not at all."""
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False)
    return _replace(path, lambda tmp: tmp.write_text(text))


def save_npz(path, **arrays) -> pathlib.Path:
    """`np.savez(path, **arrays)`, whole or not at all (`path` should end in .npz)."""
    return _replace(path, lambda tmp: np.savez(tmp, **arrays), suffix=".tmp.npz")


def save_figure(fig, path, **kwargs) -> pathlib.Path:
    """`fig.savefig(path, **kwargs)` (format from `path`'s suffix), whole or not at all."""
    path = pathlib.Path(path)
    return _replace(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or None, **kwargs),
                    suffix=f".tmp{path.suffix}")


def write_bytes(path, data: bytes) -> pathlib.Path:
    """`data` to `path` (its folder made), whole or not at all."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _replace(path, lambda tmp: tmp.write_bytes(data))
