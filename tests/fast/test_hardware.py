import subprocess
import sys

import pytest

from convmixer.fast import hardware


@pytest.fixture
def fresh_flags(monkeypatch):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda *keys: "fpu avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 "
                                                           "avx_vnni sse4_2" if "flags" in keys else None)
    hardware.cpu_flags.cache_clear()
    yield
    hardware.cpu_flags.cache_clear()


def test_an_avx2_cap_hides_the_wider_extensions(fresh_flags, monkeypatch):
    assert {"avx512f", "amx_bf16"} <= hardware.cpu_flags()
    assert hardware.cpu_info().simd512 and hardware.cpu_info().bf16_native
    monkeypatch.setenv(hardware.ISA_ENV, "avx2")
    hardware.cpu_flags.cache_clear()
    assert hardware.cpu_flags() == {"fpu", "avx2", "fma", "sse4_2"}
    info = hardware.cpu_info()
    assert not info.simd512 and not info.bf16_native


def test_an_unknown_cap_is_refused(monkeypatch):
    monkeypatch.setenv(hardware.ISA_ENV, "avx1024")
    with pytest.raises(ValueError, match="avx2 or native"):
        hardware.isa_cap()


def test_the_kernels_built_under_the_cap_use_8_lanes():
    from convmixer.fast import build

    if build.lanes(0) is None:
        pytest.skip("no C compiler")
    code = "from convmixer.fast import build; print(build.lanes(0))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, hardware.ISA_ENV: "avx2"}).stdout
    assert out.strip() == "8"
