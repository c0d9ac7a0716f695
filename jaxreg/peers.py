"""Peer methods the benchmarks and the CV's `--baselines` score jaxreg against (SimpleITK, the `bench` extra).

`multires_demons` is the strongest SimpleITK demons setting measured on the ACDC 112 x 112 crops (issue 22):
`DiffeomorphicDemonsRegistrationFilter` over shrink factors 4, 2, 1, each level's images Gaussian-smoothed with
sigma 0.5 x shrink (pixels of the full image) before shrinking, the previous level's field resampled linearly onto
the next level's grid as its initial field, 50 iterations a level, displacement-field smoothing sigma 1.5 level
pixels, maximum update step 2.0, no update-field smoothing, on the crops' intensities (already scaled by the
1st/99th percentile, `jaxreg.data.load_acdc_pairs`). SimpleITK is imported only when called: it is a peer, not a
dependency (`pip install -e ".[bench]"`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxreg.errors import MissingDependency

DEMONS_SHRINK = (4, 2, 1)


def _sitk():
    try:
        import SimpleITK as sitk
    except ImportError:  # the bench extra is not installed
        raise MissingDependency("the demons peer needs SimpleITK: pip install -e '.[bench]'") from None
    return sitk


def multires_demons(fixed: np.ndarray, moving: np.ndarray, shrink: Sequence[int] = DEMONS_SHRINK,
                    iterations: int = 50, field_sigma: float = 1.5, max_step: float = 2.0) -> np.ndarray:
    """One pair `(H, W)` -> displacement `(H, W, 2)` pixels, jaxreg's convention (moving sampled at x + u)."""
    sitk = _sitk()
    f0 = sitk.GetImageFromArray(np.asarray(fixed, np.float32))
    m0 = sitk.GetImageFromArray(np.asarray(moving, np.float32))
    field = None
    for s in shrink:
        f, m = (sitk.SmoothingRecursiveGaussian(x, 0.5 * s) for x in (f0, m0))
        if s > 1:
            f, m = sitk.Shrink(f, [s] * f.GetDimension()), sitk.Shrink(m, [s] * m.GetDimension())
        flt = sitk.DiffeomorphicDemonsRegistrationFilter()
        flt.SetNumberOfIterations(int(iterations))
        flt.SetStandardDeviations(float(field_sigma))
        flt.SetSmoothDisplacementField(True)
        flt.SetSmoothUpdateField(False)
        flt.SetMaximumUpdateStepLength(float(max_step))
        if field is None:
            field = flt.Execute(f, m)
        else:
            init = sitk.Resample(field, f, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = flt.Execute(f, m, init)
    if shrink[-1] != 1:  # back onto the full grid
        field = sitk.Resample(field, f0, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
    arr = sitk.GetArrayFromImage(field)  # (row, col) arrays with (x = col, y = row) vectors, unit spacing
    return np.stack([arr[..., 1], arr[..., 0]], -1).astype(np.float32)


def demons_batch(fixed: np.ndarray, moving: np.ndarray, threads: int = 1, **kwargs) -> np.ndarray:
    """`multires_demons` over pairs `(N, H, W)` -> `(N, H, W, 2)`; SimpleITK on `threads` threads a pair."""
    sitk = _sitk()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    return np.stack([multires_demons(f, m, **kwargs) for f, m in zip(fixed, moving)])
