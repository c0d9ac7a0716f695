"""jaxreg.files: result files are written whole or not at all, and JSON stays valid."""

import json
import math

import numpy as np
import pytest

from jaxreg import files


def test_json_is_valid_with_non_finite_values_and_tuples():
    obj = {"a": math.nan, "b": [1.0, math.inf, (2, -math.inf)], "c": {"d": 0.5}}
    assert files.json_safe(obj) == {"a": None, "b": [1.0, None, [2, None]], "c": {"d": 0.5}}


@pytest.mark.parametrize("write", ["text", "json", "npz", "figure"])
def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path, write, monkeypatch):
    name = {"text": "a.md", "json": "a.json", "npz": "a.npz", "figure": "a.png"}[write]
    path = tmp_path / name
    path.write_bytes(b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    if write == "text":
        monkeypatch.setattr(type(path), "write_text", boom)
        call = lambda: files.write_text(path, "new")  # noqa: E731
    elif write == "json":
        monkeypatch.setattr(type(path), "write_text", boom)
        call = lambda: files.write_json(path, {"x": 1})  # noqa: E731
    elif write == "npz":
        monkeypatch.setattr(np, "savez", boom)
        call = lambda: files.save_npz(path, x=np.zeros(2))  # noqa: E731
    else:
        class Fig:
            def savefig(self, tmp, **kwargs):
                tmp.write_bytes(b"half")  # part of the file, then the failure
                raise OSError("disk full")
        call = lambda: files.save_figure(Fig(), path, dpi=50)  # noqa: E731
    with pytest.raises(OSError, match="disk full"):
        call()
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_writes_replace_the_file_and_read_back(tmp_path):
    files.write_text(tmp_path / "t.md", "x\n")
    assert (tmp_path / "t.md").read_text() == "x\n"
    files.write_json(tmp_path / "r.json", {"dice": math.nan, "n": 3})
    assert json.loads((tmp_path / "r.json").read_text()) == {"dice": None, "n": 3}
    files.save_npz(tmp_path / "c.npz", before=np.arange(3.0))
    with np.load(tmp_path / "c.npz") as z:
        np.testing.assert_array_equal(z["before"], [0.0, 1.0, 2.0])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    files.save_figure(fig, tmp_path / "f.png", dpi=20)
    plt.close(fig)
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "f.png", "r.json", "t.md"]
