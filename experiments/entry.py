"""`run`: every entry point's `absl.app.run`, turning bad input into a one-line error instead of a traceback.

Bad input is a `jaxreg.errors.UserError` (files, flags, config fields, workdirs) or a flag that does not parse:
`error: ...` on stderr, exit status 2. SIGINT exits 130 and SIGTERM 143 after the registered clean-ups
(`jaxreg.runtime.signals`); a killed training resumes from its last checkpoint. Anything else
is a bug and keeps its traceback. Also the flags every entry point shares, applied before any JAX work:
`--cpu_devices`, `--compile_cache`, `--eigen_convolutions`, `--keep_freed_memory`.
"""

import sys

from absl import app, flags

from jaxreg.errors import ConfigError, UserError
from jaxreg.runtime import compile_cache, malloc, signals, xla_cpu

flags.DEFINE_integer("cpu_devices", 1, "Split the host CPU into this many JAX devices (jax_num_cpu_devices): "
                     "training and inference then run data parallel over them, one shard each. On a 2-core "
                     "machine with --eigen_convolutions, 2 is no faster than 1 (docs/performance.md). Must divide "
                     "the batch size. No effect on GPU.")
flags.DEFINE_string("compile_cache", compile_cache.DEFAULT, "Folder of JAX's persistent compilation cache: a rerun "
                    "(or a resumed run) loads the compiled step instead of compiling it. Empty: no cache. "
                    "JAX_COMPILATION_CACHE_DIR, when set, takes precedence.")
flags.DEFINE_bool("eigen_convolutions", True, "Keep XLA:CPU's large convolutions on Eigen rather than YNNPACK "
                  "(jaxreg.runtime.xla_cpu; jaxlib 0.10.2: one-device training step 1.3x, inference 1.4x faster). "
                  "No effect on other jaxlib versions, on GPU, or when XLA_FLAGS sets the YNN fusion types itself.")
flags.DEFINE_bool("keep_freed_memory", True, "glibc malloc reuses the large buffers XLA:CPU frees instead of "
                  "unmapping them and faulting them in again every step (jaxreg.runtime.malloc: training ~1.2-1.3x "
                  "faster on the 2-core CPU; the process keeps its peak memory). No effect without glibc.")


def _parse_flags(argv):
    """absl's flag parsing, but a bad flag is one line and exit 2 (absl's own: usage text and exit 1)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(main):
    """`absl.app.run(main)`, printing `error: ...` (exit status 2) instead of a traceback for a UserError."""

    def checked(argv):
        with signals.handle_signals():
            try:
                if flags.FLAGS.cpu_devices < 1:
                    raise ConfigError(f"--cpu_devices must be >= 1; got {flags.FLAGS.cpu_devices}")
                if flags.FLAGS.keep_freed_memory:  # before XLA's worker threads pick their malloc arenas
                    malloc.keep_freed_memory()
                if flags.FLAGS.eigen_convolutions:  # XLA_FLAGS: read when the backends start
                    xla_cpu.prefer_eigen_convolutions()
                if flags.FLAGS.cpu_devices > 1:  # must precede the first JAX operation (backend start)
                    import jax

                    jax.config.update("jax_num_cpu_devices", flags.FLAGS.cpu_devices)
                compile_cache.enable(flags.FLAGS.compile_cache)
                return main(argv)
            except UserError as e:
                print(f"error: {e}", file=sys.stderr)
                sys.exit(2)

    app.run(checked, flags_parser=_parse_flags)


def nonnegative_floats(name: str, values) -> tuple[float, ...]:
    """A list flag `--name` of finite numbers >= 0 as floats (ConfigError naming the flag otherwise)."""
    try:
        out = tuple(float(v) for v in values)
    except ValueError:
        raise ConfigError(f"--{name}: expected comma-separated numbers; got {','.join(values)!r}") from None
    if not out or any(not v >= 0.0 or v == float("inf") for v in out):
        raise ConfigError(f"--{name}: expected finite numbers >= 0; got {','.join(values)}")
    return out
