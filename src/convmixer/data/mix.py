"""Mixup, CutMix and label-smoothed soft targets, with timm's semantics, batched on the device.

Each image i is mixed with its partner B-1-i (the batch flipped), as in timm. In mode "batch" one draw
decides for the whole batch: with probability ``mix_prob`` the batch is mixed, by CutMix with probability
``switch_prob`` (when both are on) else by mixup, with lambda ~ Beta(alpha, alpha):
- mixup: ``x = lam * x + (1 - lam) * x[partner]``;
- CutMix: a box of side ``int(H * sqrt(1 - lam))`` x ``int(W * sqrt(1 - lam))`` centred at a uniform pixel, clipped
  at the border, is pasted from the partner, and lambda becomes 1 - (clipped box area) / (H * W).
Targets: ``lam * onehot(y) + (1 - lam) * onehot(y[partner])`` where onehot puts ``1 - smoothing + smoothing / K``
on the class and ``smoothing / K`` elsewhere, so every row sums to 1. Mode "elem" draws all of that per image.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def sample_beta(alpha: float, shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """Beta(alpha, alpha) samples as G1 / (G1 + G2) of two Gamma(alpha) draws from ``generator``."""
    gammas = torch._standard_gamma(torch.full((2, *shape), float(alpha), device=device), generator=generator)
    total = gammas[0] + gammas[1]
    return torch.where(total > 0, gammas[0] / total.clamp_min(1e-30), torch.full_like(total, 0.5))


def smooth_one_hot(labels: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """(B,) int64 -> (B, K) float32: ``1 - smoothing + smoothing / K`` on the label, ``smoothing / K`` elsewhere."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32, device=labels.device)
    return out.scatter_(1, labels.view(-1, 1).to(torch.int64), 1.0 - smoothing + off)


def mix_targets(labels: Tensor, num_classes: int, lam: Tensor | float, smoothing: float = 0.0) -> Tensor:
    """Soft targets of a batch mixed with its flip: ``lam * y + (1 - lam) * y.flip(0)``; ``lam`` scalar or (B,)."""
    y = smooth_one_hot(labels, num_classes, smoothing)
    if not isinstance(lam, Tensor):
        return y if lam == 1.0 else y * lam + y.flip(0) * (1.0 - lam)
    lam = lam.view(-1, 1).to(y.dtype)
    return y * lam + y.flip(0) * (1.0 - lam)


def cutmix_box(lam: Tensor, height: int, width: int, u_y: Tensor, u_x: Tensor) -> tuple[Tensor, ...]:
    """Boxes (top, bottom, left, right), end-exclusive, for CutMix ratios ``lam`` (n,); ``u_y``, ``u_x`` uniform
    0..1 pick the centre pixel. Returns the boxes and lambda corrected for the clipped box area."""
    ratio = torch.sqrt((1.0 - lam).clamp_min(0))
    cut_h, cut_w = torch.floor(height * ratio), torch.floor(width * ratio)
    cy, cx = torch.floor(u_y * height).clamp(max=height - 1), torch.floor(u_x * width).clamp(max=width - 1)
    top = (cy - torch.div(cut_h, 2, rounding_mode="floor")).clamp(0, height)
    bottom = (cy + torch.div(cut_h, 2, rounding_mode="floor")).clamp(0, height)
    left = (cx - torch.div(cut_w, 2, rounding_mode="floor")).clamp(0, width)
    right = (cx + torch.div(cut_w, 2, rounding_mode="floor")).clamp(0, width)
    corrected = 1.0 - (bottom - top) * (right - left) / float(height * width)
    return top, bottom, left, right, corrected


def box_mask(top: Tensor, bottom: Tensor, left: Tensor, right: Tensor, height: int, width: int) -> Tensor:
    """(n,) box bounds -> (n, 1, H, W) bool mask of the pixels inside (end-exclusive)."""
    rows = torch.arange(height, device=top.device, dtype=top.dtype)[None, :]
    cols = torch.arange(width, device=top.device, dtype=top.dtype)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


class Mix:
    """Mixup/CutMix + soft targets: ``mix(x float (B, C, H, W), labels (B,), generator) -> (x, targets)``."""

    def __init__(
        self, *, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, mix_prob: float = 1.0,
        switch_prob: float = 0.5, mode: str = "batch", correct_lam: bool = True, label_smoothing: float = 0.0,
    ) -> None:
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.mix_prob = mix_prob
        self.switch_prob = switch_prob
        self.mode = mode
        self.correct_lam = correct_lam
        self.label_smoothing = label_smoothing

    @property
    def enabled(self) -> bool:
        return self.mix_prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def draw(self, n: int, generator: torch.Generator, device: torch.device) -> dict[str, Tensor]:
        """Random numbers for ``n`` decisions (1 per batch, or 1 per image): mix?, cutmix?, lambda, box centre."""
        u = torch.rand((4, n), generator=generator, device=device)
        mixup_lam = sample_beta(max(self.mixup_alpha, 1e-6), (n,), generator, device)
        cutmix_lam = sample_beta(max(self.cutmix_alpha, 1e-6), (n,), generator, device)
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cut = u[1] < self.switch_prob
        else:
            cut = torch.full((n,), self.cutmix_alpha > 0, device=device)
        lam = torch.where(cut, cutmix_lam, mixup_lam)
        lam = torch.where(u[0] < self.mix_prob, lam, torch.ones_like(lam))
        return {"lam": lam, "cut": cut, "u_y": u[2], "u_x": u[3]}

    def __call__(self, x: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if not self.enabled:
            return x, mix_targets(labels, self.num_classes, 1.0, self.label_smoothing)
        if self.mode == "batch":
            return self._mix_batch(x, labels, generator)
        return self._mix_elem(x, labels, generator)

    def _mix_batch(self, x: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        d = self.draw(1, generator, x.device)
        h, w = x.shape[-2:]
        top, bottom, left, right, corrected = cutmix_box(d["lam"], h, w, d["u_y"], d["u_x"])
        lam, cut, t, b, l, r, lam_c = torch.cat(
            [d["lam"], d["cut"].float(), top, bottom, left, right, corrected]).tolist()  # one sync per batch
        if lam == 1.0:
            return x, mix_targets(labels, self.num_classes, 1.0, self.label_smoothing)
        if cut:
            t, b, l, r = int(t), int(b), int(l), int(r)
            x[:, :, t:b, l:r] = x[:, :, t:b, l:r].flip(0)
            lam = lam_c if self.correct_lam else lam
        else:
            x = x.mul(lam).add_(x.flip(0), alpha=1.0 - lam)
        return x, mix_targets(labels, self.num_classes, lam, self.label_smoothing)

    def _mix_elem(self, x: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        d = self.draw(x.shape[0], generator, x.device)
        h, w = x.shape[-2:]
        lam, cut = d["lam"], d["cut"] & (d["lam"] < 1)
        top, bottom, left, right, corrected = cutmix_box(lam, h, w, d["u_y"], d["u_x"])
        partner = x.flip(0)
        inside = box_mask(top, bottom, left, right, h, w) & cut.view(-1, 1, 1, 1)
        lam_x = torch.where(cut, torch.ones_like(lam), lam).view(-1, 1, 1, 1)  # cutmix images are not blended
        x = torch.where(inside, partner, x * lam_x + partner * (1.0 - lam_x))
        if self.correct_lam:
            lam = torch.where(cut, corrected, lam)
        return x, mix_targets(labels, self.num_classes, lam, self.label_smoothing)
