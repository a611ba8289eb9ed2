import subprocess
import sys
import textwrap

import pytest

from convmixer.fast import allocator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")

# A 64 MiB temporary allocated, touched and freed 5 times: the minor page faults of the last 4 rounds.
FAULTS = textwrap.dedent("""
    import resource, sys, torch
    from convmixer.fast.allocator import tune_malloc
    tuned = tune_malloc() if sys.argv[1] == "tuned" else False
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(2):  # warm-up: the heap settles where later rounds can reuse it
        torch.ones(16 << 20).sum()
    start = faults()
    for _ in range(4):
        torch.ones(16 << 20).sum()
    print(tuned, faults() - start)
""")


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout.split()
    return out[0], int(out[1])


def test_tuned_malloc_reuses_freed_memory_instead_of_faulting_it_back():
    tuned, few = _faults("tuned")
    _, many = _faults("default")
    if tuned != "True":
        pytest.skip("not glibc")
    # 4 x 64 MiB of 4 KiB pages = 65,536 faults when glibc gives every block back; tuned, the heap keeps them
    # (at most one round's worth, 16,384, where the heap layout makes it grow once more)
    assert many > 30_000 and few <= many // 4 + 100, (few, many)


def test_disabled_by_environment_or_user_settings(monkeypatch):
    for env in ({"CONVMIXER_TUNE_MALLOC": "0"}, {"MALLOC_TRIM_THRESHOLD_": "1000"}):
        monkeypatch.setattr(allocator, "_tuned", None)
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            assert allocator.tune_malloc() is False
    monkeypatch.setattr(allocator, "_tuned", None)
