"""The single writer: group commit, direct commits when idle, order kept, a busy file never blocks the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import durable
from durable.store.base import Fence, RecordRow
from durable.store.sqlite import SQLiteStore
from durable.store.sqlite_writer import LOOK_EVERY_SECONDS, Writer
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
    writer = Writer(connector(tmp_path / "w.db_file"), inline=True)
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
    conn = sqlite3.connect(tmp_path / "w.db_file")
    assert [r[0] for r in conn.execute("SELECT n FROM log ORDER BY rowid")] == [1, 2, 3]
    conn.close()


async def test_a_busy_writer_still_notices_a_commit_made_elsewhere(tmp_path: Path) -> None:
    # While the writer holds its connection, changed_elsewhere() cannot look itself: the writer looks between batches.
    path = tmp_path / "w.db_file"
    committing, holding, release = threading.Event(), threading.Event(), threading.Event()

    def commit_elsewhere(conn: sqlite3.Connection) -> None:  # in the writer's thread, its connection held
        committing.set()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("INSERT INTO log VALUES (1)")
        other.close()
        time.sleep(2 * LOOK_EVERY_SECONDS)  # past the writer's pause between looks

    def hold(conn: sqlite3.Connection) -> None:
        holding.set()
        release.wait(10)

    commit_elsewhere.autocommit = hold.autocommit = True  # type: ignore[attr-defined]
    writer = Writer(connector(path))
    await writer.start()
    try:
        assert not writer.changed_elsewhere()
        first = writer.submit(commit_elsewhere)
        assert await asyncio.to_thread(committing.wait, 10)
        batches = asyncio.gather(first, writer.submit(hold))  # a batch of its own, after the first
        assert await asyncio.to_thread(holding.wait, 10)
        assert writer.changed_elsewhere()  # told while the writer is still busy
        assert not writer.changed_elsewhere()  # and told once
        release.set()
        await batches
    finally:
        release.set()
        await writer.close()


async def test_a_busy_file_makes_steps_wait_without_blocking_the_event_loop(db_file: str) -> None:
    app = make_app(db_file)
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
        other = sqlite3.connect(db_file, isolation_level=None)
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


async def test_a_batch_of_appends_answers_for_each_record(db_file: str) -> None:
    # Many runs' records commit in one statement; if one of them is refused (its
    # run was taken by another owner), each still gets its own answer.
    journal = SQLiteStore(db_file)
    await journal.open()
    try:
        for run_id in ("a", "b", "c"):
            assert await journal.create_run(run_id, "wf", b"[]", "me", 30.0, 0.0) is None
        await journal.claim("b", "running", "me", "someone else", 30.0, 0.0, owner_dead=True)
        release = threading.Event()

        def hold(conn: sqlite3.Connection) -> None:  # keeps the writer busy while the appends queue up
            release.wait(10)

        assert journal._writer is not None
        held = journal._writer.submit(hold)
        appends = [
            journal.append(Fence(run_id, "me", 1), RecordRow(seq, "step", "s", "completed", b"1", None, 1, 0.0, 0.0, None, None))
            for seq in range(2)
            for run_id in ("a", "b", "c")
        ]
        release.set()
        await held
        assert await asyncio.gather(*appends) == [True, False, True, True, False, True]
    finally:
        await journal.close()
    conn = sqlite3.connect(db_file)
    stored = conn.execute("SELECT run_id, seq FROM records ORDER BY run_id, seq").fetchall()
    conn.close()
    assert stored == [("a", 0), ("a", 1), ("c", 0), ("c", 1)]


async def test_a_duplicate_record_in_a_batch_fails_alone(db_file: str) -> None:
    journal = SQLiteStore(db_file)
    await journal.open()
    try:
        for run_id in ("a", "b"):
            await journal.create_run(run_id, "wf", b"[]", "me", 30.0, 0.0)
        release = threading.Event()

        def hold(conn: sqlite3.Connection) -> None:
            release.wait(10)

        assert journal._writer is not None
        held = journal._writer.submit(hold)
        record = ("step", "s", "completed", b"1", None, 1, 0.0, 0.0, None, None)
        appends = [journal.append(Fence(run_id, "me", 1), RecordRow(seq, *record)) for run_id, seq in (("a", 0), ("a", 0), ("b", 0))]
        release.set()
        await held
        outcomes = await asyncio.gather(*appends, return_exceptions=True)
    finally:
        await journal.close()
    assert outcomes[0] is True and outcomes[2] is True
    assert isinstance(outcomes[1], sqlite3.IntegrityError)


async def test_the_wal_is_checkpointed_and_started_over_while_a_run_writes(db_file: str) -> None:
    # The writer's connection does not checkpoint in its commits; its checkpoint
    # thread must both copy the WAL into the file and let it start over, or the
    # WAL would grow by at least a page per commit for as long as steps go on.
    app = make_app(db_file)
    steps = 10_000

    async def noop(i: int) -> int:
        return i

    @app.workflow
    async def many(ctx: durable.Context, n: int) -> int:
        for i in range(n):
            await ctx.step(noop, i)
        return n

    async with app:
        assert await app.run(many, steps) == steps
        wal = Path(f"{db_file}-wal").stat().st_size
    page = 4096 + 24  # a WAL frame: one page and its header
    assert wal < steps * page / 2, f"the WAL grew to {wal} bytes"
    conn = sqlite3.connect(db_file)
    assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == steps
    conn.close()
