"""The run directory: what a training run leaves behind.

    runs/<name>/
      config.yaml      the resolved configuration
      metrics.jsonl    one JSON object per evaluated epoch (and a final one)
      events.*         TensorBoard scalars, when tensorboard is installed
      last.pt, best.pt train-state checkpoints (best: highest eval top-1)
      curves.png       loss and accuracy per epoch
      summary.json     final figures: test top-1/top-5, best epoch, wall time, throughput, parameters
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import atomic_write


def default_run_name(model: str, dataset: str) -> str:
    return f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(path: Path, resume: bool) -> Path:
    """Create (or, when resuming, find) the run directory; fail early if it cannot be written."""
    if resume:
        if not (path / "last.pt").is_file():
            raise ConfigError(f"nothing to resume in {path}: no last.pt")
        for stale in path.glob(".*.tmp*"):  # half-written files of a process that was killed mid-save
            stale.unlink(missing_ok=True)
        return path
    if (path / "last.pt").exists():
        raise ConfigError(f"{path} already holds a run; resume it with --resume {path} or choose another --name")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to the output directory {path}: {e.strerror or e}") from None
    return path


class RunLog:
    """metrics.jsonl + TensorBoard (rank 0 only; the engine never builds one on other ranks)."""

    def __init__(self, path: Path, tensorboard: bool) -> None:
        self.path = path
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(path))
            except ImportError:  # tensorboard is an optional extra
                self.writer = None

    def history(self) -> list[dict[str, Any]]:
        file = self.path / "metrics.jsonl"
        if not file.is_file():
            return []
        return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]

    def log(self, record: dict[str, Any], step: int) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self.writer.add_scalar(key.replace("_", "/", 1), value, step)
            self.writer.flush()

    def truncate_after(self, step: int) -> None:
        """On resume, drop records written after the checkpoint (the run repeats those steps)."""
        records = [r for r in self.history() if r.get("step", 0) <= step]
        with atomic_write(self.path / "metrics.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_json(path: Path, obj: dict[str, Any]) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss (train, eval) and accuracy (eval top-1, train) per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r for r in history if "eval_top1" in r or "train_loss" in r]
    if not epochs:
        return
    x = [r["epoch"] for r in epochs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("eval_loss", "eval")):
        pts = [(r["epoch"], r[key]) for r in epochs if key in r]
        if pts:
            ax_loss.plot(*zip(*pts), marker="o", label=label)
    for key, label in (("eval_top1", "eval top-1"), ("eval_ema_top1", "eval top-1 (EMA)"), ("train_top1", "train top-1")):
        pts = [(r["epoch"], r[key]) for r in epochs if key in r]
        if pts:
            ax_acc.plot(*zip(*pts), marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xticks(sorted(set(x)))
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
