"""`jaxreg register`: register cine-MR slices or short-axis stacks given as NIfTI files, or a whole ACDC folder.

    jaxreg register --fixed F.nii.gz --moving M.nii.gz [--moving-labels L.nii.gz] [--fixed-labels G.nii.gz]
                    [--method learned|classic|refine] [--model PATH|hyper] [--delta D] [--alpha A] [--beta B]
                    --out DIR [--overwrite]
    jaxreg register --data-dir ACDC/training --out DIR [--method ...]     # every patient, ED->ES and ES->ED

3D stacks are registered slice by slice (the 2D model). Per slice a 112 x 112 region of interest is placed on the
moving labels' centroid when given, else where fixed and moving differ (`motion_center`: the moving heart; never on
fixed labels), registered, and the result is written back on the fixed image's full grid: warped.nii.gz,
warped_labels.nii.gz (with moving labels), displacement.nii.gz (x, y, z, 2) in pixels (zero outside the region of
interest) with the fixed affine, and report.json. `--model hyper` is the shipped weight-conditioned network:
`--delta/--alpha/--beta` choose the loss weights it answers for (flag units of training; unset: its recipe's).
Errors are one line on stderr with exit status 2; outputs are written to a temporary folder and moved into place
only when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

from jaxreg import files
from jaxreg.errors import UserError
from jaxreg.runtime import chunks, signals

SIZE = 112


MARKER = ".jaxreg-output"  # written into every output folder: the files jaxreg wrote there (what --overwrite may replace)

# chosen by patient-wise CV accuracy and time (docs/results.md, "The default method of jaxreg register")
DEFAULT_METHOD = "refine"


def _load(path, what, labels=False):
    """(array `(x, y, z)`, affine, zooms, header) of a 2D or 3D NIfTI; DataError (a UserError) naming the file."""
    import nibabel as nib

    from jaxreg.data.acdc import DataError, load_nifti

    path = pathlib.Path(path)
    data, affine, zooms = load_nifti(path, what, allow_2d=True)
    header = nib.load(str(path)).header
    if labels:
        f = np.asarray(data, np.float64)
        if not np.all(np.isfinite(f)) or np.any(f != np.round(f)) or f.min() < 0 or f.max() > 3:
            raise DataError(f"{path}: labels must be integers 0..3 (0 background, 1 RV, 2 myocardium, 3 LV)")
        return f.astype(np.int32), affine, zooms, header
    data = np.asarray(data, np.float32)
    if not np.all(np.isfinite(data)):
        raise DataError(f"{path}: {int(np.sum(~np.isfinite(data)))} NaN/inf intensities")
    return data, affine, zooms, header


def check_output(out, inputs=(), overwrite: bool = False) -> pathlib.Path:
    """The absolute output folder, or OutputPathError before any computation.

    Refused: a parent that is missing or not writable; an existing path that is not a folder; an existing folder
    without --overwrite. With --overwrite an existing folder is replaced only if jaxreg wrote it (its MARKER lists
    every file in it) and it is neither the current folder, nor holds the current folder or an input.
    """
    from jaxreg.errors import OutputPathError

    out = pathlib.Path(os.path.abspath(os.path.expanduser(str(out))))
    parent = out.parent
    if not parent.is_dir():
        raise OutputPathError(f"{out}: its parent folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{out}: cannot create it, {parent} is not writable")
    if not (out.exists() or out.is_symlink()):
        return out
    if out.is_symlink() or not out.is_dir():
        raise OutputPathError(f"{out}: exists and is not a folder")
    if not overwrite:
        raise OutputPathError(f"{out}: output folder exists (pass --overwrite to replace it)")
    real = out.resolve()
    cwd = pathlib.Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise OutputPathError(f"{out}: is or contains the current folder; --overwrite never replaces it")
    for path in inputs:
        if path is not None:
            r = pathlib.Path(path).resolve()
            if real == r or real in r.parents:
                raise OutputPathError(f"{out}: contains the input {path}; --overwrite never replaces it")
    try:
        written = set(json.loads((out / MARKER).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise OutputPathError(f"{out}: not an output folder of jaxreg (no readable {MARKER}); --overwrite replaces "
                              "only folders jaxreg wrote") from None
    others = sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir()
                    and str(p.relative_to(out)) not in written | {MARKER})
    if others:
        raise OutputPathError(f"{out}: holds files jaxreg did not write ({', '.join(others[:3])}"
                              f"{', ...' if len(others) > 3 else ''}); not replacing it")
    return out


def _new_output_folder(out: pathlib.Path) -> pathlib.Path:
    """A hidden temporary folder beside `out` (same file system: moved into place by one rename), umask mode."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".jaxreg-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; outputs get the mode any folder the user makes would
    return tmp


def _commit_output(tmp: pathlib.Path, out: pathlib.Path) -> None:
    """Writes the MARKER, then puts `tmp` at `out` by rename; an old `out` is moved aside first, deleted last."""
    written = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if not p.is_dir())
    (tmp / MARKER).write_text(json.dumps({"written_by": "jaxreg register", "files": written}, indent=1))
    if not out.exists():
        os.rename(tmp, out)
        return
    old = pathlib.Path(tempfile.mkdtemp(prefix=".jaxreg-old-", dir=out.parent))
    old.rmdir()

    def restore():  # the previous output comes back unchanged
        if old.exists() and not out.exists():
            os.rename(old, out)

    with signals.cleanup_on_signal(restore):
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            restore()
            raise
    shutil.rmtree(old, ignore_errors=True)


def register_volumes(fixed, moving, moving_labels=None, method=DEFAULT_METHOD, model=None, classic_cfg=None):
    """Slice-wise registration of `(x, y, z)` volumes -> dict of full-grid arrays and per-slice info.

    A slice whose fixed or moving crop is constant (e.g. all zero) holds nothing to register: its displacement is
    zero and `warnings` says so. classic_cfg: the solver's setting (default: `classic.CV_CHOICE` for "classic",
    `classic.REFINE_CHOICE` for "refine", which refines by composition, `classic.refine_composed`).
    """
    import jax
    import jax.numpy as jnp

    from jaxreg import classic, metrics, warp
    from jaxreg.data.pairs import crop, crop_center, crop_origin_for, motion_center, normalize_intensity, uncrop

    fixed_n, moving_n = normalize_intensity(fixed), normalize_intensity(moving)
    nz = fixed.shape[2]
    moving_part = None  # slices without moving labels: where the frames differ (computed once, if needed)
    origins, f_crops, m_crops = [], [], []
    for z in range(nz):
        if moving_labels is not None and (moving_labels[:, :, z] > 0).any():
            center = crop_center(moving_labels[:, :, z])
        else:
            moving_part = motion_center(fixed_n, moving_n) if moving_part is None else moving_part
            center = moving_part
        o = crop_origin_for(center, SIZE)
        origins.append(o)
        f_crops.append(crop(fixed_n[:, :, z], o, SIZE))
        m_crops.append(crop(moving_n[:, :, z], o, SIZE))
    f_crops, m_crops = np.stack(f_crops), np.stack(m_crops)
    blank = [z for z in range(nz) if np.ptp(f_crops[z]) == 0 or np.ptp(m_crops[z]) == 0]
    warnings = [f"slice {z}: the {'fixed' if np.ptp(f_crops[z]) == 0 else 'moving'} image is constant there, "
                "nothing to register; displacement set to zero" for z in blank]
    t0 = time.perf_counter()
    if method in ("learned", "refine"):
        u = np.asarray(model(f_crops, m_crops))
        if method == "refine":
            u = np.asarray(classic.refine_batch(f_crops, m_crops, u, classic_cfg or classic.REFINE_CHOICE,
                                                chunks.pair_chunk(kind="solver"), composed=True)[0])
    else:
        u = np.asarray(classic.register_batch(f_crops, m_crops, classic_cfg or classic.CV_CHOICE,
                                                chunks.pair_chunk(kind="solver"))[0])
    seconds = time.perf_counter() - t0
    u = np.array(u)
    u[blank] = 0.0
    fold = np.asarray(jax.vmap(metrics.folding_fraction)(jnp.asarray(u)))
    disp = np.stack([uncrop(u[z], origins[z], fixed.shape[:2]) for z in range(nz)], axis=2).astype(np.float32)
    warped = np.stack([np.asarray(warp.warp(moving[:, :, z], disp[:, :, z])) for z in range(nz)], axis=2)
    out = {"displacement": disp, "warped": warped.astype(np.float32), "seconds": seconds, "warnings": warnings,
           "folding_percent_per_slice": (100 * fold).tolist(), "crop_origins": [o.tolist() for o in origins]}
    if moving_labels is not None:
        out["warped_labels"] = np.stack([np.asarray(jnp.argmax(warp.warp_labels(moving_labels[:, :, z], disp[:, :, z], 4), -1))
                                         for z in range(nz)], axis=2).astype(np.uint8)
    return out


def _dice_report(fixed_labels, warped_labels, moving_labels):
    from jaxreg import metrics

    rows = []
    for z in range(fixed_labels.shape[2]):
        f, w, m = fixed_labels[:, :, z], warped_labels[:, :, z], moving_labels[:, :, z]
        if not ((f > 0).any() and (m > 0).any()):
            continue
        rows.append((np.asarray(metrics.dice(f, m, (3, 1, 2))), np.asarray(metrics.dice(f, w, (3, 1, 2)))))
    if not rows:
        return {}
    with np.errstate(all="ignore"):  # a structure absent from every slice: NaN, written as null
        import warnings as _w

        with _w.catch_warnings():
            _w.simplefilter("ignore", RuntimeWarning)
            before = np.nanmean(np.stack([r[0] for r in rows]), 0)
            after = np.nanmean(np.stack([r[1] for r in rows]), 0)
            mean_before, mean_after = float(np.nanmean(before)), float(np.nanmean(after))
    return {"dice_before": dict(zip(("LV", "RV", "MYO"), before.round(4).tolist())),
            "dice_after": dict(zip(("LV", "RV", "MYO"), after.round(4).tolist())),
            "dice_mean_before": mean_before, "dice_mean_after": mean_after}


def _nifti(data, affine, header):
    """A NIfTI image on the fixed grid keeping the fixed header's qform/sform codes and units."""
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=int(header["qform_code"]) or 1)
    img.set_sform(affine, code=int(header["sform_code"]) or 1)
    img.header.set_xyzt_units(*header.get_xyzt_units())
    return img


def _write_pair(out_dir, fixed_path, moving_path, mlab_path, flab_path, args, model):
    import nibabel as nib

    fixed, f_aff, f_zoom, f_hdr = _load(fixed_path, "fixed image")
    moving, m_aff, m_zoom, _ = _load(moving_path, "moving image")
    if fixed.shape != moving.shape:
        raise UserError(f"{moving_path}: shape {moving.shape} differs from the fixed image's {fixed.shape}")
    if not np.allclose(f_zoom, m_zoom, rtol=1e-3):
        raise UserError(f"{moving_path}: spacing {m_zoom} differs from the fixed image's {f_zoom}")
    if nib.aff2axcodes(f_aff) != nib.aff2axcodes(m_aff):
        raise UserError(f"{moving_path}: orientation {''.join(nib.aff2axcodes(m_aff))} differs from the fixed "
                        f"image's {''.join(nib.aff2axcodes(f_aff))}; reorient it onto the fixed grid first")
    mlab = flab = None
    if mlab_path:
        mlab, _, _, _ = _load(mlab_path, "moving labels", labels=True)
        if mlab.shape != moving.shape:
            raise UserError(f"{mlab_path}: shape {mlab.shape} differs from the moving image's {moving.shape}")
    if flab_path:
        flab, _, _, _ = _load(flab_path, "fixed labels", labels=True)
        if flab.shape != fixed.shape:
            raise UserError(f"{flab_path}: shape {flab.shape} differs from the fixed image's {fixed.shape}")
    res = register_volumes(fixed, moving, mlab, args.method, model)
    for w in res["warnings"]:
        print(f"jaxreg: warning: {moving_path}: {w}", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    nib.save(_nifti(res["warped"], f_aff, f_hdr), str(out_dir / "warped.nii.gz"))
    nib.save(_nifti(res["displacement"], f_aff, f_hdr), str(out_dir / "displacement.nii.gz"))
    report = {"method": args.method, "model": str(args.model or "shipped") if args.method != "classic" else None,
              **({"loss_weights": dict(model.default_weights, **_requested_weights(args))}
                 if args.method != "classic" and getattr(model, "conditioned", False) else {}),
              "fixed": str(fixed_path), "moving": str(moving_path), "slices": fixed.shape[2],
              "seconds": res["seconds"], "folding_percent": float(np.mean(res["folding_percent_per_slice"])),
              "folding_percent_per_slice": res["folding_percent_per_slice"], "crop_origins": res["crop_origins"],
              "warnings": res["warnings"],
              "displacement_units": "pixels, components along array axes 0 and 1, on the fixed grid"}
    if mlab is not None:
        nib.save(_nifti(res["warped_labels"], f_aff, f_hdr), str(out_dir / "warped_labels.nii.gz"))
        if flab is not None:
            report.update(_dice_report(flab, res["warped_labels"], mlab))
    files.write_json(out_dir / "report.json", report)
    return report


def _check_arguments(args):
    """Flag combinations, input files and the output path: all checked before any model loads or computes."""
    if args.data_dir is not None:
        given = [f"--{n.replace('_', '-')}" for n in ("fixed", "moving", "moving_labels", "fixed_labels")
                 if getattr(args, n) is not None]
        if given:
            raise UserError(f"{', '.join(given)} cannot be combined with --data-dir (a folder brings its own files)")
        if not pathlib.Path(args.data_dir).is_dir():
            raise UserError(f"{args.data_dir}: data folder does not exist")
    elif args.fixed is None or args.moving is None:
        raise UserError("give --fixed and --moving, or --data-dir for a whole ACDC folder")
    if args.fixed_labels is not None and args.moving_labels is None:
        raise UserError("--fixed-labels needs --moving-labels (the Dice compares the warped moving labels with them)")
    for name in ("fixed", "moving", "moving_labels", "fixed_labels"):
        path = getattr(args, name)
        if path is not None and not pathlib.Path(path).is_file():
            raise UserError(f"{path}: missing {name.replace('_', ' ')} file")
    weights = _requested_weights(args)
    for name, v in weights.items():
        if not np.isfinite(v) or v < 0:
            raise UserError(f"--{name} must be a finite number >= 0; got {v!r}")
    if weights and args.method == "classic":
        raise UserError(f"--{next(iter(weights))} sets a weight-conditioned network's loss weights; --method classic "
                        "uses none (its settings: jaxreg.classic.ClassicConfig)")
    inputs = [args.fixed, args.moving, args.moving_labels, args.fixed_labels, args.data_dir, _model_path(args.model)]
    return check_output(args.out, inputs, args.overwrite)


def _requested_weights(args) -> dict:
    return {n: getattr(args, n) for n in ("delta", "alpha", "beta") if getattr(args, n) is not None}


def _model_path(model):
    from jaxreg.inference import SHIPPED_MODELS

    return str(SHIPPED_MODELS.get(model, model)) if model is not None else None


def cmd_register(args) -> int:
    out = _check_arguments(args)
    model = None
    if args.method in ("learned", "refine"):
        from jaxreg.inference import load_model

        model = load_model(args.model)  # a broken model folder: a UserError naming its file
        weights = _requested_weights(args)
        if weights:
            if not model.conditioned:
                raise UserError(f"{_model_path(args.model) or 'the shipped model'}: not a weight-conditioned model, "
                                f"so --{next(iter(weights))} cannot apply; use --model hyper")
            model = _with_weights(model, weights)
    tmp = _new_output_folder(out)
    with signals.cleanup_on_signal(lambda: shutil.rmtree(tmp, ignore_errors=True)):
        return _register_into(args, model, tmp, out)


def _with_weights(model, weights: dict):
    """The model called at `weights` (keywords of a weight-conditioned `load_model` callable), attributes kept."""
    def call(fixed, moving):
        return model(fixed, moving, **weights)

    call.conditioned, call.default_weights, call.config = True, model.default_weights, model.config
    return call


def _register_into(args, model, tmp, out) -> int:
    try:
        if args.data_dir is None:
            rep = _write_pair(tmp, args.fixed, args.moving, args.moving_labels, args.fixed_labels, args, model)
            print(f"registered {rep['slices']} slice(s) in {rep['seconds']:.2f} s, folding {rep['folding_percent']:.3f}%"
                  + (f", Dice {100 * rep['dice_mean_before']:.1f}% -> {100 * rep['dice_mean_after']:.1f}%"
                     if rep.get("dice_mean_after") is not None and np.isfinite(rep["dice_mean_after"]) else ""))
        else:
            summary = _register_folder(tmp, args, model)
            print(json.dumps(files.json_safe(summary["overall"]), indent=1))
        _commit_output(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when committed
    return 0


def _register_folder(tmp, args, model):
    from jaxreg.data.acdc import find_patient_dirs, parse_info_cfg

    dirs = find_patient_dirs(args.data_dir)
    rows, failures = [], {}
    for d in dirs:
        try:
            info = parse_info_cfg(d / "Info.cfg")
            frames = {ph: d / f"{d.name}_frame{info[ph]:02d}.nii.gz" for ph in ("ED", "ES")}
            gts = {ph: d / f"{d.name}_frame{info[ph]:02d}_gt.nii.gz" for ph in ("ED", "ES")}
            done = []
            for mov, fix in (("ED", "ES"), ("ES", "ED")):
                rep = _write_pair(tmp / d.name / f"{mov}_to_{fix}", frames[fix], frames[mov],
                                  gts[mov] if gts[mov].exists() else None,
                                  gts[fix] if gts[fix].exists() and gts[mov].exists() else None, args, model)
                done.append({"patient": d.name, "direction": f"{mov}->{fix}", **{k: v for k, v in rep.items()
                             if k.startswith("dice") or k in ("seconds", "folding_percent", "slices")}})
            rows += done
        except UserError as e:  # one unreadable patient is reported and skipped, the others are kept
            shutil.rmtree(tmp / d.name, ignore_errors=True)
            failures[d.name] = str(e)
            print(f"jaxreg: skipping {d.name}: {e}", file=sys.stderr)
    if not rows:
        raise UserError(f"{args.data_dir}: no patient could be registered")
    overall = {"pairs": len(rows), "failed_patients": failures,
               "folding_percent": float(np.mean([r["folding_percent"] for r in rows])),
               "seconds_per_volume_pair": float(np.mean([r["seconds"] for r in rows]))}
    with_gt = [r for r in rows if r.get("dice_mean_after") is not None and np.isfinite(r["dice_mean_after"])]
    if with_gt:
        overall["dice_mean_before"] = float(np.mean([r["dice_mean_before"] for r in with_gt]))
        overall["dice_mean_after"] = float(np.mean([r["dice_mean_after"] for r in with_gt]))
    summary = {"overall": overall, "pairs": rows}
    files.write_json(tmp / "summary.json", summary)
    return summary


def build_parser():
    from jaxreg.runtime.compile_cache import DEFAULT as CACHE

    p = argparse.ArgumentParser(prog="jaxreg", description="Deformable cardiac registration in JAX.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("register", help="register NIfTI images (2D slices or 3D short-axis stacks) or an ACDC folder")
    r.add_argument("--fixed", help="fixed image (.nii/.nii.gz)")
    r.add_argument("--moving", help="moving image, same grid as --fixed")
    r.add_argument("--moving-labels", dest="moving_labels", help="moving labels 0..3: warped and used to place the ROI")
    r.add_argument("--fixed-labels", dest="fixed_labels", help="fixed labels 0..3: only for the Dice in report.json "
                   "(needs --moving-labels)")
    r.add_argument("--data-dir", dest="data_dir", help="ACDC-layout folder: every patient, ED->ES and ES->ED")
    r.add_argument("--method", choices=("learned", "classic", "refine"), default=DEFAULT_METHOD,
                   help="refine (default): the network's field refined by composition with classic iterations at "
                   "half, then full resolution (20 each; jaxreg.classic.REFINE_CHOICE, chosen by patient-wise CV on "
                   "a network's fold models: 86.7 %% mean Dice against 85.3 %% for learned, the network alone, and "
                   "86.0 %% for the older additive refinement, folding 0.033 against 0.027 %%; docs/results.md), "
                   "~3x learned's time (~42 against ~14 ms a slice pair on one busy CPU core, plus seconds of "
                   "tracing a call and a one-off solver compile, cached); classic: no network, the "
                   "diffeomorphic setting chosen by the same CV (jaxreg.classic.CV_CHOICE: 84.4 %% against 82.9 %% "
                   "for SimpleITK's multi-resolution demons, no folding, ~0.2 s a slice pair plus ~5 s of tracing "
                   "a call and a one-off ~20 s compile)")
    r.add_argument("--model", help="training workdir or model folder, or 'hyper': the shipped weight-conditioned "
                   "model (default: the shipped model)")
    for name, text in (("delta", "NGF"), ("alpha", "curvature"), ("beta", "label")):
        r.add_argument(f"--{name}", type=float, help=f"{text} weight a weight-conditioned model (--model hyper) "
                       "registers with, in the training flags' units (unset: its recipe's)")
    r.add_argument("--out", required=True, help="output folder (refused if it exists, unless --overwrite)")
    r.add_argument("--overwrite", action="store_true", help="replace --out if it is an output folder jaxreg wrote "
                   "(never the current folder, a folder holding an input, or one with other files)")
    r.add_argument("--compile-cache", dest="compile_cache", default=CACHE,
                   help="JAX's persistent compilation cache: a second call skips compiling the network or solver "
                        "(empty: off; JAX_COMPILATION_CACHE_DIR takes precedence)")
    r.add_argument("--no-eigen-convolutions", dest="eigen_convolutions", action="store_false",
                   help="leave XLA:CPU's convolutions to jaxlib's default (YNNPACK for large ones on jaxlib 0.10.2; "
                        "by default jaxreg keeps them on Eigen, 1.4x faster inference: jaxreg.runtime.xla_cpu)")
    r.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                   help="leave glibc's malloc as it is (by default it reuses the large buffers XLA:CPU frees "
                        "instead of unmapping them: jaxreg.runtime.malloc)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from jaxreg.runtime import compile_cache, malloc, xla_cpu

    if args.keep_freed_memory:
        malloc.keep_freed_memory()  # before XLA's worker threads start
    if args.eigen_convolutions:
        xla_cpu.prefer_eigen_convolutions()  # before the backends start
    compile_cache.enable(args.compile_cache)  # before the first compilation
    with signals.handle_signals():  # SIGINT 130, SIGTERM 143, the temporary output removed first
        try:
            return cmd_register(args)
        except UserError as e:
            print(f"jaxreg: error: {e}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
