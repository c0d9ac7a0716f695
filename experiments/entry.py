"""`run`: every entry point's `absl.app.run`, turning bad input into a one-line error instead of a traceback.

Also the flags every entry point shares, applied before any JAX work: `--cpu_devices`, `--compile_cache`,
`--eigen_convolutions`.
"""

import sys

import jax
from absl import app, flags

from jaxreg import compile_cache, xla_cpu
from jaxreg.data import DataError
from jaxreg.train import WorkdirBusy

flags.DEFINE_integer("cpu_devices", 1, "Split the host CPU into this many JAX devices (jax_num_cpu_devices): "
                     "training and inference then run data parallel over them, one shard each. On a 2-core "
                     "machine with --eigen_convolutions, 2 is no faster than 1 (BUILD_NOTES). Must divide the "
                     "batch size. No effect on GPU.")
flags.DEFINE_string("compile_cache", compile_cache.DEFAULT, "Folder of JAX's persistent compilation cache: a rerun "
                    "(or a resumed run) loads the compiled step instead of compiling it. Empty: no cache. "
                    "JAX_COMPILATION_CACHE_DIR, when set, takes precedence.")
flags.DEFINE_bool("eigen_convolutions", True, "Keep XLA:CPU's large convolutions on Eigen rather than YNNPACK "
                  "(jaxreg.xla_cpu.prefer_eigen_convolutions; jaxlib 0.10.2: one-device training step 1.3x, "
                  "inference 1.4x faster). No effect on other jaxlib versions, on GPU, or when XLA_FLAGS sets "
                  "the YNN fusion types itself.")

# what bad input raises (missing or broken files, wrong shapes, unknown names, a busy workdir): one line, exit 2
USER_ERRORS = (DataError, FileNotFoundError, NotADirectoryError, ValueError, WorkdirBusy)


def run(main):
    """`absl.app.run(main)`, printing `error: ...` (exit status 2) instead of a traceback for USER_ERRORS."""

    def checked(argv):
        try:
            if flags.FLAGS.cpu_devices < 1:
                raise ValueError(f"--cpu_devices must be >= 1; got {flags.FLAGS.cpu_devices}")
            if flags.FLAGS.eigen_convolutions:  # XLA_FLAGS: read when the backends start
                xla_cpu.prefer_eigen_convolutions()
            if flags.FLAGS.cpu_devices > 1:  # must precede the first JAX operation (backend start)
                jax.config.update("jax_num_cpu_devices", flags.FLAGS.cpu_devices)
            compile_cache.enable(flags.FLAGS.compile_cache)
            return main(argv)
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(checked)
