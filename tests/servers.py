"""A real `durable serve` in a child process, for the HTTP and browser tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
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
def durable_serve(db: str, spec: str = "examples.approval:app") -> Iterator[str]:
    """Run `python -m durable serve SPEC` from the repository root on a free port; yield its base URL.

    On leaving, stop it with SIGINT (Ctrl-C) and check that it shut down cleanly.
    """
    port = free_port()
    env = {**os.environ, "DURABLE_DB": db, "PYTHONUNBUFFERED": "1"}
    env.pop("DURABLE_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "durable", "serve", spec, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"durable serve exited with {proc.returncode}:\n{proc.stderr.read()}")  # type: ignore[union-attr]
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
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"durable serve did not stop on SIGINT:\n{err}") from None
    assert proc.returncode == 0, f"durable serve exited with {proc.returncode}:\n{err}"
    assert "Traceback" not in err, err
