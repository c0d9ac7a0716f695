"""`jaxreg register`: outputs on the fixed grid, and one-line errors with exit status 2 for bad input."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import nibabel as nib
import numpy as np
import pytest

from jaxreg import cli
from tests.conftest import SHARED_ACDC
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
    out = tmp_path / "default"
    assert cli.main(["register", "--fixed", str(f), "--moving", str(m), "--moving-labels", str(ml),
                     "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["method"] == cli.DEFAULT_METHOD == "refine" and rep["model"] == "shipped"  # the CV's choice


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


# ---- issue 24: nothing lost, nothing half-written, one line and exit 2 for bad input -------------------------------

def _register(args, capsys=None):
    rc = cli.main(["register", *map(str, args)])
    err = capsys.readouterr().err if capsys is not None else ""
    return rc, err


def _copy_inputs(patient, folder):
    folder.mkdir(parents=True, exist_ok=True)
    f, m, ml, fl = _files(patient)
    for p in (f, m, ml, fl):
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "notes.txt").write_text("my notes")
    return [folder / p.name for p in (f, m, ml, fl)]


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", ["cwd", "inputs_folder", "parent_of_inputs"])
def test_overwrite_never_deletes_the_current_folder_or_the_inputs(patient, tmp_path, capsys, monkeypatch, target):
    work = tmp_path / "work"
    f, m, ml, fl = _copy_inputs(patient, work / "inputs")
    before = _snapshot(tmp_path)
    monkeypatch.chdir(work / "inputs" if target == "cwd" else tmp_path)
    out = {"cwd": ".", "inputs_folder": work / "inputs", "parent_of_inputs": work}[target]
    rc, err = _register(["--fixed", f, "--moving", m, "--method", "classic", "--out", out, "--overwrite"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "never replaces it" in err, err
    assert _snapshot(tmp_path) == before  # not one file touched, nothing left behind


def test_overwrite_replaces_only_a_folder_jaxreg_wrote_and_keeps_it_on_failure(patient, tmp_path, capsys):
    f, m, ml, _ = _files(patient)
    out = tmp_path / "out"
    args = ["--fixed", f, "--moving", m, "--method", "classic", "--out", out]
    assert _register(args, capsys)[0] == 0
    marker = json.loads((out / cli.MARKER).read_text())
    assert sorted(marker["files"]) == ["displacement.nii.gz", "report.json", "warped.nii.gz"]
    assert (out.stat().st_mode & 0o777) == (0o777 & ~_umask())  # not mkdtemp's 0700
    first = _snapshot(out)
    # a failing rerun (broken moving image) leaves the previous output exactly as it was
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    rc, err = _register(["--fixed", f, "--moving", bad, "--method", "classic", "--out", out, "--overwrite"], capsys)
    assert rc == 2 and "bad.nii.gz" in err and _snapshot(out) == first
    assert not list(tmp_path.glob(".jaxreg-*"))
    # a successful rerun replaces it (with labels now: one more file)
    assert _register(args + ["--moving-labels", ml, "--overwrite"], capsys)[0] == 0
    assert (out / "warped_labels.nii.gz").is_file() and not list(tmp_path.glob(".jaxreg-*"))
    # a file the user put there: the folder is no longer only jaxreg's, so it is not replaced
    (out / "mine.txt").write_text("keep me")
    rc, err = _register(args + ["--overwrite"], capsys)
    assert rc == 2 and "mine.txt" in err and (out / "mine.txt").read_text() == "keep me"
    other = tmp_path / "other"
    other.mkdir()
    rc, err = _register(args[:-1] + [other, "--overwrite"], capsys)
    assert rc == 2 and "not an output folder of jaxreg" in err


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_2d(path, arr, affine=None):
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.mark.parametrize("case", ["truncated_2d", "rgb", "complex", "empty_model_config", "missing_parent",
                                  "out_is_file", "orientation", "fixed_with_data_dir", "fixed_labels_alone"])
def test_more_bad_inputs_are_one_line_exit_2_before_any_work(patient, tmp_path, capsys, case):
    f, m, ml, fl = _files(patient)
    out = tmp_path / "out"
    args = ["--fixed", f, "--moving", m, "--method", "classic", "--out", out]
    if case == "truncated_2d":
        full = _write_2d(tmp_path / "full.nii.gz", np.random.default_rng(0).random((48, 40)).astype(np.float32))
        (tmp_path / "t.nii.gz").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
        args[3] = tmp_path / "t.nii.gz"
    elif case == "rgb":
        rgb = np.zeros((48, 40, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        args[3] = _write_2d(tmp_path / "rgb.nii.gz", rgb)
    elif case == "complex":
        args[3] = _write_2d(tmp_path / "c.nii.gz", np.ones((48, 40, 2), np.complex64))
    elif case == "empty_model_config":
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text("{}")
        args[args.index("classic")] = "learned"
        args += ["--model", tmp_path / "model"]
    elif case == "missing_parent":
        args[-1] = tmp_path / "no" / "such" / "out"
    elif case == "out_is_file":
        out.write_text("a file")
        args += ["--overwrite"]
    elif case == "orientation":
        img = nib.load(str(m))
        flipped = img.affine @ np.diag([-1.0, 1.0, 1.0, 1.0])
        args[3] = _write_2d(tmp_path / "o.nii.gz", np.asarray(img.dataobj), flipped)
    elif case == "fixed_with_data_dir":
        args += ["--data-dir", patient.parent]
    elif case == "fixed_labels_alone":
        args += ["--fixed-labels", fl]
    rc, err = _register(args, capsys)
    assert rc == 2, err
    assert err.startswith("jaxreg: error: ") and err.count("\n") == 1 and "Traceback" not in err
    named = {"truncated_2d": "t.nii.gz", "rgb": "rgb.nii.gz", "complex": "c.nii.gz", "empty_model_config":
             "config.json", "missing_parent": "does not exist", "out_is_file": "not a folder", "orientation":
             "orientation", "fixed_with_data_dir": "--data-dir", "fixed_labels_alone": "--moving-labels"}[case]
    assert named in err, err
    if case == "out_is_file":
        assert out.read_text() == "a file"
    else:
        assert not out.exists()
    assert not list(tmp_path.rglob(".jaxreg-*"))


def test_folder_mode_skips_an_odd_patient_and_keeps_the_others(tmp_path, capsys):
    root = tmp_path / "acdc"
    write_patient(root, "patient001", shape=(48, 40, 2), center=(24, 16), rv_slices=(0, 1))
    bad = write_patient(root, "patient002", shape=(48, 40, 2), center=(24, 16), rv_slices=(0, 1))
    rgb = np.zeros((48, 40, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(bad / "patient002_frame08.nii.gz"))
    out = tmp_path / "out"
    rc, err = _register(["--data-dir", root, "--method", "classic", "--out", out], capsys)
    assert rc == 0, err
    assert "skipping patient002" in err and "RGB" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["pairs"] == 2 and list(summary["overall"]["failed_patients"]) == ["patient002"]
    assert (out / "patient001" / "ED_to_ES" / "report.json").is_file() and not (out / "patient002").exists()


def test_report_is_valid_json_when_a_structure_is_absent_and_headers_keep_qform(patient, tmp_path, capsys):
    f, m, ml, fl = _files(patient)
    no_rv = tmp_path / "no_rv"
    no_rv.mkdir()
    paths = []
    for p in (ml, fl):
        img = nib.load(str(p))
        lab = np.asarray(img.dataobj).copy()
        lab[lab == 1] = 0  # no RV in either map: its Dice is undefined
        paths.append(_write_2d(no_rv / p.name, lab, img.affine))
    out = tmp_path / "out"
    rc, _ = _register(["--fixed", f, "--moving", m, "--moving-labels", paths[0], "--fixed-labels", paths[1],
                       "--method", "classic", "--out", out], capsys)
    assert rc == 0

    def no_nan(token):
        raise AssertionError(f"invalid JSON constant {token}")

    rep = json.loads((out / "report.json").read_text(), parse_constant=no_nan)
    assert rep["dice_after"]["RV"] is None and rep["dice_after"]["LV"] > 0.5
    src, dst = nib.load(str(f)).header, nib.load(str(out / "warped.nii.gz")).header
    assert int(dst["qform_code"]) == (int(src["qform_code"]) or 1) and dst.get_xyzt_units() == src.get_xyzt_units()


def test_constant_moving_image_gives_identity_and_a_warning(patient, tmp_path, capsys):
    f, m, _, _ = _files(patient)
    img = nib.load(str(m))
    zero = _write_2d(tmp_path / "zero.nii.gz", np.zeros(img.shape, np.float32), img.affine)
    out = tmp_path / "out"
    rc, err = _register(["--fixed", f, "--moving", zero, "--method", "learned", "--out", out], capsys)
    assert rc == 0 and "warning" in err and "constant" in err
    disp = np.asarray(nib.load(str(out / "displacement.nii.gz")).dataobj)
    assert np.abs(disp).max() == 0
    assert len(json.loads((out / "report.json").read_text())["warnings"]) == 2


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_exit_130_and_143_leaving_no_temporary_output(patient, tmp_path, sig, code):
    root = pathlib.Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    data = SHARED_ACDC if SHARED_ACDC.is_dir() else patient.parent
    proc = subprocess.Popen([sys.executable, "-m", "jaxreg.cli", "register", "--data-dir", str(data), "--method",
                             "classic", "--out", str(out)], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".jaxreg-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)  # registration has started: its temporary output folder exists
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("registration finished before the signal")
    assert proc.returncode == code, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".jaxreg-*"))
