"""Keep freed memory in the process between training steps (glibc ``mallopt``).

glibc hands large freed blocks back to the kernel (mmap threshold, heap trimming), so every large temporary of
the next step comes back as fresh zeroed pages: on a 2-core CPU the page faults cost 25-38% of a Fashion-MNIST
training step (docs/RESULTS.md). A fixed 256 MiB mmap threshold, a 1 GiB trim threshold and a 64 MiB top pad stop
that; the process then holds on to up to about 1 GiB of freed memory, which a training job wants anyway.

The CLI calls :func:`tune_malloc` once when a command starts (never at import time); library users may call it
themselves. ``CONVMIXER_TUNE_MALLOC=0`` turns it off; glibc's own ``MALLOC_*_`` environment variables set by the
user win (then nothing is changed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # from glibc's <malloc.h>
SETTINGS = {  # mallopt parameter: value (bytes)
    M_MMAP_THRESHOLD: 256 << 20,  # blocks below 256 MiB come from the heap, not from a fresh mmap
    M_TRIM_THRESHOLD: 1 << 30,  # give memory back to the kernel only when 1 GiB is free at the top of the heap
    M_TOP_PAD: 64 << 20,  # grow the heap 64 MiB at a time
}
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_tuned: bool | None = None


def _libc_function(name: str):
    """glibc's ``name`` through ctypes, or None where the C library has no such function (musl, other systems)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def tune_malloc() -> bool:
    """Apply :data:`SETTINGS` once per process; True when they are in effect (False off glibc or when disabled)."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if (not sys.platform.startswith("linux") or os.environ.get("CONVMIXER_TUNE_MALLOC", "1") == "0"
            or any(v in os.environ for v in USER_VARIABLES)):
        return False
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False  # musl and other C libraries have no mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
    return _tuned


def trim_heap() -> bool:
    """Return glibc's free heap pages to the kernel (``malloc_trim(0)``); True if any were returned.

    :func:`tune_malloc` keeps freed blocks resident, so a later allocation reuses them without a page fault and a
    resident-set measurement cannot see it. A memory benchmark trims first, so that what a step allocates shows up
    in the peak resident set whatever the process did before. False off glibc.
    """
    trim = _libc_function("malloc_trim") if sys.platform.startswith("linux") else None
    if trim is None:
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim(0) == 1
