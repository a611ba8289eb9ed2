"""Builders shared by the serving tests: a tiny checkpoint, encoded images, a real server in a thread."""

import contextlib
import io
import socket
import struct
import threading
import time
import warnings
import zlib

import torch

from convmixer import create_model, save_checkpoint

from ..export.helpers import FMNIST_MEAN, FMNIST_STD, randomize

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def tiny_checkpoint(path, seed: int = 0):
    """A convmixer_fmnist of width 16 and depth 1 (random weights, non-trivial BatchNorm statistics) saved with
    save_checkpoint, recording the classes, mean/std and image size as a training run does."""
    torch.manual_seed(seed)
    model = randomize(create_model("convmixer_fmnist", dim=16, depth=1), seed, head_scale=4.0)
    save_checkpoint(model, path, extra={"classes": CLASSES, "mean": list(FMNIST_MEAN), "std": list(FMNIST_STD),
                                        "image_size": 28})
    return path


def encode(size=(40, 30), mode: str = "L", fmt: str = "PNG", seed: int = 0) -> bytes:
    """A random image of ``size`` (width, height) encoded as ``fmt``."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    channels = {"L": 1, "RGB": 3}[mode]
    pixels = torch.randint(0, 256, (size[1], size[0], channels), generator=g, dtype=torch.uint8).squeeze(-1)
    buf = io.BytesIO()
    Image.fromarray(pixels.numpy(), mode).save(buf, fmt)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A few dozen bytes of PNG whose header declares ``width`` x ``height`` grayscale pixels (a decompression
    bomb's header: decoding it would need width * height bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def test_client(app):
    """FastAPI's TestClient (its lifespan runs inside ``with``); quiet about starlette preferring httpx2."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2")
        from fastapi.testclient import TestClient
    return TestClient(app)


test_client.__test__ = False  # a helper, not a test


@contextlib.contextmanager
def running_server(app, timeout_s: float = 30.0):
    """A real uvicorn server for ``app`` on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()


def require_serve_extra() -> None:
    """Skip the calling test module unless the serve extra is installed."""
    import pytest

    for module in ("fastapi", "uvicorn", "httpx", "python_multipart"):
        pytest.importorskip(module)
