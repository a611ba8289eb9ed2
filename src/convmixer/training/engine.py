"""The training engine: the paper's recipe, one code path from a 2-core CPU to torchrun on many GPUs.

One optimizer step:
    for each of `accum_steps` micro-batches (uint8 images from the loader):
        x, targets = augment(images, labels, generator(seed, rank, micro-batch index))   batched, on device
        with autocast: loss = soft_cross_entropy(model(x), targets) / accum_steps
        scaler.scale(loss).backward()                                                     (scaler: fp16 only)
    lr = schedule(step); clip grad norm; scaler.step(AdamW); EMA update

Everything random is a function of (seed, step), and a checkpoint holds everything else, so a run stopped
at step N and resumed ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ConvMixerError
from .config import TrainConfig, dump_yaml
from .distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    convert_sync_batchnorm,
    dist_info_from_env,
    init_distributed,
    resolve_device,
)
from .evaluate import EvalResult, evaluate
from .optim import build_optimizer, soft_cross_entropy
from .rundir import RunLog, default_run_name, plot_curves, prepare_run_dir, write_json
from .schedule import lr_at
from .state import capture_rng, load_state, restore_rng, save_state


class NonFiniteLossError(ConvMixerError):
    """The loss or the gradients became NaN or infinite; the last good checkpoint is kept."""


def step_generator(device: torch.device, seed: int, rank: int, index: int) -> torch.Generator:
    """A fresh generator for micro-batch ``index``: augmentation draws are a pure function of the step."""
    mixed = int(np.random.SeedSequence([seed, rank, index]).generate_state(1, np.uint64)[0]) & (2**63 - 1)
    return torch.Generator(device=device).manual_seed(mixed)


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # next micro-batch within the epoch
    best_top1: float = -1.0  # best eval top-1 so far (%)
    best_epoch: int = -1
    elapsed: float = 0.0  # training wall time so far, summed over resumes (s)
    images: int = 0  # training images processed by all ranks
    epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss sum, hits, count this epoch


class StopRequest:
    """SIGINT/SIGTERM set a flag; the engine finishes the current step, saves and exits. A second SIGINT
    interrupts at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> StopRequest:
        with contextlib.suppress(ValueError):  # not in the main thread: leave signals alone
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@dataclass
class TrainResult:
    run_dir: Path
    summary: dict[str, Any]
    stopped_by: str | None = None  # "SIGINT" / "SIGTERM" when interrupted, None when finished


class Trainer:
    """Builds everything from a :class:`TrainConfig` and runs it. ``fit()`` returns a :class:`TrainResult`."""

    def __init__(self, cfg: TrainConfig | None, resume: str | Path | None = None) -> None:
        self.started = time.monotonic()
        self.dist: DistInfo = dist_info_from_env()
        self.resume_state: dict[str, Any] | None = None
        if resume is None and cfg is not None and self.dist.restart > 0 and cfg.run.name:
            candidate = Path(cfg.run.out_dir) / cfg.run.name
            if (candidate / "last.pt").is_file():  # torchrun's elastic agent restarted us: continue
                resume = candidate
        if resume is not None:
            run_dir = prepare_run_dir(Path(resume), resume=True)
            self.resume_state = load_state(run_dir / "last.pt")
            cfg = TrainConfig.from_dict(self.resume_state["config"])
        if cfg is None:
            raise ConfigError("nothing to train: give a config or a run directory to resume")
        cfg.validate()
        self.cfg = cfg
        self.device = resolve_device(cfg.run.device, self.dist)
        init_distributed(self.dist, self.device)
        if resume is None:
            cfg.run.name = cfg.run.name or broadcast_object(default_run_name(cfg.model.name, cfg.data.dataset))
            run_dir = Path(cfg.run.out_dir) / cfg.run.name
            if self.dist.is_main:
                prepare_run_dir(run_dir, resume=False)
            barrier()
        self.run_dir = run_dir
        self.main = self.dist.is_main

    # ------------------------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        from ..data import build_data
        from ..fast import FastOptions, apply_plan, maybe_compile, plan_execution

        cfg, device = self.cfg, self.device
        torch.manual_seed(cfg.run.seed)
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True)
        self.data = build_data(cfg.data, cfg.aug, device=device, seed=cfg.run.seed, rank=self.dist.rank,
                               world_size=self.dist.world_size)
        self.model = build_model(cfg, self.data.in_chans, self.data.num_classes, self.data.image_size).to(device)
        if cfg.model.sync_bn and self.dist.enabled:
            self.model = convert_sync_batchnorm(self.model, device)
        loader = self.data.train_loader
        options = FastOptions(plain=cfg.run.plain, channels_last=cfg.run.channels_last,
                              dtype={"auto": "auto", "off": "float32", "bf16": "bfloat16", "fp16": "float16"}[cfg.run.amp],
                              compile=cfg.run.compile)
        shape = (loader.batch_size, self.data.in_chans, self.data.image_size, self.data.image_size)
        self.plan = plan_execution(self.model, mode="train", device=device, input_shape=shape, options=options)
        apply_plan(self.model, self.plan)
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.train_model = maybe_compile(self.train_model, self.plan)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.plan.autocast_dtype == torch.float16)
        self.ema = None
        if cfg.run.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.run.ema_decay), use_buffers=True)
        self.steps_per_epoch = len(loader) // cfg.optim.accum_steps
        if self.steps_per_epoch < 1:
            raise ConfigError(f"an epoch has {len(loader)} batches, fewer than optim.accum_steps={cfg.optim.accum_steps}")
        self.total_steps = self.steps_per_epoch * cfg.schedule.epochs
        self.progress = Progress()
        if self.resume_state is not None:
            self._restore(self.resume_state)
            self.resume_state = None

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("model_ema") is not None:
            ema = {f"module.{k}": v for k, v in state["model_ema"].items()}
            self.ema.load_state_dict({**ema, "n_averaged": state["ema_n_averaged"]})
        restore_rng(state["rng"])
        self.progress = Progress(**state["progress"])

    def _state(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "model": self.model.state_dict(),
            "model_name": self.cfg.model.name,
            "model_config": self.model.config() if hasattr(self.model, "config") else None,
            "config": self.cfg.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            # EMA weights as a plain state dict, so `eval --ema` and export read them like any weights
            "model_ema": self.ema.module.state_dict() if self.ema is not None else None,
            "ema_n_averaged": self.ema.n_averaged if self.ema is not None else None,
            "rng": capture_rng(),
            "progress": asdict(self.progress),
            "classes": list(self.data.classes),
            "mean": list(self.data.mean),
            "std": list(self.data.std),
            "image_size": self.data.image_size,
        }

    def _save(self, *names: str) -> None:
        if self.main:
            state = self._state()
            for name in names:
                save_state(self.run_dir / name, state)
        barrier()

    # ------------------------------------------------------------------------------------------------------------
    def _micro_batches(self):
        """(index within epoch, images, labels), resuming at the saved batch of the saved epoch."""
        p = self.progress
        usable = self.steps_per_epoch * self.cfg.optim.accum_steps
        for i, (images, labels) in enumerate(self.data.train_loader.iterate(p.epoch, start_batch=p.batch), start=p.batch):
            if i >= usable:
                break
            yield i, images, labels

    def _train_step(self, batches: list[tuple[int, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """One optimizer step over ``accum_steps`` micro-batches; returns [loss sum, top-1 hits, count, 1 if the
        gradients were non-finite (the step was not taken) else 0]."""
        cfg, p = self.cfg, self.progress
        lr = lr_at(p.step, self.total_steps, cfg.optim.lr, cfg.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        stats = torch.zeros(3, device=self.device)
        accum = len(batches)
        for j, (i, images, labels) in enumerate(batches):
            index = p.epoch * self.steps_per_epoch * accum + i
            x, targets = self.data.augment(images, labels, step_generator(self.device, cfg.run.seed, self.dist.rank, index))
            sync = contextlib.nullcontext()
            if self.dist.enabled and j < accum - 1:
                sync = self.train_model.no_sync()  # all-reduce gradients once per optimizer step
            with sync:
                with self.plan.autocast():
                    logits = self.train_model(self.plan.prepare_input(x))
                loss = soft_cross_entropy(logits, targets)
                self.scaler.scale(loss / accum).backward()
            with torch.no_grad():
                hits = (logits.argmax(1) == targets.argmax(1)).sum()
                stats += torch.stack([loss.detach() * len(labels), hits.float(), torch.tensor(float(len(labels)), device=self.device)])
        grad_norm = None
        if cfg.optim.clip_grad is not None or not self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
            max_norm = cfg.optim.clip_grad if cfg.optim.clip_grad is not None else math.inf
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        # fp16's GradScaler skips a step with inf/NaN gradients and lowers its scale; without it (fp32, bf16) such
        # a step would write NaN into every weight, so it is not taken and the run stops (_check, stats[3]). Reading
        # the norm here is one host sync per step, the same one GradScaler.step makes for fp16 and _fit makes anyway
        # for the step's stats; an on-device skip would need a guarded optimizer, which torch does not offer
        bad_grads = grad_norm is not None and not self.scaler.is_enabled() and not bool(torch.isfinite(grad_norm))
        if not bad_grads:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None and not bad_grads:
            self.ema.update_parameters(self.model)
        return torch.cat([stats, stats.new_tensor([float(bad_grads)])])

    def _check(self, stats: torch.Tensor, stop: StopRequest) -> tuple[str | None, bool]:
        """(what became non-finite on any rank: "loss", "gradients" or None; stop requested on any rank), agreed
        by all ranks."""
        flags = torch.tensor([float(not math.isfinite(stats[0].item())), float(stats[3].item() > 0),
                              float(stop.signal is not None)], device=self.device)
        if self.dist.enabled:
            all_reduce_sum(flags)
        nonfinite = "loss" if flags[0] > 0 else "gradients" if flags[1] > 0 else None
        return nonfinite, bool(flags[2] > 0)

    def _evaluate(self) -> dict[str, float]:
        prepare = lambda images: self.plan.prepare_input(self.data.normalize(images))  # noqa: E731
        loader = self.data.eval_loader
        result: EvalResult = evaluate(self.model, loader.iterate(), prepare, self.data.num_classes, self.plan.autocast(),
                                      progress=self.main and self.cfg.run.progress, total=len(loader))
        metrics = result.as_dict("eval")
        if self.ema is not None:
            ema_result = evaluate(self.ema.module, self.data.eval_loader.iterate(), prepare, self.data.num_classes,
                                  self.plan.autocast())
            metrics.update(ema_result.as_dict("eval_ema"))
        return metrics

    # ------------------------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        try:
            self._setup()
            return self._fit()
        finally:
            cleanup_distributed()

    def _fit(self) -> TrainResult:
        cfg, p = self.cfg, self.progress
        log = RunLog(self.run_dir, cfg.run.tensorboard) if self.main else None
        if self.main:
            (self.run_dir / "config.yaml").write_text(dump_yaml(cfg))
            log.truncate_after(p.step)
            self._announce()
        accum, epochs = cfg.optim.accum_steps, cfg.schedule.epochs
        stopped_by, last_save = None, time.monotonic()
        bar = None
        with StopRequest() as stop:
            while p.epoch < epochs and stopped_by is None:
                epoch_start, t0 = p.step, time.monotonic()
                bar = self._progress_bar(p.epoch, epochs, p.batch // accum)
                pending: list = []
                for item in self._micro_batches():
                    pending.append(item)
                    if len(pending) < accum:
                        continue
                    stats = self._train_step(pending)
                    pending = []
                    if self.dist.enabled:
                        all_reduce_sum(stats)
                    nonfinite, stop_now = self._check(stats, stop)
                    if nonfinite:
                        last = self.run_dir / "last.pt"
                        kept = (f"the last good checkpoint is {last}" if last.exists()
                                else "no checkpoint had been written yet")
                        what = "the loss" if nonfinite == "loss" else "the gradients (with a finite loss)"
                        raise NonFiniteLossError(
                            f"{what} became non-finite at step {p.step + 1} (epoch {p.epoch + 1}); lower optim.lr, "
                            f"keep optim.clip_grad on, or try run.amp=off; {kept}")
                    p.step += 1
                    p.batch += accum
                    p.images += int(stats[2].item())
                    p.epoch_sums = [a + float(b) for a, b in zip(p.epoch_sums, stats.tolist())]
                    now = time.monotonic()
                    p.elapsed += now - t0
                    t0 = now
                    self._update_bar(bar, stats)
                    if stop_now:
                        stopped_by = signal.Signals(stop.signal).name if stop.signal else "SIGTERM"
                        break
                    if cfg.run.max_steps is not None and p.step >= cfg.run.max_steps:
                        break
                    if cfg.run.checkpoint_minutes and now - last_save > 60 * cfg.run.checkpoint_minutes:
                        self._save("last.pt")
                        last_save = time.monotonic()
                if bar is not None:
                    bar.close()
                if stopped_by is not None:
                    break
                self._end_epoch(log, epoch_start)
                last_save = time.monotonic()
                if cfg.run.max_steps is not None and p.step >= cfg.run.max_steps:
                    break
        if stopped_by is not None:
            self._save("last.pt")
            if self.main:
                print(f"\n{stopped_by}: stopped after step {p.step}; saved {self.run_dir / 'last.pt'}. "
                      f"Continue with: convmixer train --resume {self.run_dir}", flush=True)
            return TrainResult(self.run_dir, {}, stopped_by)
        summary = self._finish(log)
        return TrainResult(self.run_dir, summary)

    def _end_epoch(self, log: RunLog | None, epoch_start: int) -> None:
        cfg, p = self.cfg, self.progress
        loss_sum, hits, count = p.epoch_sums
        record: dict[str, Any] = {"epoch": p.epoch + 1, "step": p.step,
                                  "lr": lr_at(max(p.step - 1, 0), self.total_steps, cfg.optim.lr, cfg.schedule)}
        if count:
            record.update(train_loss=loss_sum / count, train_top1=100 * hits / count)
        last = p.epoch + 1 == cfg.schedule.epochs or (cfg.run.max_steps is not None and p.step >= cfg.run.max_steps)
        improved = False
        if (p.epoch + 1) % cfg.run.eval_every == 0 or last:
            record.update(self._evaluate())
            if record["eval_top1"] > p.best_top1:
                p.best_top1, p.best_epoch, improved = record["eval_top1"], p.epoch + 1, True
        record.update(elapsed_s=round(p.elapsed, 2), images_per_s=round(p.images / max(p.elapsed, 1e-9), 1))
        p.epoch += 1
        p.batch = 0
        p.epoch_sums = [0.0, 0.0, 0.0]
        if self.main:
            log.log(record, p.step)
            plot_curves(log.history(), self.run_dir / "curves.png", f"{cfg.model.name} on {cfg.data.dataset}")
            print(self._epoch_line(record), flush=True)
        self._save("last.pt", *(("best.pt",) if improved else ()))

    def _finish(self, log: RunLog | None) -> dict[str, Any]:
        cfg, p = self.cfg, self.progress
        history = log.history() if log is not None else []
        final = next((r for r in reversed(history) if "eval_top1" in r), {})
        summary = {
            "model": cfg.model.name,
            "dataset": cfg.data.dataset,
            "params": sum(t.numel() for t in self.model.parameters()),
            "epochs": p.epoch,
            "steps": p.step,
            "test_top1": final.get("eval_top1"),
            "test_top5": final.get("eval_top5"),
            "test_loss": final.get("eval_loss"),
            "best_top1": p.best_top1,
            "best_epoch": p.best_epoch,
            "wall_time_s": round(p.elapsed, 1),  # training loop only, summed over resumes
            "command_wall_s": round(time.monotonic() - self.started, 1),  # this invocation, data loading and eval included
            "train_images_per_s": round(p.images / max(p.elapsed, 1e-9), 1),
            "world_size": self.dist.world_size,
            "device": str(self.device),
            "execution": self.plan.describe(),
            "torch": torch.__version__,
        }
        if "eval_ema_top1" in final:
            summary["test_ema_top1"] = final["eval_ema_top1"]
        if self.main:
            write_json(self.run_dir / "summary.json", summary)
            log.close()
        return summary

    # ------------------------------------------------------------------------------------------------------------
    def _announce(self) -> None:
        cfg = self.cfg
        params = sum(t.numel() for t in self.model.parameters())
        what = "resuming" if self.progress.step else "training"
        print(f"{what} {cfg.model.name} ({params:,} params) on {cfg.data.dataset}: {cfg.schedule.epochs} epochs x "
              f"{self.steps_per_epoch} steps, batch {self.data.train_loader.batch_size}"
              f"{f' x {self.dist.world_size} processes' if self.dist.enabled else ''}; {self.plan.describe()}\n"
              f"run directory: {self.run_dir}", flush=True)

    def _progress_bar(self, epoch: int, epochs: int, done: int):
        if not (self.main and self.cfg.run.progress):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.steps_per_epoch, initial=done, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                    dynamic_ncols=True, leave=False)

    def _update_bar(self, bar, stats: torch.Tensor) -> None:
        if bar is None:
            return
        p = self.progress
        loss_sum, hits, count = p.epoch_sums
        rate = p.images / max(p.elapsed, 1e-9)
        remaining = (self.total_steps - p.step) * self.data.train_loader.batch_size * self.cfg.optim.accum_steps \
            * self.dist.world_size / max(rate, 1e-9)
        bar.set_postfix_str(f"loss {loss_sum / max(count, 1):.3f} acc {100 * hits / max(count, 1):.1f}% "
                            f"{rate:.0f} img/s, run ETA {_duration(remaining)}", refresh=False)
        bar.update(1)

    def _epoch_line(self, r: dict[str, Any]) -> str:
        parts = [f"epoch {r['epoch']}/{self.cfg.schedule.epochs}"]
        if "train_loss" in r:
            parts.append(f"train loss {r['train_loss']:.4f} acc {r['train_top1']:.2f}%")
        if "eval_top1" in r:
            parts.append(f"test loss {r['eval_loss']:.4f} top-1 {r['eval_top1']:.2f}% top-5 {r['eval_top5']:.2f}%")
        if "eval_ema_top1" in r:
            parts.append(f"EMA top-1 {r['eval_ema_top1']:.2f}%")
        parts.append(f"{r['images_per_s']:.0f} img/s, {_duration(r['elapsed_s'])}")
        return " | ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def build_model(cfg: TrainConfig, in_chans: int, num_classes: int, image_size: int) -> nn.Module:
    """The configured registry model, sized for this data (channels, classes, and image size where it matters)."""
    from ..models import create_model, model_kwargs

    overrides = {**cfg.model.overrides(), "in_chans": in_chans, "num_classes": num_classes}
    kwargs = model_kwargs(cfg.model.name, **overrides)
    if "image_size" in kwargs or "img_size" in kwargs:  # baselines whose token count depends on the input size
        key = "image_size" if "image_size" in kwargs else "img_size"
        overrides[key] = image_size
    pretrained = cfg.model.pretrained or False
    return create_model(cfg.model.name, pretrained=pretrained, **overrides)
