"""``convmixer serve``: a model behind HTTP, with dynamic batching (docs/serving.md).

    from convmixer.serve import create_app, load_served_model
    model = load_served_model("runs/fmnist/best.pt", backend="torch")   # or backend="onnxruntime"
    app = create_app(model, max_batch=32, max_wait_ms=5)                  # a FastAPI app; run it with uvicorn

- ``model.py``: the checkpoint loaded for a backend (the library's inference path) and the preprocessing of an upload;
- ``batcher.py``: the dynamic batcher (one asyncio queue, one worker, the model in its own thread);
- ``app.py``: the endpoints, limits, bearer token and one-line JSON errors;
- ``loadgen.py``: a bounded, loopback-only load generator, and ``process.py``: the command as a child process (the
  tests and benchmarks/bench_serve.py use both).

Importing this package imports neither FastAPI nor uvicorn nor httpx (the ``serve`` extra): they are loaded when
the app is built, the server runs or a load is generated; :func:`require_serve` says how to install them.
"""

from __future__ import annotations

from .app import TOKEN_ENV, ApiError, check_token, create_app, token_from_env
from .batcher import BatcherClosed, BatchStats, DynamicBatcher
from .loadgen import LoadResult, check_loopback, run_load, run_load_async
from .model import (BACKENDS, DEFAULT_MAX_PIXELS, IMAGE_FORMATS, BadImage, ImageTooLarge, ServedModel,
                    check_declared_size, load_served_model)
from .process import ServerProcess

SERVE_EXTRA_MODULES = ("fastapi", "uvicorn", "python_multipart", "httpx")
INSTALL_HINT = "pip install -e '.[serve]' (or pip install fastapi uvicorn python-multipart httpx)"


def require_serve(purpose: str = "convmixer serve") -> None:
    """Raise a ConfigError with the install command unless the ``serve`` extra's modules are importable."""
    from ..export.common import require

    for module in SERVE_EXTRA_MODULES:
        require(module, purpose, extra="serve", hint=INSTALL_HINT)


__all__ = [
    "TOKEN_ENV", "ApiError", "check_token", "create_app", "token_from_env", "BatcherClosed", "BatchStats",
    "DynamicBatcher", "LoadResult", "check_loopback", "run_load", "run_load_async", "BACKENDS",
    "DEFAULT_MAX_PIXELS", "IMAGE_FORMATS", "BadImage", "ImageTooLarge", "ServedModel", "check_declared_size",
    "load_served_model", "ServerProcess", "SERVE_EXTRA_MODULES", "INSTALL_HINT", "require_serve",
]
