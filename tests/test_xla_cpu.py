"""jaxreg.runtime.xla_cpu: the Eigen-convolution flag reaches XLA before the backends start, and changes no result."""

import os
import subprocess
import sys

import jax
import jaxlib
import numpy as np
import pytest

from jaxreg.runtime import xla_cpu

# the kernel gradient of a 112 x 112, 16 -> 16 layer (batch 30): the convolution jaxlib 0.10.2 gives to YNNPACK
PROBE = """
import sys
import jax, jax.numpy as jnp, numpy as np
import jaxreg.training, jaxreg.cv, jaxreg.cli, experiments.entry  # importing jaxreg must not start the backends
from jaxreg.runtime import xla_cpu
ok = xla_cpu.prefer_eigen_convolutions()
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
kgrad = jax.jit(lambda x, w, g: jax.grad(lambda w: jnp.vdot(conv(x, w), g))(w))
rng = np.random.default_rng(0)
x, g = rng.standard_normal((2, 30, 112, 112, 16), np.float32)
w = rng.standard_normal((3, 3, 16, 16), np.float32)
text = kgrad.lower(x, w, g).compile().as_text()
np.save(sys.argv[1], np.asarray(kgrad(x, w, g)))
print(ok, "__ynn_fusion" in text)
"""


def _probe(tmp_path, xla_flags):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    out = tmp_path / f"kgrad{len(list(tmp_path.iterdir()))}.npy"
    r = subprocess.run([sys.executable, "-c", PROBE, str(out)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ok, ynn = r.stdout.split()[-2:]
    return ok == "True", ynn == "True", np.load(out)


def test_flag_reaches_xla_and_changes_no_result(tmp_path):
    ok, ynn, eigen = _probe(tmp_path, None)
    in_range = xla_cpu.VERIFIED[0] <= xla_cpu._version(jaxlib.__version__) < xla_cpu.VERIFIED[1]
    assert ok == in_range
    if ok:
        assert not ynn  # the kernel gradient stayed on XLA's own convolution
    # the user's own choice of fusion types wins and is left as it is
    ok_user, ynn_user, default = _probe(tmp_path, "--xla_cpu_experimental_ynn_fusion_type=-reduce" if in_range else "")
    assert not ok_user
    # same numbers either way (different summation order only)
    np.testing.assert_allclose(eigen, default, rtol=1e-4, atol=1e-5 * np.abs(default).max())
    if in_range:
        assert ynn_user  # what the flag exists for: jaxlib 0.10.2 sends this convolution to YNNPACK by default


def test_no_op_cases(monkeypatch):
    env = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}
    assert not xla_cpu.prefer_eigen_convolutions(env)
    assert env == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}
    env = {"XLA_FLAGS": xla_cpu.FLAG}
    assert xla_cpu.prefer_eigen_convolutions(env) and env == {"XLA_FLAGS": xla_cpu.FLAG}
    jax.numpy.zeros(1).block_until_ready()  # this process's backends run: the flag would come too late
    env = {"XLA_FLAGS": "--xla_dump_hlo_as_text"}
    assert not xla_cpu.prefer_eigen_convolutions(env) and env == {"XLA_FLAGS": "--xla_dump_hlo_as_text"}
    monkeypatch.setattr(jaxlib, "__version__", "0.9.0")  # an unverified jaxlib might abort on the flag
    assert not xla_cpu.prefer_eigen_convolutions({})


@pytest.mark.parametrize("text,expected", [("0.10.2", (0, 10, 2)), ("0.11", (0, 11, 0)), ("0.10.3rc1", (0, 10, 3)),
                                           ("1.0.0.dev20261201", (1, 0, 0))])
def test_version(text, expected):
    assert xla_cpu._version(text) == expected
