"""What a training run prints (rank 0 only): the opening line, a progress bar per epoch, one line per epoch, the
total of skipped unreadable images and the stop message. The engine calls these; nothing here changes the run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def duration(seconds: float) -> str:
    """``"3m07s"`` or ``"1h02m03s"``."""
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Console:
    """Console output of one run; silent on ranks other than 0, and ``progress=False`` drops the bars."""

    def __init__(self, enabled: bool, progress: bool, task, epochs: int, steps_per_epoch: int) -> None:
        self.enabled = enabled
        self.progress = enabled and progress
        self.task = task
        self.epochs = epochs  # passes over the training set of the whole run
        self.steps_per_epoch = steps_per_epoch
        self.bar = None

    def print(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def announce(self, *, resuming: bool, model: str, params: int, dataset: str, batch_size: int, world_size: int,
                 plan: str, run_dir: Path) -> None:
        what = "resuming" if resuming else "training"
        self.print(f"{what} {model} ({params:,} params) on {dataset}: {self.epochs} epochs x "
                   f"{self.steps_per_epoch} steps, batch {batch_size}"
                   f"{f' x {world_size} processes' if world_size > 1 else ''}; {plan}\nrun directory: {run_dir}")

    def start_epoch(self, epoch: int, done_steps: int) -> None:
        """A bar for epoch ``epoch`` (0-based) of which ``done_steps`` steps are already done (resume)."""
        if not self.progress:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.steps_per_epoch, initial=done_steps, desc=f"epoch {epoch + 1}/{self.epochs}",
                        unit="step", dynamic_ncols=True, leave=False)

    def step(self, sums: Mapping[str, float], images_per_s: float, remaining_s: float) -> None:
        if self.bar is None:
            return
        self.bar.set_postfix_str(f"{self.task.progress_text(sums)} {images_per_s:.0f} img/s, "
                                 f"run ETA {duration(remaining_s)}", refresh=False)
        self.bar.update(1)

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def epoch_line(self, record: Mapping[str, Any]) -> None:
        parts = [f"epoch {record['epoch']}/{self.epochs}", *self.task.record_text(record),
                 f"{record['images_per_s']:.0f} img/s, {duration(record['elapsed_s'])}"]
        self.print(" | ".join(parts))

    def skipped(self, count: int) -> None:
        """The total of unreadable image files the run left out (each was warned about once), when there were any."""
        if count:
            were = "files were" if count != 1 else "file was"
            self.print(f"{count} unreadable image {were} skipped (warned about above; data.strict_images=true makes one "
                       "an error)")

    def stopped(self, signal_name: str, step: int, last: Path, run_dir: Path) -> None:
        self.print(f"\n{signal_name}: stopped after step {step}; saved {last}. "
                   f"Continue with: convmixer train --resume {run_dir}")
