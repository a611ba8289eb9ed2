import pytest


@pytest.fixture(autouse=True)
def _shared_cache(tmp_path_factory, monkeypatch):
    """One cache directory for the session, so the memory subprocesses find the kernels already built."""
    root = tmp_path_factory.getbasetemp() / "bench-shared-cache"
    root.mkdir(exist_ok=True)
    monkeypatch.setenv("CONVMIXER_CACHE", str(root))
