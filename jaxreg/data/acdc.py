"""ACDC reader: the official download's layout (`patientXXX/Info.cfg`, `patientXXX_frameNN[_gt].nii.gz`), unchanged.

Volumes are nibabel arrays `(x, y, z)`; a 2D slice is `volume[:, :, z]`, its pixel size `zooms[:2]` in mm.
Labels: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import pathlib
import zlib
from struct import error as struct_error
from typing import Sequence

import numpy as np

from jaxreg.errors import DataError
from jaxreg.data.pairs import PairSet, crop, crop_center, crop_origin_for, motion_center, normalize_intensity

log = logging.getLogger(__name__)

DIRECTIONS = ("ED->ES", "ES->ED")


@dataclasses.dataclass(frozen=True)
class Patient:
    """One ACDC patient's ED and ES volumes `(x, y, z)`: images float32 (as stored), labels uint8."""

    id: str
    group: str
    info: dict
    images: dict  # "ED"/"ES" -> array
    labels: dict
    spacing: tuple  # mm, (dx, dy, dz)
    affine: np.ndarray
    frames: dict  # "ED"/"ES" -> frame number (1-based, as in Info.cfg)


def parse_info_cfg(path) -> dict:
    """Info.cfg ("ED: 1", "ES: 12", "Group: DCM", "Height: 184.0", "NbFrame: 30", "Weight: 95.0") -> dict."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing Info.cfg")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    raw = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise DataError(f"{path}:{n}: expected 'Key: value', got {line!r}")
        key, value = line.split(":", 1)
        raw[key.strip()] = value.strip()
    types = {"ED": int, "ES": int, "Group": str, "Height": float, "NbFrame": int, "Weight": float}
    out = {}
    for key, typ in types.items():
        if key not in raw:
            if key in ("ED", "ES"):
                raise DataError(f"{path}: no '{key}:' entry")
            continue
        try:
            out[key] = typ(float(raw[key])) if typ is int else typ(raw[key])
        except ValueError:
            raise DataError(f"{path}: '{key}: {raw[key]}' is not a valid {typ.__name__}") from None
    for key, value in raw.items():
        out.setdefault(key, value)
    return out


def load_nifti(path, what: str = "image", allow_2d: bool = False):
    """Reads a 3D NIfTI -> (array, affine 4x4, zooms (3,)); a clear DataError naming the file otherwise.

    allow_2d: a 2D image `(x, y)` is read as one slice `(x, y, 1)` with slice thickness 1. Real-valued voxels only:
    RGB (structured) and complex images are refused, not silently converted.
    """
    import nibabel as nib

    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing {what} file")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError, ValueError,
            TypeError, struct_error) as e:
        raise DataError(f"{path}: unreadable NIfTI ({type(e).__name__}: {e})") from None
    if data.dtype.fields is not None or data.dtype.kind not in "biuf":
        kind = "RGB/structured" if data.dtype.fields is not None else data.dtype.name
        raise DataError(f"{path}: {what} has {kind} voxels; expected one real value per voxel (grey-scale)")
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if allow_2d and data.ndim == 2:
        data, zooms = data[..., None], zooms[:2] + [1.0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a {'2D slice or ' if allow_2d else ''}3D volume (x, y, z), "
                        f"got shape {data.shape}")
    return data, np.asarray(img.affine, np.float64), tuple(zooms)


def load_patient(patient_dir) -> Patient:
    """Loads Info.cfg and the ED/ES frames with labels of one patient folder; DataError naming the bad file."""
    d = pathlib.Path(patient_dir)
    if not d.is_dir():
        raise DataError(f"{d}: not a patient folder")
    pid = d.name
    info = parse_info_cfg(d / "Info.cfg")
    images, labels, spacing, affine, frames = {}, {}, None, None, {}
    for phase in ("ED", "ES"):
        frames[phase] = info[phase]
        stem = d / f"{pid}_frame{info[phase]:02d}"
        img_path, lab_path = stem.with_name(stem.name + ".nii.gz"), stem.with_name(stem.name + "_gt.nii.gz")
        img, aff, zooms = load_nifti(img_path, f"{phase} image")
        lab, _, _ = load_nifti(lab_path, f"{phase} label")
        img = np.asarray(img, np.float32)
        if not np.all(np.isfinite(img)):
            raise DataError(f"{img_path}: {int(np.sum(~np.isfinite(img)))} NaN/inf intensities")
        if lab.shape != img.shape:
            raise DataError(f"{lab_path}: label shape {lab.shape} differs from its image {img.shape}")
        labf = np.asarray(lab, np.float64)
        if not np.all(np.isfinite(labf)) or np.any(labf != np.round(labf)):
            raise DataError(f"{lab_path}: labels must be integers 0..3")
        bad = np.setdiff1d(np.unique(labf).astype(np.int64), [0, 1, 2, 3])
        if len(bad):
            raise DataError(f"{lab_path}: unknown label values {bad.tolist()} (expected 0..3)")
        images[phase], labels[phase] = img, labf.astype(np.uint8)
        if spacing is None:
            spacing, affine = zooms, aff
        elif images["ED"].shape != img.shape:
            raise DataError(f"{img_path}: ES shape {img.shape} differs from ED shape {images['ED'].shape}")
    return Patient(pid, str(info.get("Group", "unknown")), info, images, labels, spacing, affine, frames)


def find_patient_dirs(data_dir) -> list[pathlib.Path]:
    """Patient folders under `data_dir` (or its `training/` and `testing/` subfolders, as the download has them)."""
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist")
    dirs = sorted(p for p in root.glob("patient*") if p.is_dir())
    if not dirs:
        for sub in ("training", "testing"):
            dirs += sorted(p for p in (root / sub).glob("patient*") if p.is_dir())
    if not dirs:
        raise DataError(f"{root}: no patientXXX folders found (expected the ACDC layout)")
    return dirs


def load_acdc(data_dir) -> tuple[list[Patient], dict[str, str]]:
    """All readable patients and {folder: error} for the broken ones (logged, never silently dropped)."""
    patients, failures = [], {}
    for d in find_patient_dirs(data_dir):
        try:
            patients.append(load_patient(d))
        except DataError as e:
            failures[str(d)] = str(e)
            log.warning("skipping %s: %s", d.name, e)
    if not patients:
        raise DataError(f"{data_dir}: no patient could be read; first error: {next(iter(failures.values()))}")
    return patients, failures


def resample_slice(image: np.ndarray, labels: np.ndarray, spacing: Sequence[float], pixel_mm: float):
    """In-plane resampling of one slice to `pixel_mm` (bilinear image, soft-one-hot-argmax labels) via jaxreg.warp."""
    import jax.numpy as jnp

    from jaxreg import warp

    ratio = np.asarray([pixel_mm / spacing[0], pixel_mm / spacing[1]])
    out_shape = tuple(int(round(n / r)) for n, r in zip(image.shape, ratio))
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in out_shape], indexing="ij"), -1)
    u = jnp.asarray(grid * (ratio.astype(np.float32) - 1.0))
    img = np.asarray(warp.warp(jnp.asarray(image), u, order=1))
    lab = np.asarray(jnp.argmax(warp.warp_labels(jnp.asarray(labels.astype(np.int32)), u, 4), -1)).astype(np.uint8)
    return img, lab


def load_acdc_pairs(
    data_dir,
    size: int = 112,
    directions: Sequence[str] = DIRECTIONS,
    require_all_labels: bool = True,
    pixel_mm: float | None = None,
    crop_on: str = "moving_labels",
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> PairSet:
    """The paper's 2D ED/ES slice-pair set: `(N, size, size)` crops, both directions by default.

    Slices qualify when labels 1, 2 and 3 are all present in both frames (`require_all_labels`; else any
    foreground in both). Intensities: per-volume percentile scaling to [0, 1]. `pixel_mm`: optional in-plane
    resampling. `crop_on`: "moving_labels" (default: usable at inference, where the moving labels are given),
    "fixed_labels" or "union" (training only: they peek at the fixed labels), or "image" (no labels: where the two
    frames differ, `motion_center` of the slice pair).
    Broken patients are skipped, logged and listed in `PairSet.skipped`.
    """
    for d in directions:
        if d not in DIRECTIONS:
            raise ValueError(f"directions must be drawn from {DIRECTIONS}; got {d!r}")
    if crop_on not in ("moving_labels", "fixed_labels", "union", "image"):
        raise ValueError(f"crop_on must be moving_labels, fixed_labels, union or image; got {crop_on!r}")
    patients, failures = load_acdc(data_dir)
    rows = {k: [] for k in ("fixed", "moving", "fixed_labels", "moving_labels", "patient", "slice_index", "direction",
                            "crop_origin", "spacing", "group")}
    affines = {}
    for p in patients:
        vols = {ph: normalize_intensity(p.images[ph], *percentiles) for ph in ("ED", "ES")}
        affines[p.id] = {"affine": p.affine, "shape": p.images["ED"].shape, "spacing": p.spacing}
        for z in range(vols["ED"].shape[2]):
            sl = {ph: (vols[ph][:, :, z], p.labels[ph][:, :, z]) for ph in ("ED", "ES")}
            present = [set(np.unique(sl[ph][1]).tolist()) for ph in ("ED", "ES")]
            ok = all({1, 2, 3} <= s for s in present) if require_all_labels else all(len(s - {0}) for s in present)
            if not ok:
                continue
            spacing = np.asarray(p.spacing[:2], np.float32)
            if pixel_mm is not None:
                sl = {ph: resample_slice(*sl[ph], p.spacing[:2], pixel_mm) for ph in sl}
                spacing = np.asarray([pixel_mm, pixel_mm], np.float32)
            for direction in directions:
                mov, fix = direction.split("->")
                (m_img, m_lab), (f_img, f_lab) = sl[mov], sl[fix]
                if crop_on == "moving_labels":
                    center = crop_center(m_lab)
                elif crop_on == "fixed_labels":
                    center = crop_center(f_lab)
                elif crop_on == "union":
                    center = crop_center((m_lab > 0) | (f_lab > 0))
                else:
                    center = motion_center(f_img, m_img)  # per slice: on the resampled grid if pixel_mm
                origin = crop_origin_for(center, size)
                rows["fixed"].append(crop(f_img, origin, size))
                rows["moving"].append(crop(m_img, origin, size))
                rows["fixed_labels"].append(crop(f_lab, origin, size))
                rows["moving_labels"].append(crop(m_lab, origin, size))
                rows["patient"].append(p.id)
                rows["slice_index"].append(z)
                rows["direction"].append(direction)
                rows["crop_origin"].append(origin)
                rows["spacing"].append(spacing)
                rows["group"].append(p.group)
    if not rows["fixed"]:
        raise DataError(f"{data_dir}: no slice pair qualifies (require_all_labels={require_all_labels})")
    arrays = {k: np.stack(v) if k in ("fixed", "moving", "fixed_labels", "moving_labels", "crop_origin", "spacing")
              else np.asarray(v) for k, v in rows.items()}
    for k in ("fixed", "moving"):
        arrays[k] = arrays[k].astype(np.float32)
    for k in ("fixed_labels", "moving_labels"):
        arrays[k] = arrays[k].astype(np.uint8)
    return PairSet(**arrays, affines=affines, skipped=failures)
