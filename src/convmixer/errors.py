"""User-facing errors.

Every error a user can cause (bad path, bad config, corrupt file, wrong input shape) is raised as a
subclass of :class:`ConvMixerError`. The CLI prints these as one line and exits with code 2, and so it does
for an ``OSError`` (a full disk, a read-only file system: :func:`os_error_message`); anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import errno
import os


class ConvMixerError(Exception):
    """Base class of all errors a user can cause and fix."""


class ConfigError(ConvMixerError, ValueError):
    """An invalid setting: unknown name, out-of-range value, wrong type."""


class UnknownModelError(ConfigError):
    """A model name that is not registered."""


class InputShapeError(ConvMixerError, ValueError):
    """An input tensor the model cannot take (wrong rank, channel count, or smaller than a patch)."""


class CheckpointError(ConvMixerError, ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class DataError(ConvMixerError, ValueError):
    """A dataset that is missing, corrupt, or laid out wrongly."""


class ConvMixerWarning(UserWarning):
    """Something the user should know that does not stop the command (e.g. a skipped unreadable image); the CLI
    prints it as one line, ``convmixer: warning: ...``."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name when it has none (``EOFError()``)."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


# what to do about the OS errors a user can fix
_OS_ERROR_HINTS = {
    "ENOSPC": "free some space on that file system, or write somewhere else",
    "EDQUOT": "the disk quota is used up: free some space, or write somewhere else",
    "EROFS": "the file system is read-only: write somewhere else",
    "EACCES": "check the permissions of the file and its directory",
    "EPERM": "check the permissions of the file and its directory",
    "EMFILE": "too many open files: raise the limit (ulimit -n)",
}


def os_error_message(error: OSError) -> str:
    """One line for an OSError (a full disk, a read-only file system, a denied permission, ...): what happened,
    to which path, and what to do about it where that is clear."""
    text = error.strerror or first_line(error)
    if error.filename is not None:
        text += f": {os.fsdecode(error.filename)}"
    hint = _OS_ERROR_HINTS.get(errno.errorcode.get(error.errno or 0, ""))
    return f"{text} ({hint})" if hint else text
