"""A real `durable serve` in a child process, for the HTTP and browser tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx

from helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def durable_serve(db: str, spec: str = "examples.approval:app", cwd: Path = ROOT) -> Iterator[str]:
    """Run `python -m durable serve SPEC` in `cwd` (which holds SPEC's module) on a free port; yield its base URL.

    On leaving, stop it with SIGINT (Ctrl-C) and check that it shut down cleanly.
    """
    port = free_port()
    env = {**os.environ, "DURABLE_DB": db, "PYTHONUNBUFFERED": "1"}
    env.pop("DURABLE_TOKEN", None)
    # Its log goes to a file: a pipe nobody reads while the test runs could fill up and stall the server.
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "durable", "serve", spec, "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"

        def output() -> str:
            log.seek(0)
            return log.read()

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"durable serve exited with {proc.returncode}:\n{output()}")
            try:
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_until(up, timeout=30, what="durable serve to answer /health")
            yield base
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"durable serve did not stop on SIGINT:\n{output()}") from None
        assert proc.returncode == 0, f"durable serve exited with {proc.returncode}:\n{output()}"
        assert "Traceback" not in output(), output()
