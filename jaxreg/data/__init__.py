"""Cardiac registration data: ACDC reader, synthetic phantom, pair sets, patient folds and on-device augmentation."""

from jaxreg.data.acdc import DataError, load_acdc, load_acdc_pairs, load_nifti, load_patient, parse_info_cfg
from jaxreg.data.pairs import (
    LABELS,
    STRUCTURES,
    PairSet,
    crop,
    kfold_patients,
    motion_center,
    normalize_intensity,
    split_fold,
    uncrop,
)
from jaxreg.data.phantom import phantom_pairs

__all__ = [
    "DataError", "LABELS", "STRUCTURES", "PairSet", "crop", "kfold_patients", "load_acdc",
    "load_acdc_pairs", "load_nifti", "load_patient", "motion_center", "normalize_intensity", "parse_info_cfg",
    "phantom_pairs", "split_fold", "uncrop",
]
from jaxreg.data.augment import augment_batch, augment_pair, random_displacement  # noqa: E402

__all__ += ["augment_batch", "augment_pair", "random_displacement"]
