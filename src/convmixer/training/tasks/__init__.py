"""Tasks: what the engine trains a model *for*.

The engine (:mod:`convmixer.training.engine`) knows optimizer steps, checkpoints, ranks and the schedule; a
:class:`Task` knows everything that depends on what a batch means: the model input and targets of a training
batch, the loss, the per-step statistics beyond the loss, the evaluation metrics and how they are reduced across
ranks, and what the run summary, ``eval.json`` and ``predict`` report. A dataset's registry entry names its
task (``DatasetInfo.task``), and a model's entry the task it is built for (``ModelEntry.task``); a new task is a
module here plus one line in :data:`TASKS`.
"""

from __future__ import annotations

from .base import EvalMetrics, Task
from .classification import ClassificationTask
from .segmentation import SegmentationTask

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask, "segmentation": SegmentationTask}


def get_task(name: str = "classification", **options) -> Task:
    """A fresh instance of the task ``name``; ``options`` are its constructor's (segmentation: aux_weight)."""
    from ...errors import ConfigError

    try:
        cls = TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None
    return cls(**options)


def task_for_config(cfg) -> Task:
    """The task a training config trains for: its dataset's (the data decides what a target is)."""
    from ...data.registry import get_dataset_info

    name = get_dataset_info(cfg.data.dataset).task
    return get_task(name, aux_weight=cfg.model.aux_weight) if name == "segmentation" else get_task(name)


__all__ = ["TASKS", "ClassificationTask", "EvalMetrics", "SegmentationTask", "Task", "get_task", "task_for_config"]
