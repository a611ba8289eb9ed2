from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(autouse=True)
def _shared_cache(tmp_path_factory, monkeypatch):
    """One cache directory for the session, so the memory subprocesses find the kernels already built."""
    root = tmp_path_factory.getbasetemp() / "bench-shared-cache"
    root.mkdir(exist_ok=True)
    monkeypatch.setenv("CONVMIXER_CACHE", str(root))


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch):
    """benchmarks/ first on sys.path, as ``python benchmarks/<script>.py`` has it, so a script loaded from its file
    finds its sibling modules (recipe_steps, reference)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
