"""Crash-safe file writing and the project's cache directory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import ConfigError


def cache_dir(*parts: str) -> Path:
    """``$CONVMIXER_CACHE`` or ``$XDG_CACHE_HOME/convmixer`` or ``~/.cache/convmixer``, joined with ``parts``."""
    root = os.environ.get("CONVMIXER_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "convmixer")
    return Path(root, *parts)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write ``path`` so that it is either its old content or the complete new one, never half of it.

    The data goes to a temporary file in the same directory, which is flushed, fsync'ed and renamed over
    ``path`` (rename is atomic on POSIX); the directory is fsync'ed so the rename itself survives a crash.
    If the body raises, the temporary file is removed and ``path`` is untouched. An OSError (a full disk, a
    read-only file system) names ``path``, not the temporary file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno is not None and e.filename in (None, str(tmp)):
            raise OSError(e.errno, e.strerror, str(path)) from e  # the same subclass (errno picks it)
        raise
    _fsync_dir(path.parent)


def check_output_path(path: str | os.PathLike) -> Path:
    """Raise ConfigError (one line) unless ``path`` can be written: not a directory, inside a writable directory
    (missing parent directories are created when the file is written). Nothing is created here."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a directory")
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {path}: {parent} is not writable")
    return path
