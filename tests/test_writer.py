"""The single writer: group commit, direct commits when idle, order kept, a busy file never blocks the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import durable
from durable.writer import Writer
from helpers import make_app


def connector(path: Path):  # type: ignore[no-untyped-def]
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS log (n INTEGER)")
        return conn

    return connect


async def test_a_write_never_overtakes_one_queued_before_it(tmp_path: Path) -> None:
    order: list[tuple[str, str]] = []
    release = threading.Event()

    def slow(conn: sqlite3.Connection, n: int) -> None:  # several statements: always queued
        release.wait(10)
        conn.execute("INSERT INTO log VALUES (?)", (n,))
        order.append(("slow", threading.current_thread().name))

    def quick(conn: sqlite3.Connection, n: int) -> None:
        conn.execute("INSERT INTO log VALUES (?)", (n,))
        order.append(("quick", threading.current_thread().name))

    quick.autocommit = quick.direct = True  # type: ignore[attr-defined]
    writer = Writer(connector(tmp_path / "w.db"), inline=True)
    await writer.start()
    try:
        first = writer.submit(slow, 1)
        second = writer.submit(quick, 2)  # the writer is busy: this one must wait its turn
        release.set()
        await asyncio.gather(first, second)
        # idle again: a lone one-statement write is committed directly from the loop's thread
        await writer.submit(quick, 3)
    finally:
        await writer.close()
    assert [kind for kind, _ in order] == ["slow", "quick", "quick"]
    assert order[1][1] == "durable-writer" and order[2][1] == threading.current_thread().name
    conn = sqlite3.connect(tmp_path / "w.db")
    assert [r[0] for r in conn.execute("SELECT n FROM log ORDER BY rowid")] == [1, 2, 3]
    conn.close()


async def test_a_busy_file_makes_steps_wait_without_blocking_the_event_loop(db: str) -> None:
    app = make_app(db)
    locked = asyncio.Event()

    async def noop(i: int) -> int:
        return i

    async def after_lock() -> int:
        await locked.wait()
        return 10

    @app.workflow
    async def wf(ctx: durable.Context) -> int:
        return await ctx.step(noop, 1) + await ctx.step(after_lock) + await ctx.step(noop, 2)

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async with app:
        handle = await app.start(wf, run_id="r")
        while len((await app.get_run("r")).steps) < 1:
            await asyncio.sleep(0.01)
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        ticking = asyncio.create_task(ticker())
        locked.set()  # the step returns; its record cannot be committed yet
        await asyncio.sleep(0.3)
        assert await handle.status() == "running"
        assert ticks >= 10  # the event loop kept running while the writer waited for the lock
        other.execute("COMMIT")
        assert await handle.result(timeout=10) == 13
        ticking.cancel()
        other.close()
