"""jaxreg.peers: the SimpleITK demons peer returns fields in jaxreg's convention (skipped without SimpleITK)."""

import numpy as np
import pytest
from scipy import ndimage

from jaxreg import peers


def test_multires_demons_recovers_a_smooth_shift_in_jaxregs_convention():
    pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(0)
    fixed = ndimage.gaussian_filter(rng.random((64, 64)), 3).astype(np.float32)
    fixed = (fixed - fixed.min()) / (fixed.max() - fixed.min())
    shift = np.array([1.5, -1.0])  # moving(x) = fixed(x - shift): moving sampled at x + shift matches fixed
    moving = ndimage.shift(fixed, shift, order=3, mode="nearest").astype(np.float32)
    u = peers.multires_demons(fixed, moving)
    assert u.shape == (64, 64, 2)
    inner = u[16:-16, 16:-16].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, 0), shift, atol=0.3)


def test_a_missing_simpleitk_is_a_one_line_user_error(monkeypatch):
    import builtins

    from jaxreg.errors import UserError

    real = builtins.__import__

    def no_sitk(name, *a, **k):
        if name == "SimpleITK":
            raise ImportError("no SimpleITK")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_sitk)
    with pytest.raises(UserError, match=r"pip install -e '\.\[bench\]'"):
        peers.multires_demons(np.zeros((8, 8)), np.zeros((8, 8)))
