"""What a point costs before it runs: the data's input shape, the model's parameters and MACs, and how many
images a run trains on. Shared by the dry run (an estimate of the sweep's time) and the report (params, MACs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.registry import get_dataset_info
from ..training.config import TrainConfig


@dataclass(frozen=True)
class DataFacts:
    in_chans: int
    image_size: int
    num_classes: int

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)


def data_facts(cfg: TrainConfig) -> DataFacts:
    """Channels, side and classes of a config's data, without loading it where the registry knows them."""
    d = cfg.data
    size = cfg.image_size()
    info = get_dataset_info(d.dataset).for_config(d)  # synthetic: shape from its config
    if info.in_chans is not None and info.num_classes is not None:
        return DataFacts(info.in_chans, size, info.num_classes)
    from ..data import build_data  # folder data: scan the evaluation folder

    data = build_data(d, cfg.aug, device="cpu", seed=0, train=False)
    return DataFacts(data.in_chans, data.image_size, data.num_classes)


def run_images(cfg: TrainConfig) -> tuple[int | None, int | None]:
    """(training images seen over the whole run, evaluation images per evaluation); None where unknown."""
    d = cfg.data
    info = get_dataset_info(d.dataset).for_config(d)  # synthetic: sizes from its config; folder: unknown
    train, evals = info.train_size, info.eval_size
    if train is not None and d.train_subset:
        train = min(train, d.train_subset)
    if evals is not None and d.eval_subset:
        evals = min(evals, d.eval_subset)
    if train is not None:
        steps = train // (d.batch_size * cfg.optim.accum_steps)
        train = steps * d.batch_size * cfg.optim.accum_steps * cfg.schedule.epochs
        if cfg.run.max_steps is not None:
            train = min(train, cfg.run.max_steps * d.batch_size * cfg.optim.accum_steps)
    return train, evals


def arch_key(cfg: TrainConfig, facts: DataFacts) -> str:
    """Identifies an architecture at an input size: points with the same key share params, MACs and speed."""
    return json.dumps({"model": cfg.model.name, "overrides": cfg.model.overrides(), "input": facts.input_size,
                       "classes": facts.num_classes}, sort_keys=True)


def describe_model(cfg: TrainConfig) -> str:
    """``ConvMixer-128/8 k5 p2`` for ConvMixers, else the registry name (with any overrides)."""
    from ..models import get_model_entry, model_kwargs

    entry = get_model_entry(cfg.model.name)
    overrides = cfg.model.overrides()
    if entry.family == "convmixer":
        kw = model_kwargs(cfg.model.name, **overrides)
        act = kw.get("act", "gelu")
        return (f"ConvMixer-{kw['dim']}/{kw['depth']} k{kw['kernel_size']} p{kw['patch_size']}"
                + ("" if act == "gelu" else f" {act}"))
    extra = ", ".join(f"{k}={v}" for k, v in overrides.items())
    return f"{cfg.model.name} ({extra})" if extra else cfg.model.name


def profile_point(cfg: TrainConfig, facts: DataFacts) -> dict[str, Any]:
    """Parameters and MACs per image at the data's input size (:func:`convmixer.profile.profile_model`)."""
    from ..factory import build_model
    from ..profile import profile_model

    model = build_model(cfg.model.name, in_chans=facts.in_chans, num_classes=facts.num_classes,
                        image_size=facts.image_size, pretrained=cfg.model.pretrained or False, **cfg.model.overrides())
    prof = profile_model(model, facts.input_size)
    return {"params": prof.params, "macs": prof.macs}


def duration(seconds: float | None) -> str:
    """``"42 s"``, ``"7.5 min"`` or ``"2.1 h"`` ("—" for None)."""
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class ArchCache:
    """Per-architecture figures (profile, throughput) computed once and kept in a JSON file in the sweep folder."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = {}
        self._facts: dict[str, DataFacts] = {}
        if path is not None and path.is_file():
            try:
                self.data = json.loads(path.read_text())
            except (OSError, ValueError):
                self.data = {}

    def get(self, key: str, field: str) -> Any:
        return self.data.get(key, {}).get(field)

    def profile(self, cfg: TrainConfig) -> tuple[DataFacts, str]:
        """The data facts and architecture key of ``cfg``, with its params and MACs measured (once) and cached."""
        data_key = json.dumps(cfg.to_dict()["data"], sort_keys=True)
        if data_key not in self._facts:
            self._facts[data_key] = data_facts(cfg)
        facts = self._facts[data_key]
        key = arch_key(cfg, facts)
        if self.get(key, "macs") is None:
            self.put(key, **profile_point(cfg, facts))
        return facts, key

    def put(self, key: str, **values: Any) -> None:
        self.data.setdefault(key, {}).update(values)
        if self.path is not None:
            from ..training.rundir import write_json

            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, self.data)
