import subprocess
import sys
import textwrap

import pytest

from convmixer.fast import allocator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")

# A 64 MiB temporary allocated, touched and freed 12 times: the minor page faults of each round. Under tuning the
# heap may still grow for the first rounds (observed: 0, 2 or 4 of them, as it makes room past long-lived small
# blocks); after that the block is reused. By default glibc gives it back every round.
ROUNDS, SETTLED = 12, 6
FAULTS = textwrap.dedent(f"""
    import resource, sys, torch
    from convmixer.fast.allocator import tune_malloc
    tuned = tune_malloc() if sys.argv[1] == "tuned" else False
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 << 20).sum()  # warm-up
    rounds = []
    for _ in range({ROUNDS}):
        start = faults()
        torch.ones(16 << 20).sum()
        rounds.append(faults() - start)
    print(tuned, *rounds)
""")


def _faults(mode: str) -> tuple[str, list[int]]:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout.split()
    return out[0], [int(n) for n in out[1:]]


def test_tuned_malloc_reuses_freed_memory_instead_of_faulting_it_back():
    tuned, few = _faults("tuned")
    _, many = _faults("default")
    if tuned != "True":
        pytest.skip("not glibc")
    # 64 MiB of 4 KiB pages = 16,384 faults per round when glibc gives the block back
    assert all(n > 15_000 for n in many[-SETTLED:]), many
    assert sum(few[-SETTLED:]) <= 100 * SETTLED, few


def test_disabled_by_environment_or_user_settings(monkeypatch):
    for env in ({"CONVMIXER_TUNE_MALLOC": "0"}, {"MALLOC_TRIM_THRESHOLD_": "1000"}):
        monkeypatch.setattr(allocator, "_tuned", None)
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            assert allocator.tune_malloc() is False
    monkeypatch.setattr(allocator, "_tuned", None)


TRIM = textwrap.dedent("""
    import sys, torch
    from convmixer.fast.allocator import trim_heap, tune_malloc
    def rss():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) << 10
    tuned = tune_malloc()
    a = torch.ones(16 << 20)  # 64 MiB from the heap, touched
    del a
    kept = rss()
    trimmed = trim_heap()
    print(tuned, trimmed, kept - rss())
""")


def test_trim_heap_gives_back_what_the_tuned_allocator_kept():
    out = subprocess.run([sys.executable, "-c", TRIM], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout.split()
    if out[0] != "True":
        pytest.skip("not glibc")
    assert out[1] == "True"
    assert int(out[2]) > 48 << 20, out  # most of the freed 64 MiB left the resident set
