"""Train-state checkpoints: RNG capture, atomic saves, and what load_state accepts."""

import random

import numpy as np
import pytest
import torch

from convmixer.checkpoint import save_checkpoint
from convmixer.errors import CheckpointError
from convmixer.models import ConvMixer
from convmixer.training import state as state_module
from convmixer.training.engine import Progress
from convmixer.training.state import VERSION, capture_rng, load_state, restore_rng, save_state


def draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_restored_rng_repeats_every_generator():
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    draws()  # move every generator off its seed
    saved = capture_rng()
    first = draws()
    draws()  # and on again
    restore_rng(saved)
    assert draws() == first


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(5), np.random.seed(6), random.seed(7)
    save_state(tmp_path / "s.pt", {"optimizer": {}, "progress": {}, "rng": capture_rng()})
    first = draws()
    restore_rng(load_state(tmp_path / "s.pt")["rng"])
    assert draws() == first


def test_save_state_adds_the_version_and_loads_with_weights_only(tmp_path):
    path = tmp_path / "last.pt"
    save_state(path, {"optimizer": {"lr": 0.1}, "progress": {"step": 3}, "model": {"w": torch.ones(2)}})
    state = torch.load(path, weights_only=True)
    assert state["version"] == VERSION and state["progress"] == {"step": 3}
    assert torch.equal(load_state(path)["model"]["w"], torch.ones(2))


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_state(path, {"optimizer": {}, "progress": {"step": 1}})
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("no space left on device")

    monkeypatch.setattr(state_module.torch, "save", broken_save)
    with pytest.raises(OSError):
        save_state(path, {"optimizer": {}, "progress": {"step": 2}})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind


def test_load_state_refuses_what_is_not_a_training_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_state(tmp_path / "missing.pt")
    weights = save_checkpoint(ConvMixer(8, 1, 3, 2, num_classes=2), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError):
        load_state(weights)
    torch.save({"model": {"w": torch.ones(1)}}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="weights file, not a training checkpoint"):
        load_state(tmp_path / "plain.pt")


def test_progress_reads_the_version_1_layout():
    old = {"step": 10, "epoch": 1, "batch": 4, "best_top1": 81.5, "best_epoch": 1, "elapsed": 2.0, "images": 1280,
           "epoch_sums": [3.5, 40.0, 64.0]}
    p = Progress.from_dict(old)
    assert p.best == 81.5 and p.step == 10 and p.images == 1280
    assert p.epoch_sums == {"loss_sum": 3.5, "correct": 40.0, "samples": 64.0}
    assert Progress.from_dict({**old, "best_top1": -1.0}).best is None  # never evaluated
