"""AdamW with the paper's parameter groups, Muon and Lookahead (optional), and the soft-target loss."""

from __future__ import annotations

import math

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
    mixing = channel_mixing_weights(model) if cfg.muon else []
    if cfg.muon and not mixing:  # Muon is for a ConvMixer's hidden matrices, also with optim.muon_all_convs
        raise ConfigError("optim.muon: this model has no square 1x1 convolutions (a ConvMixer's channel mixing) "
                          "for Muon to train; use --set optim.muon=false")
    matrices = conv_weights(model) if mixing and cfg.muon_all_convs else mixing
    adamw = torch.optim.AdamW(param_groups(model, cfg.weight_decay, tuple(matrices)), lr=cfg.lr, betas=cfg.betas,
                              eps=cfg.eps, foreach=True)
    return MuonAndAdamW(matrices, adamw, cfg) if matrices else adamw


def channel_mixing_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weights of the square 1x1 convolutions (h -> h, no groups): a ConvMixer's channel-mixing matrices, the
    hidden weight matrices Muon is made for. Stem, depthwise filters, norms, biases and heads are not among them."""
    return [m.weight for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
            and m.in_channels == m.out_channels and m.weight.requires_grad]


def conv_weights(model: nn.Module) -> list[nn.Parameter]:
    """Every trainable convolution weight: a ConvMixer's channel-mixing matrices, and its stem and depthwise filters,
    which Muon steps as (out_channels, in_channels/groups x k x k) matrices: (128, 4) for the default's 2x2 patch
    embedding, (128, 25) for a 5x5 depthwise layer. Muon is made for hidden matrices; for the default recipe the
    filters under Muon too measured better (docs/RESULTS.md, twelfth session), so `configs/fmnist.yaml` asks for it."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad]


def newton_schulz(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype) -> torch.Tensor:
    """Muon's quintic Newton-Schulz iteration, computed in ``dtype``: (m, n) ``g`` -> an (m, n) matrix close to
    U V^T where g = U S V^T (singular values pushed into roughly 0.7..1.2 rather than exactly 1, which is what makes
    5 steps enough). A wide matrix keeps its Gram matrices small: a tall one is transposed first and back after."""
    x = g.to(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.mT
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    a, b, c = coefficients
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Muon's quintic: the steepest slope at 0 that still converges


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al., 2024) for weight matrices: nesterov momentum, the update orthogonalized by
    :func:`newton_schulz`, decoupled weight decay, and the update scaled to AdamW's typical size (torch's
    ``match_rms_adamw``: lr x 0.2 sqrt(max(rows, cols))) so that AdamW's lr and weight decay serve. The arithmetic
    of ``torch.optim.Muon(..., nesterov=True, adjust_lr_fn="match_rms_adamw")``, with two differences:

    - a parameter of more than 2 dimensions is stepped as its (rows, rest) matrix, so a (h, h, 1, 1) conv weight is
      the parameter itself (torch's takes 2-D parameters only, and 2-D views of the weights would hide their
      gradients from fp16's GradScaler, which unscales and checks the gradients of ``param_groups``);
    - the iteration runs in ``ns_dtype``, by default float32 on the CPU and bfloat16 elsewhere. torch's runs in
      bfloat16 everywhere, which a CPU without avx512_bf16 (most of them) emulates: the default model's eight
      128x128 matrices took 110-119 ms a step there, against a few ms in float32 (benchmarks/results/zen4/muon/).

    The state is torch's (``momentum_buffer`` per parameter, shaped as the parameter).
    """

    def __init__(self, params, lr: float, weight_decay: float, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, eps: float = 1e-7, ns_dtype: torch.dtype | None = None) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        eps=eps)
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() < 2:
                    raise ValueError(f"Muon steps weight matrices; got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("Muon.step takes no closure")
        for group in self.param_groups:
            momentum, lr = group["momentum"], float(group["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                matrix = update.reshape(p.shape[0], -1)
                dtype = self.ns_dtype or (torch.float32 if p.device.type == "cpu" else torch.bfloat16)
                ortho = newton_schulz(matrix, NS_COEFFICIENTS, group["ns_steps"], group["eps"], dtype)
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(ortho.reshape(p.shape).to(p.dtype), alpha=-lr * 0.2 * math.sqrt(max(matrix.shape)))
        return None


class MuonAndAdamW:
    """:class:`Muon` for the channel-mixing weights and an AdamW for the rest, stepped together as one optimizer
    (what the engine and fp16's GradScaler use of one: ``param_groups``, ``step``, ``zero_grad``, ``state_dict``,
    ``load_state_dict``). ``param_groups`` lists AdamW's groups, then Muon's; Muon's has ``lr_scale`` =
    ``muon_lr_scale``, which the engine applies when it sets the lr each step.
    """

    def __init__(self, matrices: list[nn.Parameter], adamw: torch.optim.AdamW, cfg: OptimConfig) -> None:
        self.matrices = list(matrices)
        self.adamw = adamw
        self.muon = Muon(self.matrices, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum)
        self.muon.param_groups[0]["lr_scale"] = cfg.muon_lr_scale

    @property
    def param_groups(self) -> list[dict]:
        return self.adamw.param_groups + self.muon.param_groups

    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MuonAndAdamW.step takes no closure")
        self.adamw.step()
        self.muon.step()
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none)
        self.muon.zero_grad(set_to_none)

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
