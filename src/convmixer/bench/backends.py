"""Backends run a model for the harness: ``torch`` (the fast execution plan) and ``onnxruntime`` (the model exported
to ONNX in memory, inference on the CPU). Another plugs in by subclassing :class:`Backend` and adding itself to
:data:`BACKENDS`.

A backend turns a :class:`~convmixer.bench.settings.BenchConfig` into a :class:`Setup`: the *fast* runner (what is
being measured) and the *reference* runner (the plain PyTorch ConvMixer of :mod:`convmixer.bench.reference`, or for
other architectures the same architecture on the plain path). A runner has ``step()`` (one batch),
``latency_step()`` (batch 1) and ``sync()``.

Within :mod:`convmixer.bench` this module imports :mod:`~convmixer.bench.settings` (and, inside ``setup``,
:mod:`~convmixer.bench.reference`); the harness imports it, never the other way.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .settings import check_device, default_batch_size


@dataclass
class Setup:
    fast: Any
    reference: Any | None
    batch_size: int
    input_shape: tuple[int, int, int, int]
    device: Any  # torch.device
    device_name: str
    plan: str


class Backend:
    name = "backend"
    modes: tuple[str, ...] = ("train", "infer")

    def setup(self, cfg) -> Setup:  # pragma: no cover - interface
        raise NotImplementedError


class TorchRunner:
    """One model on one device: a training step (forward, loss, backward, AdamW step) or an inference pass."""

    def __init__(self, name: str, description: str, model, x, y, mode: str, device, autocast_factory,
                 prepare=lambda t: t) -> None:
        import torch

        self.name, self.description, self.mode, self.device = name, description, mode, device
        self.model = model
        self.autocast = autocast_factory
        self.x, self.y = prepare(x), y
        self.x1, self.y1 = prepare(x[:1].clone()), y[:1].clone()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5) if mode == "train" else None
        model.train(mode == "train")

    def _run(self, x, y) -> None:
        import torch
        import torch.nn.functional as F

        if self.mode == "train":
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                outputs = self.model(x)
            # a segmentation model with auxiliary heads returns (main, *aux) in training: every head's loss counts
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            sum(F.cross_entropy(o.float(), y) for o in outputs).backward()
            self.optimizer.step()
        else:
            with torch.inference_mode(), self.autocast():
                self.model(x)

    def step(self) -> None:
        self._run(self.x, self.y)

    def latency_step(self) -> None:
        self._run(self.x1, self.y1)

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class TorchBackend(Backend):
    name = "torch"

    def setup(self, cfg) -> Setup:
        import torch

        from ..factory import create_model
        from ..fast import FastOptions, apply_plan, maybe_compile, plan_execution
        from ..fast.hardware import device_info
        from ..models import ConvMixer, get_model_entry
        from .reference import reference_from

        device = check_device(cfg.device)
        entry = get_model_entry(cfg.model)
        overrides = dict(cfg.model_args)
        for key in ("in_chans", "num_classes"):
            if getattr(cfg, key) is not None:
                overrides[key] = getattr(cfg, key)
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, **overrides)
        chans = getattr(model, "in_chans", overrides.get("in_chans", entry.cfg.input_size[0]))
        size = cfg.image_size or entry.cfg.input_size[1]
        patch = getattr(model, "patch_size", 1)
        if size < patch:
            raise ConfigError(f"--image-size {size} is smaller than {cfg.model}'s patch size {patch}")
        batch = cfg.batch_size or default_batch_size(size)
        shape = (batch, chans, size, size)
        num_classes = getattr(model, "num_classes", None) or overrides.get("num_classes") or entry.cfg.num_classes
        gen = torch.Generator().manual_seed(cfg.seed)
        x = torch.randn(shape, generator=gen).to(device)
        # targets: a class per image, or per pixel for a segmentation model (its logits are (B, K, H, W))
        target_shape = (batch, size, size) if entry.task == "segmentation" else (batch,)
        y = torch.randint(0, num_classes, target_shape, generator=gen).to(device)

        ref_runner = None
        if cfg.reference:
            if isinstance(model, ConvMixer):
                ref_model, ref_desc = reference_from(model), "reference: paper's nn.Sequential"
            else:
                ref_model = create_model(cfg.model, **overrides)
                ref_model.load_state_dict(model.state_dict())
                ref_desc = "reference: the same architecture, plain"
            ref_model.to(device)
            ref_autocast = contextlib.nullcontext
            if device.type == "cuda":  # the paper trained with AMP (fp16)
                ref_autocast = lambda: torch.autocast("cuda", dtype=torch.float16)  # noqa: E731
                ref_desc += ", autocast float16"
            else:
                ref_desc += ", eager NCHW fp32"
            ref_runner = TorchRunner("reference", ref_desc, ref_model, x, y, cfg.mode, device, ref_autocast)

        model.to(device)
        options = FastOptions(plain=cfg.plain, channels_last=cfg.channels_last, dtype=cfg.dtype,
                              compile=cfg.compile, kernel=cfg.kernel)
        plan = plan_execution(model, mode=cfg.mode, device=device, input_shape=shape, options=options)
        apply_plan(model, plan)
        fast_model = maybe_compile(model, plan)
        fast = TorchRunner("fast", plan.describe(), fast_model, x, y, cfg.mode, device, plan.autocast,
                           plan.prepare_input)
        return Setup(fast, ref_runner, batch, shape, device, device_info(device).name, plan.describe())


class OnnxruntimeBackend(Backend):
    """Inference through onnxruntime's CPU provider against the same plain PyTorch reference as ``torch``."""

    name = "onnxruntime"
    modes = ("infer",)

    def setup(self, cfg) -> Setup:
        import dataclasses

        import torch

        from ..export.onnx import onnxruntime_bench_runner

        if cfg.mode not in self.modes:
            raise ConfigError("the onnxruntime backend measures inference only: use --mode infer")
        if torch.device(cfg.device).type != "cpu":
            raise ConfigError("the onnxruntime backend runs on the CPU: use --device cpu")
        # the torch backend on the plain path builds the model, the inputs and the reference runner
        base = TorchBackend().setup(dataclasses.replace(cfg, plain=True))
        fast = onnxruntime_bench_runner(base.fast.model, base.input_shape, threads=cfg.threads, seed=cfg.seed)
        return dataclasses.replace(base, fast=fast, plan=fast.description)


BACKENDS: dict[str, Backend] = {"torch": TorchBackend(), "onnxruntime": OnnxruntimeBackend()}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None
