"""Tasks: what the engine trains a model *for*.

The engine (:mod:`convmixer.training.engine`) knows optimizer steps, checkpoints, ranks and the schedule; a
:class:`Task` knows everything that depends on what a batch means: the model input and targets of a training
batch, the loss, the per-step statistics beyond the loss, the evaluation metrics and how they are reduced across
ranks, and what the run summary, ``eval.json`` and ``predict`` report. Classification is the only task today;
a second one (segmentation) is a new module here plus one line in :data:`TASKS`.
"""

from __future__ import annotations

from .base import EvalMetrics, Task
from .classification import ClassificationTask

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask}


def get_task(name: str = "classification") -> Task:
    """A fresh instance of the task ``name``."""
    from ...errors import ConfigError

    try:
        return TASKS[name]()
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None


__all__ = ["TASKS", "ClassificationTask", "EvalMetrics", "Task", "get_task"]
