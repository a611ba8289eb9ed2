"""``convmixer serve``: one-line errors before anything starts, and the real server as a subprocess: concurrent
requests in flight when SIGTERM arrives are all answered, then the command exits 0."""

import socket
import sys
import threading
import time

import pytest

from convmixer.cli import main
from convmixer.serve import ServerProcess

from ..serve.helpers import encode, require_serve_extra, tiny_checkpoint

require_serve_extra()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny.safetensors")


def serve(capsys, *argv: str) -> tuple[int, str]:
    code = main(["serve", *argv])
    return code, capsys.readouterr().err


def test_missing_extra_is_a_one_line_install_hint(monkeypatch, capsys, checkpoint):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    code, err = serve(capsys, "--checkpoint", str(checkpoint))
    assert code == 2 and err.count("\n") == 1
    assert "serve extra" in err and "uvicorn" in err and "pip install" in err and ".[serve]" in err


@pytest.mark.parametrize("argv, words", [
    (["--max-batch", "0"], "--max-batch"),
    (["--top-k", "0"], "--top-k"),
    (["--max-body-mb", "0"], "--max-body-mb"),
    (["--port", "70000"], "--port"),
    (["--max-pixels", "0"], "--max-pixels"),
    (["--threads", "0"], "--threads"),
    (["--host", "no-such-host.invalid"], "--host"),
])
def test_bad_settings_are_one_line_errors(capsys, checkpoint, argv, words):
    code, err = serve(capsys, "--checkpoint", str(checkpoint), *argv)
    assert code == 2 and err.count("\n") == 1 and words in err


def test_missing_checkpoint_and_taken_port_are_one_line_errors(capsys, checkpoint, tmp_path):
    code, err = serve(capsys, "--checkpoint", str(tmp_path / "nope.pt"), "--port", "0")
    assert code == 2 and err.count("\n") == 1 and "nope.pt" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = serve(capsys, "--checkpoint", str(checkpoint), "--port", str(port), "--kernel", "native")
    assert code == 2 and err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err


def test_sigterm_drains_in_flight_requests_and_exits_0(checkpoint):
    import httpx

    in_flight = 8
    # a batch waits 3 s for more images, so the requests are still queued when SIGTERM arrives
    with ServerProcess(["--checkpoint", str(checkpoint), "--kernel", "native", "--max-batch", "64",
                        "--max-wait-ms", "3000"]) as server:
        results: list[tuple[int, dict]] = []

        def request(seed: int) -> None:
            r = httpx.post(f"{server.url}/predict", content=encode(seed=seed), headers={"content-type": "image/png"},
                           timeout=60)
            results.append((r.status_code, r.json()))

        clients = [threading.Thread(target=request, args=(i,)) for i in range(in_flight)]
        for c in clients:
            c.start()
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/stats").json()["pending"] < in_flight:  # all of them queued in the batcher
            assert time.monotonic() < deadline, "the requests never reached the batcher"
            time.sleep(0.02)
        assert server.terminate() == 0
        for c in clients:
            c.join(60)
        log = server.log()
    assert "Traceback" not in log and "Shutting down" in log
    assert len(results) == in_flight and all(status == 200 for status, _ in results), results
    assert all(len(body["predictions"][0]["top"]) == 5 for _, body in results)
