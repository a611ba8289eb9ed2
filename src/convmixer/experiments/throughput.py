"""Training and inference images per second of one architecture, for the results table and the dry run.

:func:`measure_throughput` is the one place the experiments ask for speed, and it asks the project's
benchmark harness (:func:`convmixer.bench.run_bench`): the same execution plan as training (memory format,
autocast, kernels) on random input of the data's shape, warm-up steps, then the median step time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..training.config import TrainConfig
from .costs import DataFacts

DTYPES = {"auto": "auto", "off": "float32", "bf16": "bfloat16", "fp16": "float16"}  # run.amp -> bench dtype


@dataclass
class Throughput:
    train_images_per_s: float | None  # forward + loss + backward + AdamW step, at the training batch size
    infer_images_per_s: float | None  # forward under inference_mode, at the evaluation batch size
    device: str
    threads: int
    how: str  # what measured it

    def as_dict(self) -> dict:
        return asdict(self)


def measure_throughput(cfg: TrainConfig, facts: DataFacts, *, train: bool = True, infer: bool = True,
                       repeats: int = 10) -> Throughput:
    """Images/s of ``cfg``'s model on ``cfg.run.device`` with this process's torch thread count."""
    import torch

    device = cfg.run.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    rates = {mode: _bench(cfg, facts, mode, device, repeats) if wanted else None
             for mode, wanted in (("train", train), ("infer", infer))}
    return Throughput(rates["train"], rates["infer"], device, torch.get_num_threads(),
                      f"convmixer.bench.run_bench (median of {repeats} steps)")


def _bench(cfg: TrainConfig, facts: DataFacts, mode: str, device: str, repeats: int) -> float:
    from ..bench import BenchConfig, run_bench
    from ..models import model_kwargs

    args = dict(cfg.model.overrides())
    kwargs = model_kwargs(cfg.model.name, **args)
    for key in ("image_size", "img_size"):  # fixed-size token models are built for the data's side, as in training
        if key in kwargs:
            args[key] = facts.image_size
    bench = BenchConfig(model=cfg.model.name, mode=mode, image_size=facts.image_size, in_chans=facts.in_chans,
                        num_classes=facts.num_classes, model_args=args, device=device,
                        batch_size=cfg.data.batch_size if mode == "train" else cfg.data.eval_batch_size,
                        dtype=DTYPES[cfg.run.amp], compile=cfg.run.compile, channels_last=cfg.run.channels_last,
                        plain=cfg.run.plain, reference=False, repeats=repeats, warmup=2, latency_repeats=0,
                        memory=False, progress=False)
    return run_bench(bench).runs["fast"].images_per_s
