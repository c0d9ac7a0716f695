"""jaxreg.data: ACDC reader on NIfTI fixtures written here, crops, folds, phantom and augmentation."""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest

from jaxreg import metrics, warp
from jaxreg.data import (
    DataError,
    augment_batch,
    crop,
    kfold_patients,
    load_acdc_pairs,
    load_nifti,
    load_patient,
    motion_center,
    parse_info_cfg,
    phantom_pairs,
    split_fold,
    uncrop,
)
from jaxreg.data.pairs import crop_center
from tests.conftest import SHARED_ACDC

OFFICIAL_INFO = "ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n"


def disc_labels(shape, center, r_lv, wall, rv=True):
    """(x, y, z) labels: LV cavity disc, myocardial ring, RV crescent beside it."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    d = np.hypot(x - center[0], y - center[1])
    lab = np.zeros(shape[:2], np.uint8)
    if rv:
        lab[(np.hypot(x - center[0], y - center[1] - r_lv - wall - 6) < r_lv + 2) & (d > r_lv + wall + 1)] = 1
    lab[d < r_lv + wall] = 2
    lab[d < r_lv] = 3
    return lab


def write_patient(root, pid, shape=(60, 50, 4), group="NOR", es=8, center=(30, 22), rv_slices=(1, 2), spacing=(1.5, 1.4, 10.0)):
    d = pathlib.Path(root) / pid
    d.mkdir(parents=True)
    (d / "Info.cfg").write_text(OFFICIAL_INFO.replace("ES: 12", f"ES: {es}").replace("DCM", group))
    aff = np.diag(list(spacing) + [1.0])
    for frame, r in ((1, 9), (es, 6)):
        lab = np.zeros(shape, np.uint8)
        img = np.random.default_rng(frame).random(shape).astype(np.float32) * 100
        for z in range(shape[2]):
            lab[..., z] = disc_labels(shape, center, r, 3, rv=z in rv_slices)
            img[..., z] += lab[..., z] * 50
        nib.save(nib.Nifti1Image(img, aff), str(d / f"{pid}_frame{frame:02d}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), str(d / f"{pid}_frame{frame:02d}_gt.nii.gz"))
    return d


def test_parse_info_cfg_official_format(tmp_path):
    p = tmp_path / "Info.cfg"
    p.write_text(OFFICIAL_INFO)
    info = parse_info_cfg(p)
    assert info == {"ED": 1, "ES": 12, "Group": "DCM", "Height": 184.0, "NbFrame": 30, "Weight": 95.0}
    p.write_text("ED: one\nES: 12\n")
    with pytest.raises(DataError, match="Info.cfg.*'ED: one'"):
        parse_info_cfg(p)
    with pytest.raises(DataError, match="missing Info.cfg"):
        parse_info_cfg(tmp_path / "nope" / "Info.cfg")


def test_nifti_round_trip_spacing_affine(tmp_path):
    d = write_patient(tmp_path, "patient001")
    data, aff, zooms = load_nifti(d / "patient001_frame01.nii.gz")
    assert data.shape == (60, 50, 4) and zooms == pytest.approx((1.5, 1.4, 10.0))
    np.testing.assert_allclose(aff, np.diag([1.5, 1.4, 10.0, 1.0]))
    p = load_patient(d)
    assert p.frames == {"ED": 1, "ES": 8} and p.group == "NOR" and p.labels["ES"].dtype == np.uint8


def test_pair_selection_counts_and_crops(tmp_path):
    write_patient(tmp_path, "patient001", rv_slices=(1, 2))
    write_patient(tmp_path, "patient002", rv_slices=(0, 1, 2, 3), center=(4, 16), group="HCM")  # heart at the border
    pairs = load_acdc_pairs(tmp_path, size=32)
    assert len(pairs) == 2 * (2 + 4)
    assert set(pairs.direction) == {"ED->ES", "ES->ED"}
    assert pairs.fixed.shape == (12, 32, 32) and pairs.fixed.dtype == np.float32
    assert 0.0 <= pairs.fixed.min() and pairs.fixed.max() <= 1.0
    # ED->ES: moving is ED (bigger LV cavity in the fixtures)
    i = np.flatnonzero(pairs.direction == "ED->ES")[0]
    assert (pairs.moving_labels[i] == 3).sum() > (pairs.fixed_labels[i] == 3).sum()
    # crops stay in bounds (padding) and the heart is inside the crop
    for k in range(len(pairs)):
        assert (pairs.moving_labels[k] == 3).sum() > 0
    loose = load_acdc_pairs(tmp_path, size=32, require_all_labels=False, directions=("ED->ES",))
    assert len(loose) == 8
    # the way back: uncrop lands the crop's labels where they were
    p = load_patient(tmp_path / "patient002")
    j = np.flatnonzero((pairs.patient == "patient002") & (pairs.direction == "ED->ES"))[0]
    back = uncrop(pairs.moving_labels[j], pairs.crop_origin[j], p.labels["ED"].shape[:2])
    covered = uncrop(np.ones((32, 32), bool), pairs.crop_origin[j], p.labels["ED"].shape[:2])
    orig = p.labels["ED"][:, :, pairs.slice_index[j]]
    np.testing.assert_array_equal(back[covered], orig[covered])
    assert (orig[~covered] != 3).all()  # the LV cavity lies inside the crop


def test_crop_never_out_of_bounds():
    a = np.arange(100).reshape(10, 10)
    c = crop(a, (-3, 7), 6)
    assert c.shape == (6, 6) and c[3, 0] == a[0, 7] and c[0, 0] == 0


def test_bad_inputs_name_the_file(tmp_path):
    d = write_patient(tmp_path, "patient001")
    (d / "patient001_frame08.nii.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="patient001_frame08.nii.gz: unreadable"):
        load_patient(d)
    d2 = write_patient(tmp_path, "patient002")
    lab = nib.load(str(d2 / "patient002_frame01_gt.nii.gz"))
    bad = np.asarray(lab.dataobj).copy()
    bad[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(bad, lab.affine), str(d2 / "patient002_frame01_gt.nii.gz"))
    with pytest.raises(DataError, match=r"patient002_frame01_gt.nii.gz: unknown label values \[7\]"):
        load_patient(d2)
    d3 = write_patient(tmp_path, "patient003")
    img = nib.load(str(d3 / "patient003_frame01.nii.gz"))
    arr = np.asarray(img.dataobj).copy()
    arr[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), str(d3 / "patient003_frame01.nii.gz"))
    with pytest.raises(DataError, match="patient003_frame01.nii.gz: 1 NaN"):
        load_patient(d3)
    d4 = write_patient(tmp_path, "patient004")
    nib.save(nib.Nifti1Image(np.zeros((60, 50), np.float32), np.eye(4)), str(d4 / "patient004_frame08.nii.gz"))
    with pytest.raises(DataError, match="patient004_frame08.nii.gz: expected a 3D volume"):
        load_patient(d4)
    d5 = write_patient(tmp_path, "patient005")
    (d5 / "patient005_frame08_gt.nii.gz").unlink()
    with pytest.raises(DataError, match="patient005_frame08_gt.nii.gz: missing ES label"):
        load_patient(d5)
    d6 = write_patient(tmp_path, "patient006", shape=(60, 50, 4))
    nib.save(nib.Nifti1Image(np.zeros((60, 52, 4), np.float32), np.eye(4)), str(d6 / "patient006_frame08.nii.gz"))
    with pytest.raises(DataError, match="patient006_frame08"):
        load_patient(d6)
    (tmp_path / "patient007").mkdir()
    with pytest.raises(DataError, match="patient007/Info.cfg: missing"):
        load_patient(tmp_path / "patient007")
    write_patient(tmp_path, "patient008")
    # the folder loads the good patient and reports every broken one
    pairs = load_acdc_pairs(tmp_path, size=32)
    assert set(pairs.patient) == {"patient008"}
    assert len(pairs.skipped) == 7 and any("unknown label" in v for v in pairs.skipped.values())
    with pytest.raises(DataError, match="does not exist"):
        load_acdc_pairs(tmp_path / "nowhere")


def test_folds_disjoint_covering_stratified():
    pats = [f"p{i:03d}" for i in range(50)]
    groups = [("DCM", "HCM", "MINF", "NOR", "RV")[i % 5] for i in range(50)]
    folds = kfold_patients(pats, groups, k=10, seed=3)
    flat = [p for f in folds for p in f]
    assert sorted(flat) == pats and len(flat) == len(set(flat))
    assert all(len(f) == 5 and len({groups[pats.index(p)] for p in f}) == 5 for f in folds)
    assert folds == kfold_patients(pats, groups, k=10, seed=3)
    assert folds != kfold_patients(pats, groups, k=10, seed=4)
    with pytest.raises(ValueError, match="k must be"):
        kfold_patients(pats, groups, k=51)


def test_phantom_determinism_and_sanity():
    a = phantom_pairs(16, seed=5, size=64, directions=("ED->ES", "ES->ED"), slices_per_patient=8)
    b = phantom_pairs(16, seed=5, size=64, directions=("ED->ES", "ES->ED"), slices_per_patient=8)
    np.testing.assert_array_equal(a.fixed, b.fixed)
    np.testing.assert_array_equal(a.true_displacement, b.true_displacement)
    assert not np.array_equal(a.fixed, phantom_pairs(16, seed=6, size=64).fixed)
    assert a.fixed.shape == (32, 64, 64) and a.true_displacement.shape == (32, 64, 64, 2)
    assert np.isfinite(a.fixed).all() and a.fixed.min() >= 0 and a.fixed.max() <= 1
    c = phantom_pairs(3, seed=5, size=64, directions=("ED->ES", "ES->ED"), slices_per_patient=8)  # other chunking
    np.testing.assert_allclose(c.fixed[:3], a.fixed[:3], atol=1e-6)
    np.testing.assert_allclose(c.true_displacement[3:], a.true_displacement[16:19], atol=1e-5)
    ed = a.moving_labels[:16]  # ED->ES rows: moving is ED
    es = a.fixed_labels[:16]
    for lab in (ed, es):
        for k in (1, 2, 3):
            areas = (lab == k).sum((1, 2))
            assert np.all(areas > 5) and np.all(areas < 0.4 * 64 * 64)
    assert np.all((es == 3).sum((1, 2)) < (ed == 3).sum((1, 2)))  # ES LV cavity smaller
    # ring topology: myocardium encloses the cavity (every cavity pixel's 4-neighbours are cavity or myocardium)
    for lab in np.concatenate([ed, es]):
        cav = lab == 3
        nb = [np.roll(lab, s, ax) for s in (1, -1) for ax in (0, 1)]
        assert all(np.all(np.isin(n[cav], (2, 3))) for n in nb)
        assert not (lab == 3)[0].any() and not (lab == 3)[-1].any()


def test_phantom_noise_is_rician():
    """The hash-based Box-Muller noise has the Rician law: Rayleigh at zero signal, ~Gaussian at high SNR."""
    from jaxreg.data import phantom

    u = np.asarray(phantom._hash_uniform(jnp.uint32(7), (256, 256)))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.005 and abs(u.std() - 12**-0.5) < 0.005
    assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 0.02  # neighbours independent
    v = np.asarray(phantom._hash_uniform(jnp.uint32(8), (256, 256)))
    assert abs(np.corrcoef(u.ravel(), v.ravel())[0, 1]) < 0.02  # seeds independent
    seeds = jnp.array([11, 12], jnp.uint32)
    sigma = 0.05
    zero = np.asarray(phantom._rician(jnp.zeros((256, 256)), sigma, seeds))
    # signal/sigma spanning 0..4: somewhere signal + noise cancels, where rounding must not give sqrt(< 0) = NaN
    ramp = jnp.broadcast_to(jnp.linspace(0.0, 4e-3, 2048)[:, None], (2048, 2048))
    near = np.asarray(phantom._rician(ramp, 1e-3, seeds))
    assert np.isfinite(near).all() and np.isfinite(zero).all()
    np.testing.assert_allclose(zero.mean(), sigma * np.sqrt(np.pi / 2), rtol=0.02)  # Rayleigh mean
    np.testing.assert_allclose((zero**2).mean(), 2 * sigma**2, rtol=0.03)
    high = np.asarray(phantom._rician(jnp.ones((256, 256)), sigma, seeds))
    np.testing.assert_allclose(high.std(), sigma, rtol=0.03)
    np.testing.assert_allclose((high**2).mean(), 1 + 2 * sigma**2, rtol=1e-3)


def test_phantom_true_displacement_aligns_labels():
    ps = phantom_pairs(24, seed=2, directions=("ED->ES", "ES->ED"))
    warped = jax.vmap(lambda l, u: warp.warp(l, u, order=0))(ps.moving_labels, ps.true_displacement)
    d_true = np.asarray(jax.vmap(metrics.dice)(ps.fixed_labels, warped))
    d_before = np.asarray(jax.vmap(metrics.dice)(ps.fixed_labels, ps.moving_labels))
    assert np.nanmean(d_true) >= 0.95
    assert np.nanmean(d_before) < 0.8
    assert float(np.mean(jax.vmap(metrics.folding_fraction)(ps.true_displacement))) < 1e-4


def test_augmentation_deforms_images_and_labels_identically():
    ps = phantom_pairs(4, seed=0, size=64)
    out = jax.jit(augment_batch)(jax.random.key(0), ps.fixed, ps.moving, ps.fixed_labels, ps.moving_labels)
    f, m, fl, ml = (np.asarray(o) for o in out)
    assert f.shape == (4, 64, 64) and fl.shape == (4, 64, 64, 4)
    np.testing.assert_allclose(fl.sum(-1), 1.0, atol=1e-5)
    assert not np.allclose(f, ps.fixed)
    # the image's bright LV pool still sits on the warped LV label
    assert f[fl[..., 3] > 0.99].mean() > f[fl[..., 2] > 0.99].mean() + 0.2
    again = jax.jit(augment_batch)(jax.random.key(1), ps.fixed, ps.moving, ps.fixed_labels, ps.moving_labels)
    assert not np.allclose(again[0], f)


def test_intensity_augmentation_is_one_scanner_per_pair():
    from jaxreg.data.augment import intensity_batch, intensity_pair

    ps = phantom_pairs(2, seed=0, size=48)
    f, m = jnp.asarray(ps.fixed[0]), jnp.asarray(ps.moving[0])
    key = jax.random.key(3)
    same = intensity_pair(key, f, m)
    np.testing.assert_array_equal(same[0], f)  # all three 0: unchanged
    np.testing.assert_array_equal(same[1], m)
    # gamma alone: both frames raised to one power g
    gf, gm = (np.asarray(x, np.float64) for x in intensity_pair(key, f, m, gamma=0.5))
    ok_f, ok_m = (np.asarray(f) > 0.05) & (np.asarray(f) < 0.95), (np.asarray(m) > 0.05) & (np.asarray(m) < 0.95)
    g_f = np.log(gf[ok_f]) / np.log(np.asarray(f, np.float64)[ok_f])
    g_m = np.log(gm[ok_m]) / np.log(np.asarray(m, np.float64)[ok_m])
    assert np.ptp(g_f) < 1e-3 and abs(np.median(g_f) - np.median(g_m)) < 1e-3 and abs(np.median(g_f) - 1) > 0.01
    # bias alone: one smooth multiplicative field for both frames, its log a cubic polynomial (4th differences 0)
    bf, bm = (np.asarray(x, np.float64) for x in intensity_pair(key, f, m, bias=0.3))
    both = ok_f & ok_m & (bf < 0.999) & (bm < 0.999)
    ratio_f, ratio_m = bf[both] / np.asarray(f, np.float64)[both], bm[both] / np.asarray(m, np.float64)[both]
    np.testing.assert_allclose(ratio_f, ratio_m, rtol=1e-4)
    assert np.ptp(ratio_f) > 0.05
    ones = np.full((48, 48), 0.5, np.float32)
    field = np.log(np.asarray(intensity_pair(key, jnp.asarray(ones), jnp.asarray(ones), bias=0.3)[0], np.float64) / 0.5)
    assert np.abs(np.diff(field, 4, axis=0)).max() < 1e-4 and np.abs(np.diff(field, 4, axis=1)).max() < 1e-4
    # noise alone: independent per frame, the std asked for (away from the clip at 0 and 1)
    ones2 = jnp.full((2, 64, 64), 0.5)
    nf, nm = (np.asarray(x) for x in intensity_batch(key, ones2, ones2, noise=0.05))
    assert abs(float(np.std(nf - 0.5)) - 0.05) < 0.003 and abs(float(np.corrcoef(nf.ravel(), nm.ravel())[0, 1])) < 0.05
    assert not np.allclose(nf[0], nf[1])  # one key per pair
    assert float(np.min(nf)) >= 0.0 and float(np.max(nf)) <= 1.0


@pytest.mark.skipif(not SHARED_ACDC.is_dir(), reason=f"ACDC not found at {SHARED_ACDC}; this test needs the shared data")
def test_shared_acdc_pair_counts():
    pairs = load_acdc_pairs(SHARED_ACDC)
    for d in ("ED->ES", "ES->ED"):
        assert int(np.sum(pairs.direction == d)) == 353
    assert len(pairs.patients) == 50 and not pairs.skipped
    train, test = split_fold(pairs, 0)
    assert not set(train.patients) & set(test.patients) and len(train) + len(test) == len(pairs)


def test_slice_region_is_thirds_of_each_patients_slices():
    ps = phantom_pairs(7, seed=0, size=32)
    patient = np.array(["a"] * 4 + ["b"] * 3)
    index = np.array([2, 3, 5, 9, 0, 1, 2])  # a: non-contiguous, ranks 0..3; b: ranks 0..2
    ps = dataclasses.replace(ps, patient=patient, slice_index=index)
    # rank / (levels - 1) below 1/3: base, below 2/3: mid, else apex
    assert ps.slice_region().tolist() == ["base", "mid", "apex", "apex", "base", "mid", "apex"]
    both = phantom_pairs(6, seed=1, size=32, directions=("ED->ES", "ES->ED"))
    reg = both.slice_region()
    assert set(reg.tolist()) == {"base", "mid", "apex"}
    half = len(both) // 2  # both directions of one slice share its region
    np.testing.assert_array_equal(reg[:half], reg[half:])


@pytest.mark.skipif(not SHARED_ACDC.is_dir(), reason=f"ACDC not found at {SHARED_ACDC}; this test needs the shared data")
def test_shared_acdc_slices_run_from_base_to_apex():
    """slice_region's premise: in every patient the ED LV cavity shrinks with the slice index (least squares)."""
    for d in sorted(SHARED_ACDC.glob("patient*")):
        lab = load_patient(d).labels["ED"]
        area = (lab == 3).sum(axis=(0, 1)).astype(float)
        z = np.flatnonzero(area)
        assert np.polyfit(z, area[z], 1)[0] < 0, d.name


def _cine_frames(center, shift=(0, 0)):
    """(96, 96, 3) ED and ES frames: a bright static body block off the heart, and a cavity disc that contracts."""
    yy, xx = np.indices((96, 96), dtype=np.float64)
    body = ((np.abs(yy - 70 - shift[0]) < 20) & (np.abs(xx - 25 - shift[1]) < 20)) * 0.8
    frames = []
    for radius in (12.0, 7.0):  # ED, ES
        disc = np.hypot(yy - center[0] - shift[0], xx - center[1] - shift[1]) < radius
        frames.append(np.repeat((0.1 + body + 0.9 * disc)[..., None], 3, axis=2))
    return frames


@pytest.mark.parametrize("shift", [(0, 0), (5, -7), (-9, 4)])
def test_motion_center_finds_what_moves_and_follows_a_shift(shift):
    center = (35.0, 60.0)
    ed, es = _cine_frames(center, shift)
    got = np.array(motion_center(ed, es))
    np.testing.assert_allclose(got, np.add(center, shift), atol=0.5)  # the ring between the two discs
    np.testing.assert_allclose(motion_center(ed[..., 0], es[..., 0]), got)  # one slice = the volume's mean
    plain = np.array(crop_center(np.zeros((96, 96), np.uint8), 0.5 * (ed[..., 0] + es[..., 0])))
    assert np.hypot(*(plain - got)) > 10  # the intensity centroid is pulled to the static body
    assert motion_center(ed, ed) == (47.5, 47.5)  # nothing moves: the middle
    with pytest.raises(ValueError, match="one shape"):
        motion_center(ed, es[:, :80])
