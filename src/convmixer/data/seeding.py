"""Seeds derived from names and numbers, so every random choice of the data pipeline is a pure function of
(seed, what, epoch, index) and no generator state has to be carried or checkpointed."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (ints and strings), stable across processes, platforms and Python runs."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def generator(*parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))
