"""Faults of the store never cost a run: locks held too long, a full disk, lost connections, hostile files.

Each test injects a real fault (another process holding a lock, a tmpfs that
fills up, server connections terminated, a read-only mount, damaged pages),
then checks that no run was failed by it, that the workflow's own code never
saw it, that no completed step ran again, and that the run moved on once the
store worked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import durable
from durable.errors import StoreUnavailable
from helpers import eventually, make_app, tmpfs

LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


@contextlib.asynccontextmanager
async def locked_by_another_program(path: str) -> AsyncIterator[None]:
    """The SQLite file held in an exclusive lock by another process for as long as the block runs."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert await asyncio.to_thread(holder.stdout.readline) == "locked\n"  # type: ignore[union-attr]
        yield
    finally:
        holder.communicate("\n", timeout=10)  # the other program lets go


class Faulty:
    """A workflow of six steps; step 2 waits at a gate, so a fault can be put in place while it runs."""

    def __init__(self, app: durable.App) -> None:
        self.app = app
        self.executed: list[int] = []
        self.caught: list[BaseException] = []
        self.gate = asyncio.Event()
        self.at_gate = asyncio.Event()
        faulty = self

        async def work(i: int) -> int:
            faulty.executed.append(i)
            if i == 2 and not faulty.gate.is_set():
                faulty.at_gate.set()
                await faulty.gate.wait()
            return i

        @app.workflow
        async def six(ctx: durable.Context) -> list[int]:
            out = []
            for i in range(6):
                try:
                    out.append(await ctx.step(work, i))
                except Exception as exc:  # a storage fault must never get here
                    faulty.caught.append(exc)
                    raise
            return out

    async def start(self) -> durable.RunHandle:
        """Start run 'r' and return once it waits at the gate in step 2: the moment to put a fault in place."""
        handle = await self.app.start("six", run_id="r")
        await self.at_gate.wait()
        return handle

    def ran_once_but_the_one_in_flight(self) -> bool:
        return all(self.executed.count(i) == 1 for i in range(6) if i != 2) and self.executed.count(2) in (1, 2)


async def test_a_file_locked_past_the_busy_timeout_stops_the_run_and_it_resumes(
    db_file: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("durable.store.sqlite.BUSY_TIMEOUT_MS", 300)
    caplog.set_level(logging.INFO, logger="durable")
    app = make_app(db_file)
    faulty = Faulty(app)
    async with app:
        handle = await faulty.start()
        async with locked_by_another_program(db_file):
            faulty.gate.set()  # step 2 finishes; its record cannot be written while the lock is held
            await eventually(lambda: _logged(caplog, "stopped: the store failed"), what="the execution to stop")
            assert (await app.status("r")) == "running"  # neither failed nor done: stranded until the store works
        assert await handle.result(timeout=30) == [0, 1, 2, 3, 4, 5]
    assert faulty.caught == []
    assert faulty.ran_once_but_the_one_in_flight()
    assert "another program has held the file locked for over 0.3 s" in caplog.text


async def test_a_release_that_fails_as_its_execution_ends_is_retried_whenever_the_worker_passes(
    store: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A store fault stops the run and its release fails too. The worker, kicked by the
    # failure, retries the release in a pass that may come before the ended execution is
    # unregistered; the run must stay marked for release, for no claim takes a live owner's run.
    caplog.set_level(logging.INFO, logger="durable")
    app = make_app(store)
    faulty = Faulty(app)
    async with app:
        handle = await faulty.start()
        engine, journal = app.engine, app.store
        fault = StoreUnavailable(journal.target, "an injected fault")
        append, release, kick = journal.append, journal.release, engine.kick

        def failing_append(fence: Any, record: Any) -> asyncio.Future[bool]:
            failed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            failed.set_exception(fault)
            return failed

        async def release_failing_once(*args: Any, **kwargs: Any) -> int:
            monkeypatch.setattr(journal, "release", release)  # the store works again after this fault
            monkeypatch.setattr(journal, "append", append)
            raise fault

        def kick_into_a_pass() -> None:
            # The pass's first step runs before the ended execution's done callback.
            asyncio.ensure_future(engine.release_stranded())
            kick()

        monkeypatch.setattr(journal, "append", failing_append)
        monkeypatch.setattr(journal, "release", release_failing_once)
        monkeypatch.setattr(engine, "kick", kick_into_a_pass)
        faulty.gate.set()  # step 2 returns; neither its record nor the release can be written
        assert await handle.result(timeout=30) == [0, 1, 2, 3, 4, 5]
    assert "could not be released (an injected fault)" in caplog.text
    assert faulty.caught == []
    assert faulty.ran_once_but_the_one_in_flight()


async def test_a_table_locked_past_the_command_timeout_stops_the_run_and_it_resumes(
    store: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if not store.startswith("postgresql://"):
        pytest.skip("the SQLite version of this fault is the file lock above")
    import asyncpg

    monkeypatch.setattr("durable.store.postgres.COMMAND_TIMEOUT_SECONDS", 0.5)
    caplog.set_level(logging.INFO, logger="durable")
    app = make_app(store)
    faulty = Faulty(app)
    async with app:
        handle = await faulty.start()
        other = await asyncpg.connect(store)
        try:
            transaction = other.transaction()
            await transaction.start()
            await other.execute("LOCK TABLE durable.records IN ACCESS EXCLUSIVE MODE")
            faulty.gate.set()
            await eventually(lambda: _logged(caplog, "stopped: the store failed"), what="the execution to stop")
            await transaction.rollback()
        finally:
            await other.close()
        assert await handle.result(timeout=30) == [0, 1, 2, 3, 4, 5]
    assert faulty.caught == []
    assert faulty.ran_once_but_the_one_in_flight()
    assert "the server did not answer within 0.5 s" in caplog.text


async def test_lost_postgresql_connections_never_fail_a_run(store: str, caplog: pytest.LogCaptureFixture) -> None:
    if not store.startswith("postgresql://"):
        pytest.skip("PostgreSQL connections only")
    import asyncpg

    caplog.set_level(logging.INFO, logger="durable")
    app = make_app(store)
    faulty = Faulty(app)
    async with app:
        handle = await faulty.start()
        admin = await asyncpg.connect(store)
        try:  # every other session on the database: the App's writer, pool and listener
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed >= 2
        faulty.gate.set()
        assert await handle.result(timeout=30) == [0, 1, 2, 3, 4, 5]
    assert faulty.caught == []
    assert faulty.ran_once_but_the_one_in_flight()


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> asyncio.Future[bool]:
    fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    fut.set_result(text in caplog.text)
    return fut


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs of its own (root only)."""
    with tmpfs(tmp_path / "small", "4m") as mount:
        yield mount


async def test_a_full_disk_never_fails_a_run(small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="durable")
    journal = small_disk / "journal.db"
    app = make_app(str(journal))
    executed: list[int] = []
    caught: list[BaseException] = []

    def bulky(i: int) -> str:
        executed.append(i)
        return f"{i}:" + "x" * 100_000

    @app.workflow
    async def fill(ctx: durable.Context) -> int:
        total = 0
        for i in range(30):
            try:
                total += len(await ctx.step(bulky, i))
            except Exception as exc:  # a storage fault must never get here
                caught.append(exc)
                raise
        return total

    filler = small_disk / "filler"
    async with app:
        filler.write_bytes(b"\0" * (2_500_000))  # what is left: room for about a dozen steps
        handle = await app.start(fill, run_id="r")
        await eventually(lambda: _logged(caplog, "stopped: the store failed"), timeout=30, what="the disk to fill")
        assert (await app.status("r")) in ("running", "pending")  # never 'failed'
        filler.unlink()  # space again: the run moves on by itself
        assert await handle.result(timeout=60) == 30 * len("00:" + "x" * 100_000) - 10
    assert caught == []
    assert "the disk is full" in caplog.text
    repeated = [i for i in set(executed) if executed.count(i) > 1]
    assert len(repeated) <= 1 and sorted(set(executed)) == list(range(30))


async def test_closing_finishes_when_the_final_release_cannot_be_written(
    db_file: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("durable.store.sqlite.BUSY_TIMEOUT_MS", 300)
    app = make_app(db_file, lease_seconds=1.0)
    faulty = Faulty(app)
    await app.open()
    await faulty.start()
    async with locked_by_another_program(db_file):
        faulty.gate.set()
        await asyncio.wait_for(app.close(), 20)  # must not hang: its writes fail, it logs, it closes
    assert "could not release this process's runs" in caplog.text or "could not be released" in caplog.text
    # The run is not lost: the next App takes it over once the first one's lease has expired.
    again = make_app(db_file)
    Faulty(again).gate.set()
    async with again:
        assert await again.run("six", run_id="r") == [0, 1, 2, 3, 4, 5]


async def test_an_http_call_that_must_write_while_the_store_fails_gets_503_and_nothing_is_written(
    db_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx
    from asgi_lifespan import LifespanManager

    from durable.http import create_app

    monkeypatch.setattr("durable.store.sqlite.BUSY_TIMEOUT_MS", 300)
    app = make_app(db_file)

    @app.workflow
    async def hello(ctx: durable.Context) -> str:
        return "hello"

    async with LifespanManager(create_app(app)) as manager:
        transport = httpx.ASGITransport(app=manager.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            async with locked_by_another_program(db_file):
                refused = await client.post("/workflows/hello/runs", json={"run_id": "h"})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "StoreUnavailable"
            assert "locked" in refused.json()["detail"] and db_file in refused.json()["detail"]
            assert (await client.get("/runs/h")).status_code == 404  # nothing was written
            started = await client.post("/workflows/hello/runs", json={"run_id": "h"})
            assert started.status_code == 202, started.text
