"""A seconds-long sweep on synthetic data: tiny ConvMixers (the training tests' TINY settings), 8 steps an epoch."""

from pathlib import Path

import pytest
import torch
import yaml

from convmixer.training.config import parse_assignment

from ..training.conftest import TINY

TINY_SET = dict(parse_assignment(a) for a in TINY if not a.startswith(("model.kernel_size", "model.patch_size")))


@pytest.fixture(autouse=True)
def _one_thread():
    """Sweeps here run in this process: one torch thread is several times faster on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def write_spec(tmp_path):
    """Write a tiny spec; keyword arguments replace or add top-level fields (``set`` entries are merged)."""

    def make(name: str = "tiny", *, set: dict | None = None, **fields) -> Path:
        tree = {"name": name, "base": "fmnist", "set": {**TINY_SET, "model.patch_size": 4, **(set or {})},
                "grid": {"model.kernel_size": [3, 5]}, "seeds": [0, 1]}
        tree.update(fields)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tree, sort_keys=False))
        return path

    return make
