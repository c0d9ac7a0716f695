"""SIGINT/SIGTERM for the commands: `finally` blocks run (temporary files removed), then exit 130 / 143 at once.

SIGTERM becomes `jaxreg.errors.Interrupted` (SIGINT already is KeyboardInterrupt). The exit after an interrupt is
`os._exit`: a normal interpreter shutdown while XLA's worker threads are still busy with an interrupted
computation can crash the process (SIGSEGV, seen on Ctrl-C during `jaxreg register`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from jaxreg.errors import Interrupted

EXIT_SIGINT, EXIT_SIGTERM = 130, 143


def _raise_interrupted(signum, frame):
    del frame
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def terminate_as_exception():
    """Within the block SIGTERM raises `Interrupted` in the main thread (the previous handler is restored after)."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_interrupted(exc: BaseException, prefix: str = "") -> None:
    """Prints `interrupted` and ends the process now: 130 for KeyboardInterrupt (SIGINT), 143 for SIGTERM."""
    code = EXIT_SIGTERM if isinstance(exc, Interrupted) else EXIT_SIGINT
    print(f"{prefix}interrupted ({'SIGTERM' if code == EXIT_SIGTERM else 'SIGINT'})", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
