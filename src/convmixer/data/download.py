"""Fetching dataset files: streamed, MD5-checked, written atomically, with a progress bar.

A download either leaves the complete, verified file at its destination or nothing at all: the bytes go
to a temporary file through :func:`convmixer.io.atomic_write`, and a checksum mismatch raises before the
rename. Network failures become :class:`DataError` so the caller can say how to get the data offline.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError
from ..io import atomic_write

MIRROR_ENV = "CONVMIXER_DATA_MIRROR"  # base URL that replaces every dataset's official download location
CHUNK = 1 << 20  # bytes read per iteration (1 MiB)
TIMEOUT_S = 30.0  # seconds without progress before a download is abandoned


class DownloadError(DataError):
    """The server could not be reached or did not serve the file (as opposed to serving a corrupt one)."""


class ChecksumError(DataError):
    """The file was downloaded but its MD5 is not the published one."""


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: str | os.PathLike, md5: str | None = None, *, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` and verify its MD5; on any failure ``dest`` is left untouched.

    Raises :class:`DownloadError` (unreachable, HTTP error, timeout) or :class:`ChecksumError`.
    """
    from tqdm import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310 - http(s) URLs from our tables
    except urllib.error.HTTPError as e:
        raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"cannot download {url}: {reason}") from None
    digest = hashlib.md5(usedforsecurity=False)
    with response:
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress or None, leave=False)
        try:
            with bar, atomic_write(dest) as f:
                while block := response.read(CHUNK):
                    digest.update(block)
                    f.write(block)
                    bar.update(len(block))
                if md5 is not None and digest.hexdigest() != md5:
                    raise ChecksumError(
                        f"{url} has MD5 {digest.hexdigest()}, expected {md5}: the download is corrupt or the "
                        "mirror serves a different file; nothing was saved, try again or use another mirror"
                    )
        except (socket.timeout, OSError) as e:  # a checksum error is a DataError (ValueError) and passes through
            raise DownloadError(f"download of {url} failed midway: {e}") from None
    return dest
