"""The run directory: what a training run leaves behind.

    runs/<name>/
      .lock            flock'ed while a run uses the directory (RunDirectory); holds that process's id
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


LOCK_FILE = ".lock"  # flock'ed by the process that uses the run directory; holds its process id


class RunDirInUse(ConfigError):
    """Another live process uses the run directory."""


class RunDirectory:
    """A run directory, held by one process: an exclusive ``flock`` on its ``.lock`` file for as long as a run uses
    it, so a second run with the same name, or a ``--resume`` of a run that is still alive, is refused.

    The OS releases the lock when the process ends however it ends (kill -9 included), so a lock left behind by a
    killed run never blocks ``--resume``; the file itself stays (it holds the last holder's process id). On a file
    system without flock the run goes on unlocked. Under torchrun only rank 0 opens one.
    """

    def __init__(self, path: Path, created: list[Path]) -> None:
        self.path = path
        self.created = created  # the directories this run created, deepest first: removed again after a failed start
        self._fd: int | None = None

    @classmethod
    def open(cls, path: Path, resume: bool) -> RunDirectory:
        """Lock the run directory: a new run's (created, and checked to be writable) or, when resuming, the existing
        one, whose half-written files of a process killed mid-save are then removed."""
        if resume:
            check_resumable(path)
            run = cls(path, [])
            run._lock("resume it after that process has ended")
            for stale in path.glob(".*.tmp*"):  # only now: a live run's temporary file is not stale
                stale.unlink(missing_ok=True)
            return run
        created = []
        parent = path
        while not parent.exists() and parent != parent.parent:
            created.append(parent)
            parent = parent.parent
        run = cls(path, created)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            run.close(failed=True)
            raise ConfigError(f"cannot write to the output directory {path}: {e.strerror or e}") from None
        try:
            run._lock("choose another --name, or wait for it to end")
            if (path / "last.pt").exists():
                raise ConfigError(f"{path} already holds a run; resume it with --resume {path} or choose another "
                                  "--name")
        except BaseException:
            run.close(failed=True)
            raise
        return run

    def _lock(self, advice: str) -> None:
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no lock
            return
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise RunDirInUse(f"{self.path} is in use by another run{f' (process {holder})' if holder else ''}; "
                              f"{advice}") from None
        except OSError:  # a file system without flock (some network mounts): go on unlocked
            os.close(fd)
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def close(self, failed: bool = False) -> None:
        """Release the lock. After a failed start (``failed``), the directories this run created are removed again
        when nothing but the lock file was written into them."""
        if failed and self.created:
            left = [p.name for p in self.path.iterdir()] if self.path.is_dir() else []
            if all(name == LOCK_FILE for name in left):
                (self.path / LOCK_FILE).unlink(missing_ok=True)  # while still locked: no other run can have taken it
                for directory in self.created:
                    try:
                        directory.rmdir()
                    except FileNotFoundError:  # never made (mkdir failed on the way)
                        continue
                    except OSError:  # something else was put there meanwhile
                        break
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def check_resumable(path: Path) -> Path:
    """``path``, when it holds a run to resume (its last.pt); ConfigError otherwise."""
    if not (path / "last.pt").is_file():
        raise ConfigError(f"nothing to resume in {path}: no last.pt")
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
        lines = file.read_text().split("\n")[:-1]  # a last line without its newline was cut short (a full disk, a kill)
        return [json.loads(line) for line in lines if line.strip()]

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
    """Loss (train, eval) and the task's figures (classification: eval and train top-1; segmentation: eval mIoU,
    eval and train pixel accuracy) per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r for r in history if "eval_loss" in r or "train_loss" in r]
    if not epochs:
        return
    x = [r["epoch"] for r in epochs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("eval_loss", "eval")):
        pts = [(r["epoch"], r[key]) for r in epochs if key in r]
        if pts:
            ax_loss.plot(*zip(*pts), marker="o", label=label)
    for key, label in (("eval_top1", "eval top-1"), ("eval_ema_top1", "eval top-1 (EMA)"), ("train_top1", "train top-1"),
                       ("eval_miou", "eval mIoU"), ("eval_ema_miou", "eval mIoU (EMA)"),
                       ("eval_pixel_acc", "eval pixel accuracy"), ("train_pixel_acc", "train pixel accuracy")):
        pts = [(r["epoch"], r[key]) for r in epochs if key in r]
        if pts:
            ax_acc.plot(*zip(*pts), marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="%", title="accuracy" if "eval_miou" not in epochs[-1] else "mIoU, accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xticks(sorted(set(x)))
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
