"""Fixtures for the serving tests (builders: helpers.py). The test modules skip without the serve extra."""

import pytest

from convmixer.serve import load_served_model

from .helpers import tiny_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny.safetensors")


@pytest.fixture(scope="session")
def served(checkpoint):
    """The tiny checkpoint on the torch backend (built-in kernels: nothing to compile)."""
    return load_served_model(checkpoint, kernel="native", max_batch=8)
