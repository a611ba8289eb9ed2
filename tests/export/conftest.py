"""Fixtures for the export tests: real Fashion-MNIST images (builders: helpers.py). The fast path's fixtures (one
kernel cache for the session, ``require_kernels``) are shared with tests/fast."""

import pytest
import torch

from ..fast.conftest import _shared_cache, require_kernels, session_cache  # noqa: F401  (fixtures, used by name)
from .helpers import fmnist_images


@pytest.fixture
def fmnist_batch() -> torch.Tensor:
    """64 real Fashion-MNIST test images, uint8 (64, 1, 28, 28); skips where the dataset is not installed."""
    return fmnist_images()
