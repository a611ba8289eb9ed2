"""Speed measurement: the reference ConvMixer and the harness behind ``convmixer bench``.

    from convmixer.bench import BenchConfig, run_bench
    result = run_bench(BenchConfig("convmixer_256_8_ks5_p2", mode="train", image_size=28, in_chans=1))
    print(result.as_dict()["ratio"])

Every speed figure is a ratio against :func:`~convmixer.bench.reference.build_reference` measured in the same
process (interleaved rounds, median of per-round ratios).

Layers, imported one way: :mod:`.settings` (BenchConfig and its checks) <- :mod:`.backends` (the runners) <-
:mod:`.harness` (timing, memory, results) <- :mod:`.report` (the text table).
"""

from .backends import BACKENDS, Backend, TorchBackend, get_backend
from .harness import BenchResult, RunResult, percentile, run_bench
from .reference import build_reference, reference_from
from .report import format_table
from .settings import BenchConfig

__all__ = [
    "BACKENDS", "Backend", "TorchBackend", "get_backend", "BenchConfig", "BenchResult", "RunResult", "percentile",
    "run_bench", "build_reference", "reference_from", "format_table",
]
