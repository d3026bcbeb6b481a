"""Helpers shared by the tests: polling with a deadline, child processes, journal reads on either store."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import durable
from durable.store import is_url, make_store
from durable.store.base import RecordRow, RunRow

T = TypeVar("T")

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


async def unloaded(app: durable.App, run_id: str) -> None:
    """Wait until this process holds no execution of the run (it ends just after the park it committed)."""

    async def gone() -> bool:
        return app.engine.executing(run_id) is None

    await eventually(gone, what=f"the execution of {run_id} to end")


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


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on an event loop of its own, from sync or async code alike."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def pg_admin_url() -> str:
    return os.environ.get("DURABLE_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/postgres"


@functools.cache
def pg_unavailable() -> str | None:
    """Why the test PostgreSQL server cannot be used (None: it can)."""
    try:
        import asyncpg
    except ModuleNotFoundError:
        return "asyncpg is not installed (pip install -e '.[dev]')"

    async def probe() -> None:
        conn = await asyncpg.connect(pg_admin_url(), timeout=5)
        await conn.close()

    try:
        run_sync(probe())
    except Exception as exc:
        return f"{pg_admin_url()} does not answer ({type(exc).__name__}: {exc})"
    return None


async def _read(target: str, read: Callable[[Any], Awaitable[T]], empty: T) -> T:
    if not is_url(target) and not os.path.exists(target):
        return empty  # nothing written yet; opening would create the file
    store = make_store(target)
    await store.open()
    try:
        return await read(store)
    finally:
        await store.close()


def stored_records(target: str, run_id: str) -> list[RecordRow]:
    """A run's records as stored, read on a store of their own (either kind)."""
    return run_sync(_read(target, lambda s: s.load_records(run_id), []))


def stored_run(target: str, run_id: str) -> RunRow | None:
    return run_sync(_read(target, lambda s: s.load_run(run_id), None))


def records(db: str, run_id: str) -> list[tuple[Any, ...]]:
    """(seq, kind, name, status) of a run's records, as stored."""
    return [(r.seq, r.kind, r.name, r.status) for r in stored_records(db, run_id)]


def spawn(db: str, log: Path, run_id: str, workflow: str, *extra: str, **env: str) -> subprocess.Popen[str]:
    """Run a workflow of tests/procs.py in a child process (`env`: variables to add)."""
    return subprocess.Popen(
        [sys.executable, str(PROCS), db, str(log), run_id, workflow, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err}"
    return out


def log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `mount` for the block (root only; the test is skipped with the reason otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def journal_state(target: str) -> dict[str, Any]:
    """Everything a journal holds, to compare before and after a call that must write nothing.

    SQLite: the bytes of the file and of its -wal (an empty -wal, which a reader
    of a WAL journal may create, holds nothing). PostgreSQL: the row count and a
    digest of the rows of every table in the durable schema.
    """
    if not is_url(target):
        files = {suffix: Path(target + suffix) for suffix in ("", "-wal")}
        return {suffix: path.read_bytes() for suffix, path in files.items() if path.exists() and path.stat().st_size}

    async def digest() -> dict[str, Any]:
        import asyncpg

        conn = await asyncpg.connect(target, timeout=10)
        try:
            tables = [r[0] for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'durable' ORDER BY 1"
            )]  # fmt: skip
            return {
                table: tuple(await conn.fetchrow(
                    f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM durable.{table} AS t"
                ))  # fmt: skip
                for table in tables
            }
        finally:
            await conn.close()

    return run_sync(digest())
