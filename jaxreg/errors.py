"""`UserError`: bad input from the person running jaxreg (a file, a flag, an output path), reported in one line.

The CLI and the absl entry points catch this type only: it prints as `error: <message>` with exit status 2.
Anything else that escapes is a bug and keeps its traceback. Subclasses say which boundary raised it.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input; the message names the file, flag or field and the problem."""


class DataError(UserError, ValueError):
    """A data file is missing, unreadable or inconsistent; the message names the file and the problem."""


class ConfigError(UserError, ValueError):
    """A flag or config field out of range, of the wrong type, or in a bad combination (checked before any work)."""


class OutputPathError(UserError):
    """An output folder that cannot be written or must not be replaced (checked before any computation)."""


class TrainingDiverged(UserError, FloatingPointError):
    """The training loss became NaN or infinite (names the step; usually a learning rate or weight too large)."""



class MissingDependency(UserError, ImportError):
    """An optional dependency (an extra such as `bench`) is not installed; the message says what to install."""
