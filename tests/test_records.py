"""jaxreg.records: a run folder's records copied without checkpoints, locks, logs or temporary files, and back."""

import subprocess
import sys

import numpy as np
import pytest

from jaxreg import files, records
from jaxreg.errors import ConfigError


def _run_folder(root):
    for sub in ("checkpoints/39/default", "opt", "refine"):
        (root / "fold2" / sub).mkdir(parents=True)
    (root / "fold2" / "checkpoints" / "39" / "default" / "manifest.ocdbt").write_bytes(b"\0" * 64)
    (root / "fold2" / ".lock").write_text("123")
    (root / "fold2" / ".results.json.tmp").write_text("{")  # a writer killed mid-write
    (root / "worker0.log").write_text("log")
    files.write_json(root / "fold2" / "results.json", {"dice_mean_after": 0.87})
    files.write_text(root / "fold2" / "opt" / "pairs_network.csv", "patient,dice\n1,0.9\n")
    files.save_npz(root / "fold2" / "refine" / "network.npz", after=np.ones((3, 3)), seconds=0.0)
    files.write_text(root / "cv_results.md", "| fold |\n")
    return {"fold2/results.json", "fold2/opt/pairs_network.csv", "fold2/refine/network.npz", "cv_results.md"}


def test_records_are_the_files_without_models_locks_logs_or_temporaries(tmp_path):
    want = _run_folder(tmp_path / "run")
    assert {str(p) for p in records.record_files(tmp_path / "run")} == want
    written = records.copy_records(tmp_path / "run", tmp_path / "docs")
    assert {str(p) for p in written} == want
    assert {str(p.relative_to(tmp_path / "docs")) for p in (tmp_path / "docs").rglob("*") if p.is_file()} == want
    for rel in want:
        assert (tmp_path / "docs" / rel).read_bytes() == (tmp_path / "run" / rel).read_bytes()
    assert records.copy_records(tmp_path / "run", tmp_path / "docs") == []  # nothing new: nothing written
    with pytest.raises(ConfigError, match="not a folder"):
        records.record_files(tmp_path / "missing")


def test_restore_keeps_what_the_run_folder_has_and_export_replaces_it(tmp_path):
    _run_folder(tmp_path / "run")
    records.copy_records(tmp_path / "run", tmp_path / "docs")
    files.write_json(tmp_path / "run" / "fold2" / "results.json", {"dice_mean_after": 0.88})  # the run moved on
    assert records.copy_records(tmp_path / "docs", tmp_path / "run", overwrite=False) == []
    assert "0.88" in (tmp_path / "run" / "fold2" / "results.json").read_text()
    assert [str(p) for p in records.copy_records(tmp_path / "run", tmp_path / "docs")] == ["fold2/results.json"]
    assert "0.88" in (tmp_path / "docs" / "fold2" / "results.json").read_text()


def test_entry_point_copies_folds_and_names_a_missing_one(tmp_path):
    _run_folder(tmp_path / "run")
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "experiments.records", "--src", str(tmp_path / "run"), "--dst", str(tmp_path / "d")]
    run = subprocess.run(cmd + ["--folds", "2"], cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "3 record files written" in run.stdout and not (tmp_path / "d" / "cv_results.md").exists()
    bad = subprocess.run(cmd + ["--folds", "2,5"], cwd=root, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "fold5" in bad.stderr
