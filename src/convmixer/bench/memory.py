"""``python -m convmixer.bench.memory '{"config": {...}, "which": "fast"}'``: one run's peak step memory.

A fresh interpreter per run keeps the allocator state of one model from hiding the other's memory. Prints one
JSON line: ``{"peak_memory_bytes": ..., "memory_method": ...}``.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    import torch

    from .backends import get_backend
    from .harness import cpu_step_peak
    from .settings import BenchConfig

    payload = json.loads(argv[0])
    cfg = BenchConfig(**{**payload["config"], "memory": False, "progress": False})
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if payload["which"] == "fast":
        cfg.reference = False
    setup = get_backend(cfg.backend).setup(cfg)
    runner = setup.fast if payload["which"] == "fast" else setup.reference
    peak, method = cpu_step_peak(runner, warmup=max(1, cfg.warmup))
    print(json.dumps({"peak_memory_bytes": peak, "memory_method": method}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
