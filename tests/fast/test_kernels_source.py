"""The C kernels are a real C file shipped as package data: found by the build, warning-free in every configuration."""

import functools
import subprocess
import sys
from pathlib import Path

import pytest

from convmixer.fast import build

WARNINGS = ["-Wall", "-Wextra", "-Werror"]

# The instruction-set variants the source has code paths for (#if on the compiler's ISA macros), compiled on any
# machine the compiler can target: the generic GCC vector code (8 lanes), AVX-512 (16 lanes, CMX_AVX512),
# AVX-512 + BF16 (one-instruction bf16 stores), and whatever -march=native gives here (the build's first choice).
ISAS = {
    "generic": [],
    "native": ["-march=native"],
    "avx512": ["-mavx512f", "-mavx512bw"],
    "avx512bf16": ["-mavx512f", "-mavx512bw", "-mavx512bf16"],
}
OPENMP = {"openmp": ["-fopenmp"], "serial": []}
# 0: the elementwise-only library (no -DKS); odd, even and the largest depthwise kernel sizes
KERNEL_SIZES = [0, 3, 8, build.MAX_KERNEL_SIZE]


def _cc() -> str:
    cc = build.compiler()
    if cc is None:
        pytest.skip("no C compiler (set CC or install gcc): the build falls back to PyTorch's operators")
    return cc


def _base_flags() -> list[str]:
    """The build's flags common to all its flag sets, minus linking (-shared)."""
    return [f for f in build._flag_sets()[-1] if f != "-shared"]


def _defines(kernel_size: int) -> list[str]:
    return [f"-DKS={kernel_size}"] if kernel_size else []


@functools.lru_cache(maxsize=None)
def _compiler_accepts(cc: str, flags: tuple[str, ...]) -> bool:
    """Whether ``cc`` compiles a trivial translation unit with ``flags`` (e.g. -mavx512f off x86, -fopenmp)."""
    probe = "#ifdef _OPENMP\n#include <omp.h>\n#endif\nint cmx_probe;\n"
    proc = subprocess.run([cc, *flags, "-x", "c", "-fsyntax-only", "-"], input=probe, capture_output=True, text=True,
                          timeout=60)
    return proc.returncode == 0


def _check_clean(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and not output, f"{' '.join(cmd)}\n{output}"


def test_packaged_source_is_found_by_the_build():
    src = build.source_file()
    assert src.name == "kernels.c" == build.SOURCE_NAME
    assert src.is_file()
    # next to the module, for an editable install as for an installed wheel
    assert Path(str(src)) == Path(build.__file__).with_name("kernels.c")
    text = build.kernel_source()
    assert text == Path(build.__file__).with_name("kernels.c").read_text(encoding="utf-8")
    for name in build._SIGNATURES:
        assert f"void {name}(" in text


def test_source_is_listed_as_package_data():
    pyproject = Path(build.__file__).parents[3] / "pyproject.toml"
    if not pyproject.is_file() or sys.version_info < (3, 11):
        pytest.skip("not a source checkout (or no tomllib)")
    import tomllib

    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    assert "fast/kernels.c" in data["tool"]["setuptools"]["package-data"]["convmixer"]


def test_cache_key_follows_the_source():
    cc, flags = "cc", _base_flags()
    text = build.kernel_source()
    assert build._key(text, cc, flags, 3) == build._key(text, cc, flags, 3)
    assert build._key(text, cc, flags, 3) != build._key(text + "/* edited */\n", cc, flags, 3)


@pytest.mark.usefixtures("require_kernels")
def test_edited_source_is_rebuilt(tmp_path, monkeypatch):
    """The build reads the source through source_file() and keys the cached library by its contents."""
    monkeypatch.setenv("CONVMIXER_CACHE", str(tmp_path / "cache"))
    # lightly optimized, to build quickly: only which source gets compiled matters here
    quick = ["-O1" if f == "-O3" else f for f in build._flag_sets()[-1]]
    monkeypatch.setattr(build, "_flag_sets", lambda: [quick])
    build.reset()
    try:
        assert build.load_kernels(0) is not None
        first = set((tmp_path / "cache" / "kernels").glob("cmx-k0-*.so"))
        assert len(first) == 1
        edited = tmp_path / "kernels.c"
        edited.write_text(build.kernel_source() + "/* edited */\n", encoding="utf-8")
        monkeypatch.setattr(build, "source_file", lambda: edited)
        build.reset()
        assert build.load_kernels(0) is not None
        both = set((tmp_path / "cache" / "kernels").glob("cmx-k0-*.so"))
        assert len(both) == 2 and first < both
    finally:
        build.reset()


@pytest.mark.parametrize("kernel_size", KERNEL_SIZES, ids=lambda k: f"KS{k}" if k else "elementwise")
@pytest.mark.parametrize("openmp", OPENMP, ids=str)
@pytest.mark.parametrize("isa", ISAS, ids=str)
def test_source_compiles_without_warnings(isa, openmp, kernel_size):
    cc = _cc()
    variant = [*ISAS[isa], *OPENMP[openmp]]
    if not _compiler_accepts(cc, tuple(variant)):
        pytest.skip(f"{cc} does not accept {' '.join(variant)} here")
    src = Path(str(build.source_file()))
    _check_clean([cc, *_base_flags(), *variant, *_defines(kernel_size), *WARNINGS, "-fsyntax-only", str(src)])


def test_optimized_build_has_no_warnings(tmp_path):
    """The build's own first working flag set, optimizer included (-O3 warnings such as -Wmaybe-uninitialized)."""
    cc = _cc()
    for flags in build._flag_sets():
        flags = [f for f in flags if f != "-shared"]
        if _compiler_accepts(cc, tuple(flags)):
            break
    else:
        pytest.skip(f"{cc} accepts none of the build's flag sets")
    src = Path(str(build.source_file()))
    _check_clean([cc, *flags, *_defines(9), *WARNINGS, "-c", str(src), "-o", str(tmp_path / "kernels.o")])
