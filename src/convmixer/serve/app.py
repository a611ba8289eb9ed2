"""The HTTP API (FastAPI): POST /predict, GET /health, /ready, /metadata and /stats.

    app = create_app(load_served_model("runs/fmnist/best.pt"), max_batch=32, max_wait_ms=5)

A request to /predict carries one image or several:

- raw bytes with ``Content-Type: image/*`` (or ``application/octet-stream``): one image;
- ``multipart/form-data``: every file part is an image (a batch), in order;
- ``application/json``: ``{"image": "<base64>"}`` or ``{"images": ["<base64>", ...]}``, optionally ``"top_k"``.

``?top_k=N`` sets the number of classes returned per image (default: the server's). The answer is
``{"predictions": [{"image": name, "top": [{"class", "index", "probability"}, ...]}, ...]}``.

Every refusal is a 4xx with a one-line JSON body ``{"error": "..."}``: 400 for bytes that are not a readable image
(non-image data, truncated files, empty bodies, bad base64, malformed JSON), 401 for a missing or wrong bearer
token, 413 for a body over the size limit or an image declaring more pixels than the limit, 415 for another
content type. A model failure is a 500 with the same shape; the server goes on serving either way.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations (``Request``) at runtime.
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from .batcher import BatcherClosed, DynamicBatcher
from .model import BadImage, ServedModel

log = logging.getLogger("convmixer.serve")

TOKEN_ENV = "CONVMIXER_SERVE_TOKEN"  # when set, /predict, /metadata and /stats need "Authorization: Bearer <it>"
DEFAULT_MAX_BODY = 10 * 2**20
MAX_FILES = 256  # image parts in one multipart request
MAX_ERROR_CHARS = 300
RAW_TYPES = ("application/octet-stream",)  # besides image/*: raw bytes of one image


class ApiError(Exception):
    """A refused request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def error_response(status: int, message: str, headers: dict[str, str] | None = None):
    from fastapi.responses import JSONResponse

    text = " ".join(str(message).split())  # one line
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS - 3] + "..."
    return JSONResponse({"error": text}, status_code=status, headers=headers)


def token_from_env() -> str | None:
    """The bearer token from $CONVMIXER_SERVE_TOKEN (None when unset); a set but empty variable is an error."""
    from ..errors import ConfigError

    token = os.environ.get(TOKEN_ENV)
    if token is not None and not token.strip():
        raise ConfigError(f"{TOKEN_ENV} is set but empty; unset it or give it a token")
    return token.strip() if token is not None else None


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def check_token(authorization: str | None, token: str | None) -> None:
    """ApiError 401 unless ``authorization`` is ``Bearer <token>`` (no token configured: anything passes).

    The comparison is of SHA-256 digests with :func:`hmac.compare_digest`: constant time, whatever the lengths."""
    if token is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(_digest(given.strip()), _digest(token)):
        raise ApiError(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                       {"WWW-Authenticate": "Bearer"})


async def read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes (from Content-Length
    before reading, or while streaming a body sent without one)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"bad Content-Length {declared!r}")
        if int(declared) > limit:
            raise ApiError(413, f"the body is {int(declared)} bytes; the limit is {limit} (--max-body-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body exceeds the limit of {limit} bytes (--max-body-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


def _top_k(value: Any, default: int) -> int:
    """``top_k`` from the query string (text) or the JSON body (a number); ``default`` when not given."""
    if value is None:
        return default
    whole = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.isdigit())
    if not whole or int(value) < 1:
        raise ApiError(400, f"top_k must be an integer >= 1, got {value!r}")
    return int(value)


async def _multipart_images(request, body: bytes, limit: int) -> list[tuple[str, bytes]]:
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=MAX_FILES, max_fields=MAX_FILES,
                             max_part_size=limit)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise ApiError(400, f"malformed multipart body: {e.message}") from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        return [(f.filename or f"file {i + 1}", await f.read()) for i, f in enumerate(files)]
    finally:
        await form.close()


def _json_images(body: bytes) -> tuple[list[tuple[str, bytes]], Any]:
    """(images, top_k) of a JSON body ``{"image": b64}`` / ``{"images": [b64, ...]}``."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"malformed JSON: {e}") from None
    if not isinstance(doc, dict) or ("images" in doc) == ("image" in doc):
        raise ApiError(400, 'the JSON body must be {"image": "<base64>"} or {"images": ["<base64>", ...]}')
    encoded = doc["images"] if "images" in doc else [doc["image"]]
    if not isinstance(encoded, list) or not all(isinstance(e, str) for e in encoded):
        raise ApiError(400, '"images" must be a list of base64 strings')
    if len(encoded) > MAX_FILES:
        raise ApiError(400, f"{len(encoded)} images in one request; the limit is {MAX_FILES}")
    images = []
    for i, text in enumerate(encoded):
        name = f"images[{i}]" if "images" in doc else "image"
        try:
            images.append((name, base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError):
            raise ApiError(400, f"{name} is not valid base64") from None
    return images, doc.get("top_k")


def create_app(model: ServedModel, *, max_batch: int = 32, max_wait_ms: float = 5.0, top_k: int = 5,
               max_body_bytes: int = DEFAULT_MAX_BODY, token: str | None = None, decode_threads: int | None = None):
    """The FastAPI application serving ``model``; its lifespan starts and drains the batcher.

    ``token``: when given, /predict, /metadata and /stats need ``Authorization: Bearer <token>`` (see
    :func:`token_from_env`). ``decode_threads``: how many uploads are decoded at once (default: the CPU count).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    if top_k < 1 or max_body_bytes < 1:
        raise ValueError("top_k and max_body_bytes must be >= 1")
    batcher = DynamicBatcher(model.predict, max_batch=max_batch, max_wait_ms=max_wait_ms)
    threads: dict[str, ThreadPoolExecutor] = {}  # the decoders, while the app runs
    counts: Counter = Counter()  # responses by status

    @contextlib.asynccontextmanager
    async def lifespan(_app) -> AsyncIterator[None]:
        threads["decode"] = ThreadPoolExecutor(max_workers=decode_threads or os.cpu_count() or 1,
                                               thread_name_prefix="convmixer-decode")
        await batcher.start()
        log.info("serving %s on %s, batches of up to %d within %g ms", model.name, model.backend, max_batch,
                 max_wait_ms)
        try:
            yield
        finally:
            await batcher.stop()  # the server has stopped accepting; what was queued still runs
            threads.pop("decode").shutdown(wait=True)

    app = FastAPI(title="convmixer serve", summary=f"{model.name} on {model.backend}", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.model, app.state.batcher = model, batcher

    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        counts[exc.status] += 1
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(HTTPException)  # unknown paths (404), wrong methods (405)
    async def _http_error(_request, exc: HTTPException):
        counts[exc.status_code] += 1
        return error_response(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)  # a bug: 500, logged; the server goes on
    async def _internal_error(_request, exc: Exception):
        counts[500] += 1
        log.error("request failed: %s: %s", type(exc).__name__, exc)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")

    @app.get("/health")
    async def health() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        """Readiness: the model is loaded and the batcher takes requests (503 while starting or draining)."""
        if not batcher.started:
            return JSONResponse({"ready": False, "error": "not ready: starting or shutting down"}, status_code=503)
        return {"ready": True, "model": model.name, "backend": model.backend}

    @app.get("/metadata")
    async def metadata(request: Request) -> dict:
        check_token(request.headers.get("authorization"), token)
        return {**model.describe(), "server": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "top_k": top_k,
                                               "max_body_bytes": max_body_bytes,
                                               "auth": "bearer" if token else "none"}}

    @app.get("/stats")
    async def stats(request: Request) -> dict:
        check_token(request.headers.get("authorization"), token)
        return {**batcher.stats.as_dict(), "pending": batcher.pending,
                "responses": {str(k): v for k, v in sorted(counts.items())}}

    async def decode(images: list[tuple[str, bytes]]):
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(threads["decode"], model.preprocess, data, name) for name, data in images]
        decoded = await asyncio.gather(*jobs, return_exceptions=True)
        for result in decoded:  # the first bad image, in request order
            if isinstance(result, BadImage):
                raise ApiError(result.status, str(result))
            if isinstance(result, BaseException):
                raise result
        return decoded

    @app.post("/predict")
    async def predict(request: Request):
        check_token(request.headers.get("authorization"), token)
        if not batcher.started:
            raise ApiError(503, "not ready: starting or shutting down")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not (content_type.startswith("image/") or content_type in RAW_TYPES
                or content_type in ("multipart/form-data", "application/json")):
            raise ApiError(415, f"unsupported content type {content_type or '(none)'!r}; send image/* bytes, "
                                'multipart/form-data files, or JSON {"images": ["<base64>", ...]}')
        body = await read_body(request, max_body_bytes)
        k = request.query_params.get("top_k")
        if content_type == "multipart/form-data":
            images = await _multipart_images(request, body, max_body_bytes)
        elif content_type == "application/json":
            images, json_k = _json_images(body)
            k = json_k if json_k is not None else k
        elif body:
            images = [("upload", body)]
        else:
            raise ApiError(400, "empty body: send the image's bytes")
        k = _top_k(k, top_k)
        if not images:
            raise ApiError(400, "no image in the request")
        tensors = await decode(images)
        try:
            rows = await batcher.submit(tensors)
        except BatcherClosed as e:
            raise ApiError(503, str(e)) from None
        except Exception as e:  # the model failed on this batch; logged, and the next batch runs as usual
            log.exception("the model failed on a batch")
            raise ApiError(500, f"the model failed on this batch ({type(e).__name__}); see the server log") from None
        predictions = model.top_k(torch.stack(rows), k)
        counts[200] += 1
        return JSONResponse({"model": model.name,  # a JSONResponse as is: no encoding pass over plain data
                             "predictions": [{"image": name, **p} for (name, _), p in zip(images, predictions)]})

    return app
