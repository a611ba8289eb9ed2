"""The bounded load generator against a real server (uvicorn in a thread, loopback): no failures, batching seen."""

import pytest

from convmixer.errors import ConfigError
from convmixer.serve import check_loopback, create_app, run_load

from .helpers import encode, require_serve_extra, running_server

require_serve_extra()


def test_small_load_has_no_failures_and_batches_requests(served):
    import httpx

    app = create_app(served, max_batch=8, max_wait_ms=20)
    bodies = [(encode(seed=i), "image/png") for i in range(4)]
    with running_server(app) as url:
        result = run_load(f"{url}/predict", bodies, requests=50, concurrency=8, time_limit_s=120)
        stats = httpx.get(f"{url}/stats").json()
    assert result.requests == 50 and result.ok == 50 and result.failed == 0, result.as_dict()
    assert result.stopped_by == "count" and len(result.latencies_ms) == 50
    assert result.p50_ms <= result.p99_ms and result.throughput > 0
    assert stats["images"] == 50 and stats["largest_batch"] > 1, stats  # concurrent requests shared batches
    assert stats["largest_batch"] <= 8 and stats["responses"] == {"200": 50}


def test_failures_are_counted_and_the_time_limit_bounds_a_run(served):
    app = create_app(served, max_batch=4, max_wait_ms=1)
    with running_server(app) as url:
        bad = run_load(f"{url}/predict", [(b"junk", "image/png"), (encode(), "image/png")], requests=6,
                       concurrency=2, time_limit_s=60)
        timed = run_load(f"{url}/predict", [(encode(), "image/png")], requests=1_000_000, concurrency=2,
                         time_limit_s=0.5)
    assert bad.requests == 6 and bad.ok == 3 and bad.failures == {"status 400": 3}
    assert timed.stopped_by == "time" and 0 < timed.requests < 1_000_000 and timed.failed == 0


def test_only_loopback_targets_and_bounded_runs():
    assert check_loopback("http://127.0.0.1:8000/predict")
    assert check_loopback("http://[::1]:8000/predict")
    assert check_loopback("http://localhost:8000/predict")
    for url in ("http://10.1.2.3:8000/predict", "http://192.168.0.1/", "ftp://127.0.0.1/", "127.0.0.1:8000"):
        with pytest.raises(ConfigError):
            check_loopback(url)
    body = [(b"x", "image/png")]
    for kw in ({"requests": 0}, {"concurrency": 0}, {"time_limit_s": 0}, {"requests": 10**7}):
        settings = {"requests": 1, "concurrency": 1, "time_limit_s": 1.0, **kw}
        with pytest.raises(ConfigError):
            run_load("http://127.0.0.1:9/predict", body, **settings)


def test_the_client_reads_chunked_answers_and_reconnects_after_connection_close():
    """A raw loopback server answering chunked, closing the connection after every second answer, and giving a 503
    to one request in three: every answer is read whole and counted by status, and the client reconnects."""
    import asyncio

    from convmixer.serve import run_load_async

    answered = []

    async def handle(reader, writer):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            answered.append(length)
            status = b"503 Service Unavailable" if len(answered) % 3 == 0 else b"200 OK"
            close = len(answered) % 2 == 0
            writer.write(b"HTTP/1.1 " + status + b"\r\nTransfer-Encoding: chunked\r\n" +
                         (b"Connection: close\r\n" if close else b"") + b"\r\n5\r\nhello\r\n0\r\n\r\n")
            await writer.drain()
            if close:
                writer.close()
                return

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await run_load_async(f"http://127.0.0.1:{port}/predict", [(b"abc", "image/png")], requests=12,
                                        concurrency=2, time_limit_s=60)

    result = asyncio.run(main())
    assert result.requests == 12 and result.ok == 8 and result.failures == {"status 503": 4}
    assert answered == [3] * 12
