"""A bounded load generator for ``convmixer serve``: loopback only, a fixed number of requests, a time limit.

    result = run_load("http://127.0.0.1:8000/predict", [(png_bytes, "image/png")], requests=1000, concurrency=8,
                      time_limit_s=60)
    result.throughput, result.p50_ms, result.p99_ms, result.failed

``concurrency`` clients, each with its own keep-alive HTTP/1.1 connection, send POST requests back to back, cycling
through ``bodies``, until ``requests`` have been sent or ``time_limit_s`` has passed (requests in flight then
finish, each within ``timeout_s``). A request fails when its status is not 200 or it raises (refused connection,
timeout, ...); failures are counted by status code or exception type, and the client reconnects. The target must
resolve to a loopback address: this is a test tool, not a way to load someone else's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

MAX_REQUESTS = 1_000_000
MAX_CONCURRENCY = 1024
MAX_TIME_S = 3600.0


@dataclass
class LoadResult:
    """What one run of :func:`run_load` measured."""

    requests: int  # sent
    ok: int
    failures: Counter = field(default_factory=Counter)  # "status 413" / "ConnectError" -> count
    seconds: float = 0.0  # from the first request sent to the last answer
    latencies_ms: list[float] = field(default_factory=list)  # of the successful requests, in completion order
    concurrency: int = 1
    stopped_by: str = "count"  # "count" | "time"

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile (0..100) of the successful requests' latencies, nearest rank."""
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "ok": self.ok, "failed": self.failed, "failures": dict(self.failures),
                "concurrency": self.concurrency, "seconds": round(self.seconds, 3),
                "throughput_rps": round(self.throughput, 2), "p50_ms": round(self.p50_ms, 3),
                "p99_ms": round(self.p99_ms, 3), "stopped_by": self.stopped_by}


def check_loopback(url: str) -> str:
    """``url`` if its host resolves only to loopback addresses (127.0.0.0/8, ::1); ConfigError otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"the load generator needs an http:// URL with a host, got {url!r}")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise ConfigError(f"cannot resolve {parts.hostname!r}: {e.strerror}") from None
    addresses = {info[4][0] for info in infos}
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise ConfigError(f"the load generator only targets loopback addresses; {parts.hostname!r} resolves to "
                          f"{', '.join(sorted(addresses))}")
    return url


def _check_bounds(requests: int, concurrency: int, time_limit_s: float) -> None:
    if not 1 <= requests <= MAX_REQUESTS:
        raise ConfigError(f"requests must be 1..{MAX_REQUESTS}, got {requests}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"concurrency must be 1..{MAX_CONCURRENCY}, got {concurrency}")
    if not 0 < time_limit_s <= MAX_TIME_S:
        raise ConfigError(f"the time limit must be in (0, {MAX_TIME_S:g}] seconds, got {time_limit_s}")


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared requests and reads each answer's status and body
    (Content-Length or chunked). That is all a load generator needs, at a fraction of the CPU a general client
    (httpx) spends per request, which matters when the client shares a small machine with the server it measures.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _line(self) -> bytes:
        line = await self.reader.readline()
        if not line.endswith(b"\n"):
            raise ConnectionError("the server closed the connection")
        return line

    async def send(self, request: bytes) -> int:
        """Send ``request`` (head and body) and return the answer's status once its body is read."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        await self.writer.drain()
        version, status, *_ = (await self._line()).split(None, 2) + [b""]
        if not version.startswith(b"HTTP/") or not status.isdigit():
            raise ConnectionError("not an HTTP answer")
        length, chunked, close = 0, False, False
        while (line := await self._line()) not in (b"\r\n", b"\n"):
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = value == b"close"
        if chunked:
            while size := int((await self._line()).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)  # the chunk and its CRLF
            while await self._line() not in (b"\r\n", b"\n"):  # trailers
                pass
        else:
            await self.reader.readexactly(length)
        if close:
            await self.close()
        return int(status)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def _requests(url: str, bodies: Sequence[tuple[bytes, str]], headers: dict[str, str] | None) -> list[bytes]:
    """The full HTTP/1.1 POST request (head and body) for each body, prepared once."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return [f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n".encode("latin-1") + body for body, content_type in bodies]


async def run_load_async(url: str, bodies: Sequence[tuple[bytes, str]], *, requests: int, concurrency: int,
                         time_limit_s: float, headers: dict[str, str] | None = None,
                         timeout_s: float = 30.0) -> LoadResult:
    """:func:`run_load` on the running event loop."""
    check_loopback(url)
    _check_bounds(requests, concurrency, time_limit_s)
    if not bodies:
        raise ConfigError("give at least one request body")
    prepared = _requests(url, bodies, headers)
    parts = urlsplit(url)
    result = LoadResult(requests=0, ok=0, concurrency=concurrency)
    start = time.perf_counter()
    deadline = start + time_limit_s

    async def client() -> None:
        connection = _Connection(parts.hostname, parts.port or 80)
        try:
            while result.requests < requests:
                if time.perf_counter() >= deadline:
                    result.stopped_by = "time"
                    return
                request = prepared[result.requests % len(prepared)]
                result.requests += 1  # one event loop: no other client runs between the check and this line
                sent = time.perf_counter()
                try:
                    status = await asyncio.wait_for(connection.send(request), timeout_s)
                except (OSError, EOFError, ValueError, asyncio.TimeoutError) as e:  # refused, reset, cut short
                    result.failures[type(e).__name__] += 1
                    await connection.close()
                    continue
                if status == 200:
                    result.ok += 1
                    result.latencies_ms.append((time.perf_counter() - sent) * 1000)
                else:
                    result.failures[f"status {status}"] += 1
        finally:
            await connection.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


def run_load(url: str, bodies: Sequence[tuple[bytes, str]], *, requests: int, concurrency: int,
             time_limit_s: float, headers: dict[str, str] | None = None, timeout_s: float = 30.0) -> LoadResult:
    """POST ``bodies`` (``(bytes, content type)``, cycled) to ``url`` from ``concurrency`` clients until
    ``requests`` are sent or ``time_limit_s`` passes; see the module docstring."""
    return asyncio.run(run_load_async(url, bodies, requests=requests, concurrency=concurrency,
                                      time_limit_s=time_limit_s, headers=headers, timeout_s=timeout_s))
