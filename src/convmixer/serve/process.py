"""``convmixer serve`` as a child process on a free loopback port: what the tests and benchmarks/bench_serve.py load.

    with ServerProcess(["--checkpoint", "best.pt", "--backend", "onnxruntime"]) as server:
        run_load(server.url + "/predict", ...)
        server.rss_bytes()              # the server's resident memory
        assert server.terminate() == 0  # SIGTERM: drain, exit 0
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time


class ServerProcess:
    """``python -m convmixer serve <args> --host 127.0.0.1 --port 0``; :meth:`start` waits until /ready answers 200.

    The URL comes from the first line the command prints. stderr (uvicorn's log) goes to a temporary file, read by
    :meth:`log`.
    """

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, start_timeout_s: float = 300.0) -> None:
        self.args, self.env, self.start_timeout_s = list(args), env, start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self._log = tempfile.TemporaryFile(mode="w+")

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> None:
        import httpx

        command = [sys.executable, "-m", "convmixer", "serve", *self.args, "--host", "127.0.0.1", "--port", "0"]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=self.env if self.env is not None else os.environ.copy())
        banner = self._first_line(self.start_timeout_s)
        if " at http://" not in banner:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"convmixer serve did not start: {banner.strip() or self.log().strip()[-2000:]}")
        self.url = banner.split(" at ")[1].split()[0]
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                if httpx.get(f"{self.url}/ready", timeout=10).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"convmixer serve never became ready: {self.log().strip()[-2000:]}")
            time.sleep(0.05)

    def _first_line(self, timeout_s: float) -> str:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        return line[0] if line else ""

    def rss_bytes(self) -> int:
        """The server's resident set size (Linux: /proc/<pid>/status)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc/<pid>/status")

    def terminate(self, timeout_s: float = 120.0) -> int:
        """Send SIGTERM and return the exit code once the server has drained and exited."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def log(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()
