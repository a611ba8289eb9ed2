"""Compile the C kernels in ``kernels.c`` (next to this module) on first use and load them with ctypes.

The kernels are plain C (GCC vector extensions + OpenMP), so building one takes about a second and needs no
PyTorch headers. ``kernels.c`` ships as package data and is found with :func:`source_file` (importlib.resources),
so an editable install and an installed wheel both find it. The shared object is cached in ``cache_dir("kernels")``
under a name that hashes the file's contents, the compiler, its flags and the CPU, so an edited ``kernels.c`` or a
different machine rebuilds it. Without a working C compiler (or with ``CONVMIXER_NO_KERNELS=1``)
:func:`load_kernels` returns ``None`` and the fast path falls back to PyTorch's built-in operators. Nothing is
compiled at import time.

OpenMP: the library links ``libgomp.so.1``; PyTorch has already loaded its own copy under that name, so both share
one thread pool instead of competing for the cores.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.resources
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from typing import TYPE_CHECKING

from ..io import atomic_write, cache_dir
from .hardware import cpu_flags, cpu_name, isa_cap

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# Kernel sizes the depthwise kernels are specialized for; anything else runs on the built-in convolution.
MAX_KERNEL_SIZE = 31

_P, _L, _I, _D = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_void_p
_SIGNATURES = {
    "cmx_act_affine": [_P, _I, _P, _P, _P, _P, _D, _I, _L, _L, _I],
    "cmx_act_bn_bwd_reduce": [_P, _P, _I, _D, _I, _L, _L, _I],
    "cmx_act_bn_bwd_apply": [_P, _P, _I, _P, _P, _P, _P, _I, _L, _L, _I],
    "cmx_bn_coeffs": [_P, _P, _P, ctypes.c_double, _L, _L, _P, _P, _P, _P],
    "cmx_bn_bwd_coeffs": [_P, _P, _P, _P, ctypes.c_double, _L, _L, _P, _P, _P, _P, _P],
    "cmx_dw_fwd": [_P, _P, _P, _I, _I, _P, _P, _I, _P, _I, _L, _L, _L, _L, _L, _L, _I],
    "cmx_dw_wgrad": [_P, _P, _P, _P, _I, _L, _L, _L, _L, _L, _L, _I],
}

# The C source, package data next to this module.
SOURCE_NAME = "kernels.c"

_lock = threading.Lock()
_loaded: dict[int, ctypes.CDLL | None] = {}
_errors: dict[int, str] = {}


def disabled() -> bool:
    return os.environ.get("CONVMIXER_NO_KERNELS", "") not in ("", "0")


def source_file() -> Traversable:
    """The packaged C source of the kernels (``convmixer/fast/kernels.c``)."""
    return importlib.resources.files(__package__).joinpath(SOURCE_NAME)


def kernel_source() -> str:
    """The text of :func:`source_file`: what is hashed into the cache key and compiled."""
    return source_file().read_text(encoding="utf-8")


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else ``cc`` or ``gcc`` on PATH."""
    cc = os.environ.get("CC")
    if cc:
        return cc if shutil.which(cc) else None
    return shutil.which("cc") or shutil.which("gcc")


def _flag_sets() -> list[list[str]]:
    base = ["-O3", "-std=gnu11", "-fPIC", "-shared", "-fno-math-errno", "-Wno-psabi"]
    march = ["-march=native"] + (["-mno-avx512f"] if isa_cap() == "avx2" else [])  # no AVX-512 subset without F
    return [base + march + ["-fopenmp"], base + ["-fopenmp"], base]


def _key(source: str, cc: str, flags: list[str], kernel_size: int) -> str:
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    h = hashlib.sha256()
    for part in (source, cc, version, " ".join(flags), str(kernel_size), cpu_name(), " ".join(sorted(cpu_flags()))):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _compile(source: str, cc: str, flags: list[str], kernel_size: int, target: str) -> None:
    defines = [f"-DKS={kernel_size}"] if kernel_size else []
    with tempfile.TemporaryDirectory(prefix="convmixer-build-") as tmp:
        # compile the exact text that was hashed into the cache key (same name and lines as the packaged file)
        src = os.path.join(tmp, SOURCE_NAME)
        out = os.path.join(tmp, "cmx.so")
        with open(src, "w", encoding="utf-8") as f:
            f.write(source)
        proc = subprocess.run([cc, *flags, *defines, src, "-o", out, "-lm"], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            raise RuntimeError(next((ln for ln in lines if "error" in ln), lines[-1] if lines else "compiler failed"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(out, "rb") as f, atomic_write(target) as g:
            shutil.copyfileobj(f, g)


def _open(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name, None)
        if fn is None:
            continue  # the elementwise-only library has no depthwise kernels
        fn.argtypes = argtypes
        fn.restype = None
    lib.cmx_lanes.argtypes, lib.cmx_lanes.restype = [], ctypes.c_int
    return lib


def _build(kernel_size: int) -> ctypes.CDLL:
    return build_source(kernel_source(), kernel_size)


def build_source(source: str, kernel_size: int) -> ctypes.CDLL:
    """The kernel library built from ``source`` (the text of a ``kernels.c``) for depthwise ``kernel_size``, with
    the same compiler, flags and cache as the packaged file. Raises RuntimeError when it does not compile.
    benchmarks/ab_kernels.py builds an earlier version of the file with it and swaps the two (:func:`install`)."""
    import torch  # noqa: F401  (libgomp.so.1 must be PyTorch's copy: load torch first)

    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC or install gcc)")
    last = "no flags worked"
    for flags in _flag_sets():
        path = str(cache_dir("kernels", f"cmx-k{kernel_size}-{_key(source, cc, flags, kernel_size)}.so"))
        if not os.path.exists(path):
            try:
                _compile(source, cc, flags, kernel_size, path)
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                last = str(e)
                continue
        try:
            return _open(path)
        except OSError as e:
            last = str(e)
    raise RuntimeError(last)


def load_kernels(kernel_size: int = 0) -> ctypes.CDLL | None:
    """The kernel library for depthwise ``kernel_size`` (0: the elementwise kernels only), or None.

    Compiles on the first call per kernel size and process (about a second; cached on disk afterwards).
    A failure is remembered for the process and reported by :func:`build_error`.
    """
    if disabled() or not 0 <= kernel_size <= MAX_KERNEL_SIZE:
        return None
    with _lock:
        if kernel_size not in _loaded:
            try:
                _loaded[kernel_size] = _build(kernel_size)
            except Exception as e:  # noqa: BLE001  (any failure means: use the built-in operators)
                _loaded[kernel_size] = None
                _errors[kernel_size] = str(e)
                warnings.warn(f"convmixer: fast CPU kernels unavailable, using PyTorch's ({e})", RuntimeWarning,
                              stacklevel=2)
        return _loaded[kernel_size]


def install(kernel_size: int, lib: ctypes.CDLL) -> None:
    """Make ``lib`` (from :func:`build_source`) the library the fast path calls for ``kernel_size`` from the next
    operator on, in this process (benchmarks/ab_kernels.py; :func:`reset` goes back to the packaged file)."""
    with _lock:
        _loaded[kernel_size] = lib
        _errors.pop(kernel_size, None)


def available(kernel_size: int = 0) -> bool:
    return load_kernels(kernel_size) is not None


def lanes(kernel_size: int = 0) -> int | None:
    """fp32 lanes per vector of the built kernels (16 with AVX-512, 8 otherwise); None without kernels."""
    lib = load_kernels(kernel_size)
    return int(lib.cmx_lanes()) if lib is not None else None


def build_error(kernel_size: int = 0) -> str | None:
    if disabled():
        return "disabled by CONVMIXER_NO_KERNELS"
    return _errors.get(kernel_size)


def reset() -> None:
    """Forget loaded libraries and failures (tests)."""
    with _lock:
        _loaded.clear()
        _errors.clear()
