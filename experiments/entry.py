"""`run`: every entry point's `absl.app.run`, turning bad input into a one-line error instead of a traceback."""

import sys

from absl import app

from jaxreg.data import DataError
from jaxreg.train import WorkdirBusy

# what bad input raises (missing or broken files, wrong shapes, unknown names, a busy workdir): one line, exit 2
USER_ERRORS = (DataError, FileNotFoundError, NotADirectoryError, ValueError, WorkdirBusy)


def run(main):
    """`absl.app.run(main)`, printing `error: ...` (exit status 2) instead of a traceback for USER_ERRORS."""

    def checked(argv):
        try:
            return main(argv)
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(checked)
