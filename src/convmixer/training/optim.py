"""AdamW with the paper's parameter groups, Muon and Lookahead (optional), and the soft-target loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float, exclude: tuple[nn.Parameter, ...] = ()) -> list[dict]:
    """Two groups: decay for weight matrices and conv kernels; none for biases, norm parameters, and any
    parameter a model names in ``no_weight_decay()`` (position embeddings, class tokens, LayerScale). Parameters
    in ``exclude`` (another optimizer's) are left out."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    excluded = {id(p) for p in exclude}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in excluded:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW | MuonAndAdamW:
    # lr is overwritten every step by the schedule. foreach: torch's multi-tensor path, which torch picks by itself
    # only on GPUs; on the CPU it is the same arithmetic to the bit (tests/training/test_optim.py) and 1.25-1.3x
    # faster for the default model's 70 tensors, about 0.6 ms a step (benchmarks/results/zen4/step-profile/)
    matrices = channel_mixing_weights(model) if cfg.muon else []
    if cfg.muon and not matrices:
        raise ConfigError("optim.muon: this model has no square 1x1 convolutions (a ConvMixer's channel mixing) "
                          "for Muon to train")
    adamw = torch.optim.AdamW(param_groups(model, cfg.weight_decay, tuple(matrices)), lr=cfg.lr, betas=cfg.betas,
                              eps=cfg.eps, foreach=True)
    return MuonAndAdamW(matrices, adamw, cfg) if matrices else adamw


def channel_mixing_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weights of the square 1x1 convolutions (h -> h, no groups): a ConvMixer's channel-mixing matrices, the
    hidden weight matrices Muon is made for. Stem, depthwise filters, norms, biases and heads are not among them."""
    return [m.weight for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
            and m.in_channels == m.out_channels and m.weight.requires_grad]


class MuonAndAdamW:
    """torch.optim.Muon for the channel-mixing weights and an AdamW for the rest, stepped together as one optimizer
    (what the engine uses of one: ``param_groups``, ``step``, ``zero_grad``, ``state_dict``, ``load_state_dict``).

    torch's Muon takes 2-D parameters only; each (h, h, 1, 1) conv weight is handed to it as a 2-D view of the same
    storage, so its in-place update is the conv's. The update is scaled to AdamW's size (Muon's ``match_rms_adamw``:
    lr x 0.2 sqrt(h)) so that the schedule's lr and weight decay serve both, times ``muon_lr_scale`` (the group's
    ``lr_scale``, which the engine applies when it sets the lr each step). ``param_groups`` lists AdamW's groups and
    then Muon's (holding the 2-D views). The engine refuses Muon under fp16's GradScaler, which would not unscale
    the views' gradients (bf16 and fp32 need no scaler).
    """

    def __init__(self, matrices: list[nn.Parameter], adamw: torch.optim.AdamW, cfg: OptimConfig) -> None:
        self.matrices = list(matrices)
        self.views = [p.detach().view(p.shape[0], -1) for p in self.matrices]
        self.adamw = adamw
        self.muon = torch.optim.Muon(self.views, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     momentum=cfg.muon_momentum, nesterov=True, adjust_lr_fn="match_rms_adamw")
        self.muon.param_groups[0]["lr_scale"] = cfg.muon_lr_scale  # the engine sets lr x a group's lr_scale

    @property
    def param_groups(self) -> list[dict]:
        return self.adamw.param_groups + self.muon.param_groups

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MuonAndAdamW.step takes no closure")
        for p, view in zip(self.matrices, self.views):
            view.grad = None if p.grad is None else p.grad.reshape(view.shape)
        self.adamw.step()
        self.muon.step()
        for view in self.views:
            view.grad = None
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none)
        for p in self.matrices:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        if set(state_dict) != {"adamw", "muon"}:
            raise ValueError("this optimizer state is not Muon + AdamW's (was the run started without optim.muon?)")
        self.adamw.load_state_dict(state_dict["adamw"])
        self.muon.load_state_dict(state_dict["muon"])


class Lookahead:
    """Lookahead (Zhang, Lucas, Hinton and Ba, 2019) around any optimizer: slow weights phi start as the model's
    parameters; every ``k`` steps of the inner optimizer, phi += alpha * (theta - phi) and the fast weights theta
    restart from phi. The inner optimizer's moments are kept (the paper's default). The slow weights are part of
    the training state (``state_dict``), so a resumed run continues exactly."""

    def __init__(self, params: list[nn.Parameter], k: int, alpha: float) -> None:
        self.params, self.k, self.alpha = list(params), k, alpha
        self.slow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Call after optimizer step number ``step`` (1-based): syncs on every k-th."""
        if step % self.k:
            return
        fast = [p.detach() for p in self.params]
        torch._foreach_lerp_(self.slow, fast, self.alpha)
        torch._foreach_copy_(fast, self.slow)

    def state_dict(self) -> list[torch.Tensor]:
        return self.slow

    def load_state_dict(self, slow: list[torch.Tensor]) -> None:
        if len(slow) != len(self.slow):
            raise ValueError(f"lookahead state has {len(slow)} tensors, the model {len(self.slow)}")
        for mine, saved in zip(self.slow, slow):
            mine.copy_(saved)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against soft targets (B, K) that sum to 1 (mixup/CutMix/label smoothing); fp32."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
