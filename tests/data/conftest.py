"""Fixtures for the data tests: hidden system datasets, a local HTTP server (builders live in helpers.py)."""

import contextlib
import functools
import http.server
import threading

import pytest

from convmixer.data import datasets


@pytest.fixture
def no_system_data(monkeypatch):
    """Hide the system-wide datasets and $CONVMIXER_DATA so a test sees only what it creates."""
    monkeypatch.delenv("CONVMIXER_DATA", raising=False)
    monkeypatch.delenv("CONVMIXER_DATA_MIRROR", raising=False)
    for name, spec in list(datasets.IDX_DATASETS.items()):
        monkeypatch.setitem(datasets.IDX_DATASETS, name,
                            datasets.IdxSpec(**{**spec.__dict__, "system_dirs": ()}))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def http_server(tmp_path):
    """A static file server on 127.0.0.1 (random port) serving ``tmp_path / "www"``; yields (base_url, dir)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens (a port bound and released)."""
    import socket

    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
