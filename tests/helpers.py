"""Helpers shared by the tests: polling with a deadline, child processes, raw journal reads."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import durable

HERE = Path(__file__).parent
PROCS = HERE / "procs.py"


def make_app(db: str, **options: Any) -> durable.App:
    """An App tuned for tests: quick polls, and a short grace for runs left hanging at exit."""
    options.setdefault("poll_interval", 0.05)
    options.setdefault("shutdown_grace_seconds", 0.2)
    return durable.App(db, **options)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll an async check until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Blocking twin of `eventually`, for tests that drive subprocesses."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def records(db: str, run_id: str) -> list[tuple[Any, ...]]:
    """(seq, kind, name, status) of a run's records, read straight from the file."""
    if not os.path.exists(db):
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT seq, kind, name, status FROM records WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        conn.close()


def spawn(db: str, log: Path, run_id: str, workflow: str, *extra: str) -> subprocess.Popen[str]:
    """Run a workflow of tests/procs.py in a child process."""
    return subprocess.Popen(
        [sys.executable, str(PROCS), db, str(log), run_id, workflow, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err}"
    return out


def log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []
