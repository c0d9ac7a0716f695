"""SIGINT/SIGTERM for the commands: registered clean-ups run (temporary files removed), then exit 130 / 143 at once.

Why not exceptions: Python runs a signal handler between any two bytecodes of the main thread, also inside a garbage
collector callback, where an exception raised by the handler is printed as "Exception ignored" and lost (seen
with SIGTERM during `jaxreg register`: the process went on). And a normal interpreter shutdown while XLA's worker
threads are still busy can crash it (SIGSEGV, seen on Ctrl-C). So the handler itself runs the clean-ups that
the running command registered (`cleanup_on_signal`) and ends the process with `os._exit`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_cleanups: list = []


@contextlib.contextmanager
def cleanup_on_signal(fn):
    """Within the block, `fn()` runs if SIGINT/SIGTERM ends the process (innermost first)."""
    _cleanups.append(fn)
    try:
        yield
    finally:
        _cleanups.remove(fn)


def _handler(signum, frame):
    del frame
    for fn in reversed(list(_cleanups)):
        try:
            fn()
        except Exception:  # noqa: BLE001 - exiting anyway; one failed clean-up must not stop the others
            pass
    print(f"interrupted ({signal.Signals(signum).name})", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_CODES[signal.Signals(signum)])


@contextlib.contextmanager
def handle_signals():
    """Within the block SIGINT and SIGTERM run the clean-ups and exit 130 / 143 (previous handlers restored after)."""
    try:
        previous = {s: signal.signal(s, _handler) for s in EXIT_CODES}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
