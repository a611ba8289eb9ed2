import pytest

from convmixer.fast import build


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("shared-cache")


@pytest.fixture(autouse=True)
def _shared_cache(session_cache, monkeypatch):
    """One cache directory for the session (still not the user's), so compiled kernels are built once."""
    monkeypatch.setenv("CONVMIXER_CACHE", str(session_cache))


@pytest.fixture
def require_kernels():
    """Skip where this machine cannot build the C kernels (no compiler)."""
    if not (build.available(0) and build.available(3)):
        pytest.skip(f"no fast kernels here: {build.build_error(0) or build.build_error(3)}")
