"""``convmixer serve``: a checkpoint behind an HTTP endpoint with dynamic batching (docs/serving.md).

    convmixer serve --checkpoint runs/fmnist/best.pt                      # http://127.0.0.1:8000
    curl -s --data-binary @shirt.png -H 'Content-Type: image/png' http://127.0.0.1:8000/predict
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a checkpoint over HTTP (POST /predict, dynamic batching)",
                       description="An HTTP inference server (FastAPI + uvicorn, the serve extra). POST an image "
                                   "(raw bytes, multipart files or JSON base64) to /predict for its top-k classes; "
                                   "GET /health, /ready, /metadata, /stats. Requests are batched across clients "
                                   "up to --max-batch images within --max-wait-ms. Set CONVMIXER_SERVE_TOKEN to "
                                   "require 'Authorization: Bearer <token>'. SIGTERM drains and exits 0.")
    p.add_argument("--checkpoint", required=True, help="training checkpoint, weights file, released paper file, "
                                                       "or (with --backend onnxruntime) an ONNX export")
    p.add_argument("--model", help="registry name, for files that do not record it (the released weights)")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="torch: the folded model on the fast path (default); onnxruntime: its ONNX export")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--max-batch", type=int, default=32, help="largest batch the model runs (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a batch waits for more images after its first (default 5)")
    p.add_argument("--top-k", type=int, default=5, help="classes returned per image unless ?top_k= says (default 5)")
    p.add_argument("--max-body-mb", type=float, default=10.0, help="largest request body in MiB (default 10)")
    p.add_argument("--max-pixels", type=int, help="largest image, in pixels, decoded (default 4096*4096)")
    p.add_argument("--kernel", choices=("auto", "native", "dwconv", "fused"), default="auto",
                   help="torch backend: the fast path's depthwise kernel (default: its own choice)")
    p.add_argument("--threads", type=int, help="the model's intra-op threads (default: one per core); fewer on a "
                                                 "machine shared with other busy processes")
    p.add_argument("--access-log", action="store_true", help="log every request (off by default)")
    p.set_defaults(func=run)


def _listen(host: str, port: int):
    """A bound socket for ``host:port``, so a taken port is a one-line error before anything starts."""
    import socket

    from ..errors import ConfigError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise ConfigError(f"cannot resolve --host {host!r}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..serve import require_serve

    require_serve()
    import uvicorn

    from ..serve import DEFAULT_MAX_PIXELS, create_app, load_served_model, token_from_env

    if args.max_batch < 1 or args.top_k < 1 or args.max_wait_ms < 0 or not args.max_body_mb > 0:
        raise ConfigError("--max-batch and --top-k must be >= 1, --max-wait-ms >= 0 and --max-body-mb > 0")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {args.port}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    if max_pixels < 1:
        raise ConfigError(f"--max-pixels must be >= 1, got {max_pixels}")
    token = token_from_env()
    sock = _listen(args.host, args.port)
    try:
        model = load_served_model(args.checkpoint, backend=args.backend, model_name=args.model,
                                  max_batch=args.max_batch, kernel=args.kernel, max_pixels=max_pixels,
                                  threads=args.threads)
        app = create_app(model, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, top_k=args.top_k,
                         max_body_bytes=int(args.max_body_mb * 2**20), token=token)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    if not _is_loopback(args.host) and token is None:
        print(f"convmixer serve: warning: listening on {args.host} without a token; anyone who can reach it can "
              "use it (set CONVMIXER_SERVE_TOKEN)", file=sys.stderr)
    print(f"convmixer serve: {model.name} on {model.backend} at {url} (POST /predict; GET /health /ready /metadata "
          f"/stats); batches of up to {args.max_batch} within {args.max_wait_ms:g} ms; "
          f"bearer token {'required' if token else 'off'}", flush=True)

    config = uvicorn.Config(app, log_level="info", access_log=args.access_log, lifespan="on",
                            timeout_graceful_shutdown=None)
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again so that the default action ends the process.
    # A drained shutdown is a clean one: that second signal does nothing here, and the command exits 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    return 0 if server.started else 1
