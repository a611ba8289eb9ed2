"""What a benchmark run is asked to do, and whether it can run here: :class:`BenchConfig` and its checks.

Settings sit below everything else in :mod:`convmixer.bench`, so the layers import one way only::

    settings   <-  backends   <-  harness                  <-  report
    (checks)       (runners)      (time, memory, results)      (text table)

(``A <- B``: B imports A; the harness imports settings directly too.) The backends need the device check and the default batch size, the harness needs the
config check, and none of it needs a runner or a timer; kept apart, neither of those two modules imports the other
back.

This module imports nothing from :mod:`convmixer.bench` and nothing heavy at import time (torch and the fast
plan's choices are imported inside the checks).

Defaults the backends resolve from it: the batch size is 128 for images up to ``SMALL_IMAGE`` (64) px on a side,
32 above; the input is ``(batch, in_chans, image_size, image_size)``, ``in_chans`` and ``image_size`` left ``None``
falling back to the model's own configuration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError

DEFAULT_REPEATS = 10
SMALL_IMAGE = 64  # default batch: 128 up to this image size, 32 above


@dataclass
class BenchConfig:
    model: str
    mode: str = "infer"  # "train" | "infer"
    batch_size: int | None = None  # default: 128 for images up to 64 px, else 32
    image_size: int | None = None  # default: the model's
    in_chans: int | None = None
    num_classes: int | None = None
    model_args: dict[str, Any] = field(default_factory=dict)  # further create_model overrides
    device: str = "cpu"
    dtype: str = "auto"
    compile: bool | None = None
    channels_last: bool | None = None
    kernel: str = "auto"
    plain: bool = False
    reference: bool = True
    repeats: int = DEFAULT_REPEATS
    warmup: int = 2
    latency_repeats: int = 20
    memory: bool = True
    threads: int | None = None
    backend: str = "torch"
    seed: int = 0
    progress: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_config(cfg: BenchConfig) -> None:
    """Raise ConfigError for settings that cannot run; one line each."""
    from ..fast.plan import DTYPES, KERNEL_CHOICES, MODES

    if cfg.mode not in MODES:
        raise ConfigError(f"unknown mode {cfg.mode!r}; choose one of {', '.join(MODES)}")
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {cfg.dtype!r}; choose one of {', '.join(DTYPES)}")
    if cfg.kernel not in KERNEL_CHOICES:
        raise ConfigError(f"unknown kernel {cfg.kernel!r}; choose one of {', '.join(KERNEL_CHOICES)}")
    for name in ("batch_size", "image_size", "in_chans", "threads"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if cfg.num_classes is not None and cfg.num_classes < 1:
        raise ConfigError(f"--num-classes must be at least 1 (the benchmark needs logits), got {cfg.num_classes}")
    if cfg.repeats < 1 or cfg.warmup < 0 or cfg.latency_repeats < 0:
        raise ConfigError("--repeats must be >= 1, --warmup and --latency-repeats >= 0")
    check_device(cfg.device)


def check_device(device: str):
    """The ``torch.device`` for ``device``; ConfigError if it is malformed or not available on this machine."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"bad device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"no CUDA device {dev.index}; this machine has {torch.cuda.device_count()}")
    elif dev.type != "cpu":
        backend = getattr(torch.backends, dev.type, None)
        if backend is None or not getattr(backend, "is_available", lambda: False)():
            raise ConfigError(f"device {device!r} is not available on this machine")
    return dev


def default_batch_size(image_size: int) -> int:
    return 128 if image_size <= SMALL_IMAGE else 32
