"""The training engine: the paper's recipe, one code path from a 2-core CPU to torchrun on many GPUs.

    open the run: device, process group, run directory, locked (or the checkpoint of a run to continue)
    build data, model (fast path, DDP), optimizer, EMA; restore the checkpoint when resuming
    for each epoch:
        for each optimizer step, a group of `accum_steps` micro-batches (uint8 images from the loader):
            for each micro-batch:
                x, targets = task.batch(images, labels, generator(seed, "augment", rank, micro-batch index))   on device
                (progressive resizing: x, targets = task.resize(x, targets, image_size(step)))
                with autocast: loss = task.loss(model(x), targets); scaler.scale(loss / accum_steps).backward()
            lr = schedule(step); clip grad norm; AdamW step (not taken on non-finite gradients); Lookahead; EMA update
            sum the step's statistics over ranks; stop on a non-finite loss or gradients, a signal or max_steps
        average the ranks' BatchNorm statistics (without sync_bn)
        evaluate (task.evaluate), log the epoch, save last.pt (and best.pt)
    write summary.json (with the number of unreadable images skipped)

The engine knows steps, checkpoints, ranks and the schedule; the task (training/tasks/) knows what a batch's
targets are, the loss, the metrics and what the summary reports. Everything random is a function of (seed,
step), and a checkpoint holds everything else, so a run stopped at step N and resumed ends with exactly the
weights of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from ..data.seeding import derive_seed, generator
from ..errors import ConvMixerError, os_error_message
from ..models.registry import size_multiple
from .config import TrainConfig, dump_yaml
from .console import Console
from .distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_sum,
    average_running_stats,
    barrier,
    broadcast_object,
    cleanup_distributed,
    convert_sync_batchnorm,
    dist_info_from_env,
    init_distributed,
    resolve_device,
)
from .ema import EMA
from .optim import Lookahead, build_optimizer
from .rundir import RunDirectory, RunLog, check_resumable, default_run_name, plot_curves, write_json
from .schedule import image_size_at, lr_at, relative_costs
from .state import capture_rng, load_state, restore_rng, save_state
from .tasks import Task, task_for_config

MicroBatch = tuple[int, torch.Tensor, torch.Tensor]  # (index within the epoch, uint8 images, labels)


class NonFiniteLossError(ConvMixerError):
    """The loss or the gradients became NaN or infinite; the last good checkpoint is kept."""


class RunStorageError(ConvMixerError):
    """The run could not read or write a file (a full disk, a read-only file system, ...); the last good checkpoint
    is kept (every checkpoint is written to a temporary file and renamed over the old one)."""


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # next micro-batch within the epoch
    best: float | None = None  # best value of the task's primary eval metric so far (e.g. top-1, %)
    best_epoch: int = -1  # the epoch (1-based) that reached it
    elapsed: float = 0.0  # training wall time so far, summed over resumes (s)
    images: int = 0  # training images processed by all ranks
    epoch_sums: dict[str, float] = field(default_factory=dict)  # this epoch's step statistics, summed (by name)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Progress:
        """The saved progress, including that of checkpoints written before the statistics had names."""
        saved = dict(saved)
        if "best_top1" in saved:  # version 1 of the layout
            best = saved.pop("best_top1")
            saved["best"] = best if best >= 0 else None
        if isinstance(saved.get("epoch_sums"), list):
            saved["epoch_sums"] = dict(zip(("loss_sum", "correct", "samples"), saved["epoch_sums"]))
        return cls(**saved)


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
    """Trains ``cfg`` for ``task`` (default: its dataset's, classification or segmentation).
    ``Trainer(cfg).fit()`` starts a run; ``Trainer.resume(run_dir).fit()`` continues one. Building a Trainer
    validates the config and does nothing else: the run directory, the process group and the data are set up by
    :meth:`fit`."""

    def __init__(self, cfg: TrainConfig, *, task: Task | None = None, run_dir: Path | None = None,
                 resume_state: dict[str, Any] | None = None,
                 on_step: Callable[[Trainer], None] | None = None) -> None:
        cfg.validate()  # the one check of a config on its way in (CLI, API and resume all come here)
        self.started = time.monotonic()
        self.cfg = cfg
        self.task = task or task_for_config(cfg)
        self.dist: DistInfo = dist_info_from_env()
        self.main = self.dist.is_main
        self.run_dir = run_dir  # set by resume(); otherwise chosen when the run opens
        self.resume_state = resume_state  # the checkpoint to continue from (resume(), or an elastic restart)
        # called after every optimizer step (e.g. benchmarks/bench_tta.py evaluates there); its time is not
        # counted in the run's training time
        self.on_step = on_step
        self._directory: RunDirectory | None = None  # rank 0's lock on the run directory, while the run uses it

    @classmethod
    def resume(cls, run_dir: str | Path, *, task: Task | None = None) -> Trainer:
        """A trainer that continues the run in ``run_dir`` from its last.pt, with the run's saved config."""
        run_dir = check_resumable(Path(run_dir))  # locked when the run opens (fit)
        state = load_state(run_dir / "last.pt")
        return cls(TrainConfig.from_dict(state["config"]), task=task, run_dir=run_dir, resume_state=state)

    def fit(self) -> TrainResult:
        ended = False
        try:
            self._open_run()
            self._setup()
            result = self._fit()
            ended = True
            return result
        except OSError as e:  # a full disk while saving, ...: one line that says what is left and how to go on
            last = self._last_good()
            go_on = f"; continue with: convmixer train --resume {self.run_dir}" if last else ""
            raise RunStorageError(f"{os_error_message(e)}; {self._kept(last)}{go_on}") from e
        finally:
            if self._directory is not None:
                self._directory.close(failed=not ended)  # a failed start leaves no empty run directory behind
            if ended:
                barrier()  # no rank tears its process group down while another still talks to it
            if self.dist.enabled and hasattr(self, "train_model"):
                self.train_model = self.model  # DDP's reducer holds the process group: let it go first
            cleanup_distributed()

    def _last_good(self) -> Path | None:
        """The run's last.pt, if one was written (every save is atomic: it is always whole)."""
        last = self.run_dir / "last.pt" if self.run_dir is not None else None
        return last if last is not None and last.exists() else None

    @staticmethod
    def _kept(last: Path | None) -> str:
        return f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"

    # ------------------------------------------------------------------------------------------------------------
    # Setting up
    # ------------------------------------------------------------------------------------------------------------
    def _open_run(self) -> None:
        """Device and process group; the run directory (created, or found when resuming)."""
        cfg = self.cfg
        if self.resume_state is None and self.dist.restart > 0 and cfg.run.name:
            candidate = Path(cfg.run.out_dir) / cfg.run.name
            if (candidate / "last.pt").is_file():  # torchrun's elastic agent restarted us: continue
                self.run_dir = candidate
                self.resume_state = load_state(candidate / "last.pt")
                self.cfg = cfg = TrainConfig.from_dict(self.resume_state["config"])
                cfg.validate()
        self.device = resolve_device(cfg.run.device, self.dist)
        init_distributed(self.dist, self.device)
        if self.run_dir is None:
            cfg.run.name = cfg.run.name or broadcast_object(default_run_name(cfg.model.name, cfg.data.dataset))
            self.run_dir = Path(cfg.run.out_dir) / cfg.run.name
        if self.main:  # locked for as long as this run uses it; a new run's is created
            self._directory = RunDirectory.open(self.run_dir, resume=self.resume_state is not None)
        barrier()

    def _setup(self) -> None:
        from ..data import build_data
        from ..factory import build_model
        from ..fast import FastOptions, apply_plan, maybe_compile, plan_execution

        cfg, device = self.cfg, self.device
        torch.manual_seed(derive_seed(cfg.run.seed, "init"))  # the model's initial weights
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True)
        self.data = build_data(cfg.data, cfg.aug, device=device, seed=cfg.run.seed, rank=self.dist.rank,
                               world_size=self.dist.world_size)
        self.model = build_model(cfg.model.name, in_chans=self.data.in_chans, num_classes=self.data.num_classes,
                                 image_size=self.data.image_size, pretrained=cfg.model.pretrained or False,
                                 **cfg.model.overrides()).to(device)
        if cfg.model.init and self.resume_state is None:
            self._initialize()
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
        self.lookahead = None
        if cfg.optim.lookahead_k:
            self.lookahead = Lookahead([q for g in self.optimizer.param_groups for q in g["params"]],
                                       cfg.optim.lookahead_k, cfg.optim.lookahead_alpha)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.plan.autocast_dtype == torch.float16)
        self.ema = None
        if cfg.run.ema_decay > 0:
            self.ema = EMA(self.model, cfg.run.ema_decay)
        self.steps_per_epoch = len(loader) // cfg.optim.accum_steps
        if self.steps_per_epoch < 1:
            from ..errors import ConfigError

            raise ConfigError(f"an epoch has {len(loader)} batches, fewer than optim.accum_steps={cfg.optim.accum_steps}")
        self.total_steps = self.steps_per_epoch * cfg.schedule.epochs
        self.size_multiple = size_multiple(self.model)  # progressive resizing keeps whole patches (or U-Net levels)
        self._cum_cost: list[float] | None = None  # cumulative relative step costs, built on first use
        self.progress = Progress()
        self._stats_agreed_at = -1  # the step at which the ranks' BatchNorm statistics were last averaged
        if self.resume_state is not None:
            self._restore(self.resume_state)
            self.resume_state = None
        self.console = Console(self.main, cfg.run.progress, self.task, cfg.schedule.epochs, self.steps_per_epoch)

    def _initialize(self) -> None:
        """``model.init`` on the new model, from this rank's first images of epoch 0 (under DDP the wrapper then
        broadcasts rank 0's weights, so every rank starts alike)."""
        from .init import apply_inits, parse_inits

        names = parse_inits(self.cfg.model.init)
        images = None
        if "whiten" in names:
            batches, n = [], 0
            for batch, _ in self.data.train_loader.iterate(0):
                batches.append(self.data.normalize(batch).cpu())
                n += len(batch)
                if n >= 5000:  # airbench's sample: enough for a (C p^2)-dimensional covariance
                    break
            images = torch.cat(batches)
        apply_inits(self.model, names, images)

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("model_ema") is not None:
            ema = {f"module.{k}": v for k, v in state["model_ema"].items()}
            self.ema.load_state_dict({**ema, "n_averaged": state["ema_n_averaged"]})
        if self.lookahead is not None and state.get("lookahead") is not None:
            self.lookahead.load_state_dict(state["lookahead"])
        restore_rng(state["rng"])
        self.progress = Progress.from_dict(state["progress"])

    # ------------------------------------------------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------------------------------------------------
    def _fit(self) -> TrainResult:
        cfg, p = self.cfg, self.progress
        self.log = RunLog(self.run_dir, cfg.run.tensorboard) if self.main else None
        if self.main:
            (self.run_dir / "config.yaml").write_text(dump_yaml(cfg))
            self.log.truncate_after(p.step)
        self.console.announce(resuming=p.step > 0, model=cfg.model.name, params=self._params(),
                              dataset=cfg.data.dataset, batch_size=self.data.train_loader.batch_size,
                              world_size=self.dist.world_size, plan=self.plan.describe(), run_dir=self.run_dir)
        stopped_by = None
        self._last_save = time.monotonic()
        self._epoch_end_s: float | None = None  # what the last epoch end (evaluation, checkpoints) took
        with StopRequest() as stop:
            while p.epoch < cfg.schedule.epochs and not self._reached_max_steps():
                self._clock = time.monotonic()
                self.console.start_epoch(p.epoch, p.batch // cfg.optim.accum_steps)
                for batches in self._steps():
                    sums = self._reduce(self._train_step(batches), stop)
                    self._advance(sums)
                    stopped_by = self._stop_reason(sums, stop)
                    if stopped_by is not None:
                        break
                    self._timed_checkpoint()
                    if self.on_step is not None:
                        self.on_step(self)
                        self._clock = time.monotonic()
                self.console.end_epoch()
                if stopped_by in ("SIGINT", "SIGTERM"):
                    break
                started = time.monotonic()
                self._end_epoch()
                self._epoch_end_s = time.monotonic() - started
        skipped = self._skipped_files()
        if stopped_by in ("SIGINT", "SIGTERM"):
            self._save("last.pt")
            self.console.stopped(stopped_by, p.step, self.run_dir / "last.pt", self.run_dir)
            return TrainResult(self.run_dir, {}, stopped_by)
        return TrainResult(self.run_dir, self._finish(skipped))

    def _steps(self) -> Iterator[list[MicroBatch]]:
        """The rest of this epoch's optimizer steps, each a group of ``accum_steps`` micro-batches, starting at
        the saved micro-batch of the saved epoch when resuming (an incomplete last group is dropped)."""
        p, accum = self.progress, self.cfg.optim.accum_steps
        usable = self.steps_per_epoch * accum
        group: list[MicroBatch] = []
        for i, (images, labels) in enumerate(self.data.train_loader.iterate(p.epoch, start_batch=p.batch), start=p.batch):
            if i >= usable:
                break
            group.append((i, images, labels))
            if len(group) == accum:
                yield group
                group = []

    def _train_step(self, batches: list[MicroBatch]) -> dict[str, torch.Tensor]:
        """One optimizer step over ``accum_steps`` micro-batches. Returns this rank's statistics as 0-d tensors:
        ``loss_sum`` (loss x samples), ``samples``, the task's sums, and ``nonfinite_grads`` (1 when the gradients
        were not finite, so the step was not taken)."""
        cfg, p = self.cfg, self.progress
        lr = lr_at(p.step, self.total_steps, cfg.optim.lr, cfg.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        sums = {name: torch.zeros((), device=self.device) for name in ("loss_sum", "samples", *self.task.stat_names)}
        accum = len(batches)
        for j, (i, images, labels) in enumerate(batches):
            index = p.epoch * self.steps_per_epoch * accum + i
            x, targets = self.task.batch(self.data, images, labels,
                                         generator(cfg.run.seed, "augment", self.dist.rank, index, device=self.device))
            size = image_size_at(p.step, self.total_steps, self.data.image_size, cfg.schedule, self.size_multiple)
            if size != self.data.image_size:
                x, targets = self.task.resize(x, targets, size)
            sync = contextlib.nullcontext()
            if self.dist.enabled and j < accum - 1:
                sync = self.train_model.no_sync()  # all-reduce gradients once per optimizer step
            with sync:
                with self.plan.autocast():
                    outputs = self.train_model(self.plan.prepare_input(x))
                loss = self.task.loss(outputs, targets)
                self.scaler.scale(loss / accum).backward()
            sums["loss_sum"] += loss.detach() * len(images)
            sums["samples"] += len(images)
            for name, value in self.task.step_stats(outputs, targets).items():
                sums[name] += value
        grad_norm = None
        if cfg.optim.clip_grad is not None or not self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
            max_norm = cfg.optim.clip_grad if cfg.optim.clip_grad is not None else math.inf
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        # fp16's GradScaler skips a step with inf/NaN gradients and lowers its scale; without it (fp32, bf16) such
        # a step would write NaN into every weight, so it is not taken and the run stops (_advance). Reading the
        # norm here is one host sync per step, the same one GradScaler.step makes for fp16 and _reduce makes anyway
        # for the step's statistics; an on-device skip would need a guarded optimizer, which torch does not offer
        bad_grads = grad_norm is not None and not self.scaler.is_enabled() and not bool(torch.isfinite(grad_norm))
        if not bad_grads:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.lookahead is not None and not bad_grads:
            self.lookahead.after_step(p.step + 1)
        if self.ema is not None and not bad_grads:
            self.ema.update_parameters(self.model)
        sums["nonfinite_grads"] = torch.tensor(float(bad_grads), device=self.device)
        return sums

    def _reduce(self, sums: dict[str, torch.Tensor], stop: StopRequest) -> dict[str, float]:
        """The step's statistics summed over ranks, with ``stop`` (> 0 when any rank was asked to stop): one
        all-reduce and one host sync per step."""
        values = torch.stack([*sums.values(), torch.tensor(float(stop.signal is not None), device=self.device)])
        if self.dist.enabled:
            all_reduce_sum(values)
        return dict(zip([*sums, "stop"], values.tolist()))

    def _advance(self, sums: dict[str, float]) -> None:
        """Count a finished step, or raise :class:`NonFiniteLossError` if its loss or gradients were not finite
        on any rank (the weights in memory and on disk are then those of the step before)."""
        p = self.progress
        if not math.isfinite(sums["loss_sum"]) or sums["nonfinite_grads"] > 0:
            kept = self._kept(self._last_good())
            what = "the loss" if not math.isfinite(sums["loss_sum"]) else "the gradients (with a finite loss)"
            raise NonFiniteLossError(f"{what} became non-finite at step {p.step + 1} (epoch {p.epoch + 1}); lower "
                                     f"optim.lr, keep optim.clip_grad on, or try run.amp=off; {kept}")
        p.step += 1
        p.batch += self.cfg.optim.accum_steps
        p.images += int(sums["samples"])
        for name in ("loss_sum", "samples", *self.task.stat_names):
            p.epoch_sums[name] = p.epoch_sums.get(name, 0.0) + sums[name]
        now = time.monotonic()
        p.elapsed += now - self._clock
        self._clock = now
        rate = p.images / max(p.elapsed, 1e-9)
        self.console.step(p.epoch_sums, rate, self._remaining_seconds(rate))

    def eta_seconds(self) -> float:
        """What the progress bar shows as the run's ETA now (seconds): see :meth:`_remaining_seconds`."""
        p = self.progress
        return self._remaining_seconds(p.images / max(p.elapsed, 1e-9))

    def _remaining_seconds(self, rate: float) -> float:
        """The run's ETA: the training steps left at ``rate`` images/s, plus the epoch ends left (evaluation and
        checkpoints) at the measured cost of the last one, or, before any, evaluation at three times the
        training rate (a forward pass costs about a third of a training step)."""
        cfg, p = self.cfg, self.progress
        last = self._last_step()
        per_step = self.data.train_loader.batch_size * cfg.optim.accum_steps * self.dist.world_size
        train = (last - p.step) * per_step / max(rate, 1e-9) * self._cost_ratio(p.step, last)
        last_epoch = min(cfg.schedule.epochs, -(-last // self.steps_per_epoch))
        evals = sum(1 for e in range(p.epoch + 1, last_epoch + 1) if e % cfg.run.eval_every == 0 or e == last_epoch)
        if self._epoch_end_s is not None:
            per_eval = self._epoch_end_s
        else:
            per_eval = self.data.eval_loader.dataset_size / max(3 * rate, 1e-9)
        return train + evals * per_eval

    def _cost_ratio(self, step: int, last: int) -> float:
        """Mean cost of steps [step, last) over that of steps [0, step): 1 unless progressive resizing made the
        steps done so far cheaper than those to come (schedule.relative_costs)."""
        if not self.cfg.schedule.resize_from or step <= 0 or last <= step:
            return 1.0
        if self._cum_cost is None:
            costs = relative_costs(self.total_steps, self.data.image_size, self.cfg.schedule, self.size_multiple)
            self._cum_cost = [0.0, *itertools.accumulate(costs)]
        done, left = self._cum_cost[step] / step, (self._cum_cost[last] - self._cum_cost[step]) / (last - step)
        return left / max(done, 1e-9)

    def _last_step(self) -> int:
        """The step the run ends at: the schedule's last, or ``run.max_steps`` when that comes first."""
        limit = self.cfg.run.max_steps
        return self.total_steps if limit is None else min(self.total_steps, limit)

    def _stop_reason(self, sums: dict[str, float], stop: StopRequest) -> str | None:
        """Why the epoch's loop ends after this step: "SIGINT"/"SIGTERM" (any rank), "max_steps", or None."""
        if sums["stop"] > 0:
            return signal.Signals(stop.signal).name if stop.signal else "SIGTERM"
        return "max_steps" if self._reached_max_steps() else None

    def _reached_max_steps(self) -> bool:
        return self.cfg.run.max_steps is not None and self.progress.step >= self.cfg.run.max_steps

    def _timed_checkpoint(self) -> None:
        """last.pt mid-epoch every ``run.checkpoint_minutes`` (long epochs lose little to a crash)."""
        minutes = self.cfg.run.checkpoint_minutes
        if minutes and time.monotonic() - self._last_save > 60 * minutes:
            self._save("last.pt")
            self._last_save = time.monotonic()

    # ------------------------------------------------------------------------------------------------------------
    # Epoch ends, checkpoints, the summary
    # ------------------------------------------------------------------------------------------------------------
    def _end_epoch(self) -> None:
        cfg, p = self.cfg, self.progress
        record: dict[str, Any] = {"epoch": p.epoch + 1, "step": p.step,
                                  "lr": lr_at(max(p.step - 1, 0), self.total_steps, cfg.optim.lr, cfg.schedule)}
        if p.epoch_sums:
            record.update(self.task.train_metrics(p.epoch_sums))
        improved = False
        # every epoch end, on every rank: what is evaluated and saved below has the ranks' averaged statistics. Not
        # at mid-epoch or signal checkpoints (ranks reach those at different steps, or a resumed run would not
        # continue exactly: uninterrupted, the ranks go on from rank 0's statistics)
        self._agree_running_stats()
        if (p.epoch + 1) % cfg.run.eval_every == 0 or p.epoch + 1 == cfg.schedule.epochs or self._reached_max_steps():
            record.update(self.evaluate())
            value = record[f"eval_{self.task.primary}"]
            if p.best is None or value > p.best:
                p.best, p.best_epoch, improved = value, p.epoch + 1, True
        record.update(elapsed_s=round(p.elapsed, 2), images_per_s=round(p.images / max(p.elapsed, 1e-9), 1))
        p.epoch += 1
        p.batch = 0
        p.epoch_sums = {}
        if self.main:
            self.log.log(record, p.step)
            plot_curves(self.log.history(), self.run_dir / "curves.png", f"{cfg.model.name} on {cfg.data.dataset}")
        self.console.epoch_line(record)
        self._save("last.pt", *(("best.pt",) if improved else ()))
        self._last_save = time.monotonic()

    def evaluate(self) -> dict[str, float]:
        """The task's eval metrics of the model (``eval_*``) and of its EMA (``eval_ema_*``). Under DDP the ranks'
        BatchNorm statistics are made the same first (:meth:`_agree_running_stats`), so they are the checkpoint's."""
        self._agree_running_stats()
        prepare = lambda images: self.plan.prepare_input(self.data.normalize(images))  # noqa: E731
        metrics = self.task.evaluate(self.model, self.data, prepare, autocast=self.plan.autocast(),
                                     progress=self.main and self.cfg.run.progress).as_dict("eval")
        if self.ema is not None:
            if self.cfg.run.ema_bn_images:
                self.recalibrate_ema()
            metrics.update(self.task.evaluate(self.ema.module, self.data, prepare,
                                              autocast=self.plan.autocast()).as_dict("eval_ema"))
        return metrics

    def recalibrate_ema(self) -> None:
        """Replace the EMA's BatchNorm running statistics by those of its own activations on ``run.ema_bn_images``
        training images (torch's ``update_bn``: the plain average over the batches), unaugmented: the first batches
        of this epoch's order, so the same in a resumed run. Under DDP each rank takes its share of them and the
        statistics are then averaged over the ranks.

        Why: the EMA averages BatchNorm's running statistics like the weights, but those are statistics of earlier
        models' activations, not of the averaged weights' own; while the weights move fast the two differ. On the
        default Fashion-MNIST recipe that costs the EMA 12-15 points after 30,000 images and nothing measurable from
        120,000 on (docs/RESULTS.md, "BatchNorm recalibration of the EMA")."""
        loader = self.data.train_loader
        per_rank = -(-self.cfg.run.ema_bn_images // (loader.batch_size * self.dist.world_size))  # batches, rounded up
        batches = itertools.islice(loader.iterate(self.progress.epoch), per_rank)
        inputs = (self.plan.prepare_input(self.data.normalize(images)) for images, _ in batches)
        with self.plan.autocast():
            update_bn(inputs, self.ema.module)
        average_running_stats(self.ema.module)

    def _state(self) -> dict[str, Any]:
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
            "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
            "rng": capture_rng(),
            "progress": asdict(self.progress),
            "classes": list(self.data.classes),
            "mean": list(self.data.mean),
            "std": list(self.data.std),
            "image_size": self.data.image_size,
        }

    def _agree_running_stats(self) -> None:
        """Without ``model.sync_bn`` each process ends a step with BatchNorm statistics of its own batches: average
        them over the ranks (distributed.average_running_stats), once per step, at epoch ends and before evaluating,
        so the accuracy a run reports is that of the checkpoint it saves. Training goes on from rank 0's (DDP broadcasts
        them before each forward), as before."""
        if not self.dist.enabled or self.cfg.model.sync_bn or self._stats_agreed_at == self.progress.step:
            return
        average_running_stats(self.model, *((self.ema.module,) if self.ema is not None else ()))
        self._stats_agreed_at = self.progress.step

    def _save(self, *names: str) -> None:
        if self.main:
            state = self._state()
            for name in names:
                save_state(self.run_dir / name, state)
        barrier()

    def _params(self) -> int:
        return sum(t.numel() for t in self.model.parameters())

    def _skipped_files(self) -> int:
        """How many unreadable image files the loaders skipped in this invocation (each file once, over all ranks);
        the console says so when there were any."""
        seen = set()
        for loader in (self.data.train_loader, self.data.eval_loader):
            seen |= set(getattr(loader, "skipped", {}))  # unreadable files, bad image/mask pairs (folder data)
        if self.dist.enabled:
            seen = set().union(*all_gather_object(seen))
        self.console.skipped(len(seen))
        return len(seen)

    def _finish(self, skipped: int) -> dict[str, Any]:
        cfg, p = self.cfg, self.progress
        history = self.log.history() if self.log is not None else []
        final = next((r for r in reversed(history) if f"eval_{self.task.primary}" in r), {})
        summary = {
            "model": cfg.model.name,
            "dataset": cfg.data.dataset,
            "params": self._params(),
            "epochs": p.epoch,
            "steps": p.step,
            **self.task.summary(final, p.best),
            "test_flip": cfg.aug.test_flip,  # the test figures average each image with its mirror
            "best_epoch": p.best_epoch,
            "wall_time_s": round(p.elapsed, 1),  # training loop only, summed over resumes
            "command_wall_s": round(time.monotonic() - self.started, 1),  # this invocation, data loading and eval included
            "train_images_per_s": round(p.images / max(p.elapsed, 1e-9), 1),
            "world_size": self.dist.world_size,
            "device": str(self.device),
            "execution": self.plan.describe(),
            "skipped_files": skipped,  # unreadable image files left out by this invocation (folder data)
            "torch": torch.__version__,
            **self.task.summary_extras(final),
        }
        if self.main:
            write_json(self.run_dir / "summary.json", summary)
            self.log.close()
        return summary
