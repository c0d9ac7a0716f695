"""`jaxreg register`: outputs on the fixed grid, and one-line errors with exit status 2 for bad input."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import nibabel as nib
import numpy as np
import pytest

from jaxreg import cli
from tests.test_data import write_patient


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    root = tmp_path_factory.mktemp("acdc")
    return write_patient(root, "patient001", shape=(48, 40, 2), center=(24, 16), rv_slices=(0, 1))


def _files(p):
    return (p / "patient001_frame08.nii.gz", p / "patient001_frame01.nii.gz", p / "patient001_frame01_gt.nii.gz",
            p / "patient001_frame08_gt.nii.gz")


def test_classic_register_writes_outputs_on_fixed_grid(patient, tmp_path):
    f, m, ml, fl = _files(patient)
    out = tmp_path / "out"
    rc = cli.main(["register", "--fixed", str(f), "--moving", str(m), "--moving-labels", str(ml), "--fixed-labels",
                   str(fl), "--method", "classic", "--out", str(out)])
    assert rc == 0
    disp = nib.load(str(out / "displacement.nii.gz"))
    assert disp.shape == (48, 40, 2, 2)
    np.testing.assert_allclose(disp.affine, nib.load(str(f)).affine)
    assert nib.load(str(out / "warped.nii.gz")).shape == (48, 40, 2)
    wl = np.asarray(nib.load(str(out / "warped_labels.nii.gz")).dataobj)
    assert set(np.unique(wl)) <= {0, 1, 2, 3}
    rep = json.loads((out / "report.json").read_text())
    assert rep["method"] == "classic" and rep["slices"] == 2 and rep["folding_percent"] >= 0
    assert rep["dice_mean_after"] >= rep["dice_mean_before"] - 0.02


@pytest.mark.parametrize("case", ["missing", "shape", "nan", "labels", "exists", "corrupt", "nomodel"])
def test_bad_input_is_one_line_exit_2(patient, tmp_path, capsys, case):
    f, m, ml, _ = _files(patient)
    out = tmp_path / "out"
    args = ["register", "--fixed", str(f), "--moving", str(m), "--method", "classic", "--out", str(out)]
    if case == "missing":
        args[2] = str(tmp_path / "nope.nii.gz")
    elif case == "shape":
        nib.save(nib.Nifti1Image(np.zeros((48, 41, 2), np.float32), np.eye(4)), str(tmp_path / "s.nii.gz"))
        args[4] = str(tmp_path / "s.nii.gz")
    elif case == "nan":
        arr = np.asarray(nib.load(str(m)).dataobj).copy()
        arr[0, 0, 0] = np.nan
        nib.save(nib.Nifti1Image(arr, nib.load(str(m)).affine), str(tmp_path / "n.nii.gz"))
        args[4] = str(tmp_path / "n.nii.gz")
    elif case == "labels":
        lab = np.asarray(nib.load(str(ml)).dataobj).copy()
        lab[0, 0, 0] = 9
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(tmp_path / "l.nii.gz"))
        args += ["--moving-labels", str(tmp_path / "l.nii.gz")]
    elif case == "exists":
        out.mkdir()
    elif case == "corrupt":
        (tmp_path / "c.nii.gz").write_bytes(b"\x1f\x8b garbage")
        args[4] = str(tmp_path / "c.nii.gz")
    elif case == "nomodel":
        args[args.index("classic")] = "learned"
        args += ["--model", str(tmp_path / "no_model_here")]
    rc = cli.main(args)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("jaxreg: error: ") and err.count("\n") == 1 and "Traceback" not in err
    if case != "exists":
        assert not out.exists()
    assert not list(tmp_path.glob(".jaxreg-*"))  # nothing half-written left behind


def test_shipped_model_and_learned_method(patient, tmp_path):
    import jaxreg

    model = jaxreg.load_model()
    fixed = np.random.default_rng(0).random((3, 112, 112)).astype(np.float32)
    u = np.asarray(model(fixed, fixed[::-1]))
    assert u.shape == (3, 112, 112, 2) and np.all(np.isfinite(u))
    with pytest.raises(ValueError, match="must both be"):
        model(fixed[:, :100], fixed[:, :100])
    bad = fixed.copy()
    bad[1, 5, 7] = np.nan
    with pytest.raises(ValueError, match=r"moving has NaN or infinite intensities in pair\(s\) \[1\]"):
        model(fixed, bad)
    u_jit = jax.jit(model)(fixed, fixed[::-1])  # traceable inside the caller's jit
    np.testing.assert_allclose(np.asarray(u_jit), u, atol=1e-5)
    f, m, ml, fl = _files(patient)
    out = tmp_path / "learned"
    assert cli.main(["register", "--fixed", str(f), "--moving", str(m), "--moving-labels", str(ml),
                     "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["method"] == "learned" and rep["model"] == "shipped"


_CACHE_SCRIPT = """
import json, sys, jax, jax.numpy as jnp
from jaxreg.runtime import compile_cache
used = [compile_cache.enable(sys.argv[1] or None, min_compile_seconds=0)]
jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()
used.append(compile_cache.enable(sys.argv[2]))  # kept if one was set
print(json.dumps(used))
"""


ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_compile_cache_is_enabled_once_and_stores_compiled_programs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")} | {"HOME": str(tmp_path)}

    def run(arg, **extra):
        out = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT, arg, str(later)], env=env | extra, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.splitlines()[-1])

    default, later = tmp_path / ".cache" / "jaxreg" / "xla", tmp_path / "later"
    assert run("~/.cache/jaxreg/xla") == [str(default)] * 2 and any(default.iterdir())  # `~` expanded, entry written
    assert run("") == [None, str(later)]  # off: nothing set, so a later call may still choose a folder
    own = tmp_path / "own"
    assert run("~/.cache/jaxreg/xla", JAX_COMPILATION_CACHE_DIR=str(own)) == [str(own)] * 2  # the user's folder wins
