"""Error hierarchy.

Every error a user can cause (a bad file, a bad config, a grid mismatch) is a
:class:`MappingError`. The CLI prints its message on one line and exits with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MappingError(Exception):
    """Base class for user-facing errors: one line, names the file/row/column/key."""

    exit_code = 2


class InvalidParameter(MappingError, ValueError):
    """An argument given to a function is out of its domain (a malformed interval, …).

    A ``ValueError`` as well, so callers that validate with ``except ValueError`` (pydantic
    validators, argument parsers) keep working.
    """


class InputError(MappingError):
    """An input file is missing, unreadable or malformed."""


class HorizonTableError(InputError):
    """A horizon table breaks the schema (depth order, ranges, types, duplicates)."""


class ConfigError(MappingError):
    """A workflow config has an unknown key, a wrong type or a missing file."""


class GridMismatchError(MappingError):
    """Two grids that must be equal are not; the message prints both."""


class MissingCRSError(MappingError):
    """A dataset has no CRS; the message says how to set one."""


class OutputError(MappingError):
    """An output path cannot be written."""


class SchedulerError(MappingError):
    """A Dask scheduler cannot be reached or started."""


class ModelError(MappingError):
    """A model cannot be fitted or applied to the data given (too few points, …)."""
