"""The contract between the engine and a task (see the package docstring)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


class EvalMetrics(Protocol):
    """What a task's evaluation returns: global figures (already reduced over ranks)."""

    num_samples: int  # samples evaluated by all ranks together

    def as_dict(self, prefix: str = "eval") -> dict[str, float]:
        """The figures for metrics.jsonl, keyed ``<prefix>_<metric>`` (e.g. ``eval_top1``)."""
        ...


class Task(ABC):
    """What training, evaluation and prediction mean for one kind of target.

    The engine sums two statistics of every step itself (``loss_sum``: the loss times the samples, and
    ``samples``); a task adds its own named sums in :meth:`step_stats` (listed in :attr:`stat_names`). All of
    them are summed over the micro-batches of a step, over ranks, and over the steps of an epoch.
    """

    name: ClassVar[str]  # registry name (training/tasks/__init__.py TASKS)
    primary: ClassVar[str]  # eval metric (without prefix) whose highest value marks best.pt, e.g. "top1"
    stat_names: ClassVar[tuple[str, ...]]  # the task's per-step sums, beside the engine's loss_sum and samples

    # -- training ---------------------------------------------------------------------------------------------
    @abstractmethod
    def batch(self, data, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Loader output -> (model input, targets) for one training micro-batch: augmentation happens here."""

    def resize(self, x: Tensor, targets: Tensor, size: int) -> tuple[Tensor, Tensor]:
        """Progressive resizing: a training batch ``x`` (B, C, H, W) shrunk to (B, C, size, size) with an
        antialiased bilinear filter; image-level targets stay as they are (a dense task resizes its own)."""
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False), targets

    @abstractmethod
    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The scalar training loss (mean over the micro-batch, fp32)."""

    @abstractmethod
    def step_stats(self, outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Sums over the micro-batch, one 0-d float32 tensor per name of :attr:`stat_names` (no host sync)."""

    @abstractmethod
    def train_metrics(self, sums: Mapping[str, float]) -> dict[str, float]:
        """The epoch record's training figures from an epoch's sums (engine's and task's), e.g. train_loss."""

    @abstractmethod
    def progress_text(self, sums: Mapping[str, float]) -> str:
        """A few words for the progress bar: the running figures of the epoch so far."""

    # -- evaluation -------------------------------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, model: nn.Module, data, prepare, *, autocast=None, progress: bool = False,
                 test_flip: bool | None = None) -> EvalMetrics:
        """Run ``model`` over ``data.eval_loader`` (this rank's shard); ``prepare`` turns uint8 images into model
        input; ``test_flip`` averages each image's outputs with its mirror's (None: as ``aug.test_flip`` says).
        Every rank returns the global result."""

    @abstractmethod
    def record_text(self, record: Mapping[str, Any]) -> list[str]:
        """The task's parts of the one-line epoch summary, from a metrics.jsonl record."""

    @abstractmethod
    def summary(self, final: Mapping[str, Any], best: float | None) -> dict[str, Any]:
        """summary.json's task figures, from the last evaluated record and the best primary metric."""

    def summary_extras(self, final: Mapping[str, Any]) -> dict[str, Any]:
        """Figures that close summary.json, from the last evaluated record: the EMA model's primary metric
        (``test_ema_<primary>``) when the run kept one."""
        key = f"eval_ema_{self.primary}"
        return {f"test_ema_{self.primary}": final[key]} if key in final else {}

    @abstractmethod
    def eval_report(self, result: EvalMetrics, classes: list[str]) -> dict[str, Any]:
        """eval.json's figures for ``convmixer eval``."""

    @abstractmethod
    def write_eval_outputs(self, result: EvalMetrics, classes: list[str], path: Path, title: str) -> list[Path]:
        """The plot ``convmixer eval`` writes beside eval.json (``path``: the confusion matrix's PNG); returns the
        paths written."""

    @abstractmethod
    def eval_lines(self, result: EvalMetrics, classes: list[str]) -> list[str]:
        """What ``convmixer eval`` prints; the last line is the headline."""

    # -- prediction -------------------------------------------------------------------------------------------
    @abstractmethod
    def predictions(self, outputs: Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        """Model outputs for a batch -> one JSON-ready prediction per input."""

    @abstractmethod
    def prediction_text(self, prediction: Mapping[str, Any]) -> str:
        """One prediction as a short human-readable string."""
