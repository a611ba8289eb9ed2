"""Train-state checkpoints: everything needed to continue a run exactly, in one atomic file.

Layout (see docs/architecture.md): ``version``, ``model``, ``model_name``, ``model_config``, ``config``,
``optimizer``, ``scaler``, ``model_ema`` and ``ema_n_averaged`` (None without EMA), ``lookahead`` (the slow
weights in parameter order; None without Lookahead, absent before it existed), ``rng``, ``progress`` (step,
epoch, next batch within the epoch, the best value of the task's primary metric and its epoch, elapsed time,
images, the epoch's running sums by name: see ``engine.Progress``),
``classes``, ``mean``, ``std``, ``image_size``. Only tensors, numbers, strings, lists and dicts, so
``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import read_torch_file
from ..errors import CheckpointError
from ..io import atomic_write

VERSION = 2  # 2: progress holds `best` and named `epoch_sums` (version 1: `best_top1`, a list)


def capture_rng() -> dict[str, Any]:
    """Global RNG states (torch CPU and CUDA, numpy, python). Augmentation does not use them (it draws
    from per-step generators), but user code and library internals might."""
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_pos": random.getstate()[2], "numpy": torch.from_numpy(np.random.get_state()[1].copy()),
             "numpy_pos": int(np.random.get_state()[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Serialize to memory first, then write atomically: a crash (even SIGKILL) mid-save leaves the old file."""
    buffer = io.BytesIO()
    torch.save({"version": VERSION, **state}, buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    state = read_torch_file(path)
    if not isinstance(state, dict) or "optimizer" not in state or "progress" not in state:
        raise CheckpointError(f"{path} is a weights file, not a training checkpoint (no optimizer state)")
    return state
