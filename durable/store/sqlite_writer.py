"""The SQLite store's single writer: one connection, group commit, and a direct path when idle.

Every write of the process goes through one queue. The writer thread takes
whatever is queued (the records of many concurrent runs), applies it in one
``BEGIN IMMEDIATE … COMMIT`` and hands all results back to the event loop in one
call. A thousand concurrent runs share a handful of commits.

A lone record when nothing else is queued gains nothing from the thread: with
``inline=True`` (durability "normal": a commit is a write to the WAL, no fsync)
the event loop commits it itself on the same connection, a single autocommitted
INSERT of ~20 µs, instead of paying two thread switches for it. The writer's
lock and the submitted/applied counters guarantee that such a write never
overtakes one queued before it. If the file is busy (another process is
writing), the record goes through the queue, whose thread may wait.

Checkpoints (copying the WAL into the database file, with its fsyncs) run on
a thread and connection of their own every ``CHECKPOINT_EVERY`` writes, not
inside whichever commit crosses SQLite's threshold.

aiosqlite runs one call per round trip to its thread, so batching several
statements into one transaction would cost one hop per statement; the writer
owns its thread instead and keeps aiosqlite for reads.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from .batch import MAX_BATCH, Item, Op, Outcome, deliver, ignore_result, runs_of

__all__ = ["Writer", "is_busy"]

_STOP = object()
# The writer's connection never checkpoints inside a commit (SQLite's automatic
# checkpoint would run in whichever commit crosses its threshold, with fsyncs,
# on the event loop for a direct write). A thread of its own checkpoints after
# this many writes, on its own connection, while writes go on.
CHECKPOINT_EVERY = 1000
# After this many direct writes in a row, one is delivered through the loop, so
# a workflow of trivial steps still lets other tasks run.
_YIELD_EVERY = 64
# A busy writer looks at PRAGMA data_version for changed_elsewhere() (which
# cannot look while the writer works, and does when it is idle) at most this
# often, well within the store's check every 0.05 s. A look is a read
# transaction: made after every batch, it cost a sequential step at durability
# "full" a few µs, up to about 15, between its commit and its caller.
LOOK_EVERY_SECONDS = 0.01

# sqlite3 binds int, float and str as they are, but looks every bytes and None
# parameter up as adaptable first: two attribute lookups that fail and format an
# AttributeError each, about 1,800 instructions per parameter, and every record has
# some. Adapting them to themselves, which is what the failed lookups end in, binds
# the same values without the lookups. Adapters are process-wide, so an adapter a
# program registered for these types itself is kept.
for _type, _same in ((bytes, bytes), (type(None), {}.get)):  # bytes(b) is b; {}.get(None) is None
    sqlite3.adapters.setdefault((_type, sqlite3.PrepareProtocol), _same)


class Writer:
    """Apply write operations from many coroutines in shared transactions.

    Operations are those of :mod:`durable.store.batch`. A failure is handed
    to its caller as ``classify(exc)``: the store turns SQLite's errors into
    durable's own.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        inline: bool = False,
        busy_timeout_ms: int = 10_000,
        checkpoint: tuple[Callable[[], sqlite3.Connection], Op] | None = None,
        classify: Callable[[Exception], Exception] = lambda exc: exc,
    ) -> None:
        # The connection itself never waits for a lock (busy_timeout 0), so the
        # event loop never blocks on another process; the writer thread retries.
        # `checkpoint` = (connect, op): run op(conn) on a connection of its own
        # every CHECKPOINT_EVERY writes.
        self._connect = connect
        self._classify = classify
        self._checkpoint = checkpoint
        self._checkpoint_due = threading.Event()
        self._checkpointer = threading.Thread(target=self._run_checkpoints, name="durable-checkpoint", daemon=True)
        self._written = 0  # writes since the last checkpoint; under the lock
        self._closing = False
        self._inline = inline
        self._busy_timeout_ms = busy_timeout_ms
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="durable-writer", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # held while the connection is in use
        self._submitted = 0  # written by the event loop thread only
        self._applied = 0  # written by the writer thread only, under the lock
        self._streak = 0
        # PRAGMA data_version on this connection, which only another connection's commit moves, and how many
        # times it moved (both under the lock); how many of those changed_elsewhere() told (event loop thread only)
        self._version: int | None = None
        self._moves = 0
        self._told = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self._thread.start()
        await self._ready
        if self._checkpoint is not None:
            self._checkpointer.start()

    def submit(self, op: Op, *args: Any) -> asyncio.Future[Any]:
        """Apply `op(conn, *args)`; the future resolves once its transaction has committed."""
        loop = self._loop
        assert loop is not None
        fut = loop.create_future()
        # A one-statement write while nothing is queued and the file is free: committed from the event loop itself.
        if self._inline and self._submitted == self._applied and getattr(op, "direct", False):
            try:
                done, result = self.write_here(op, args)
            except Exception as exc:
                fut.set_exception(exc)
                return fut
            if done:
                self._streak += 1
                if self._streak < _YIELD_EVERY:
                    fut.set_result(result)
                else:
                    self._streak = 0
                    loop.call_soon(fut.set_result, result)
                return fut
        self._submitted += 1
        self._queue.put((fut, op, args))
        return fut

    def submit_nowait(self, op: Op, *args: Any) -> None:
        """Apply a write whose outcome nobody awaits; later writes still commit after it."""
        self.submit(op, *args).add_done_callback(ignore_result)

    def write_here(self, op: Op, args: tuple[Any, ...]) -> tuple[bool, Any]:
        """Commit a one-statement write, `op(conn, *args)`, from this thread if nothing is queued and the file is free.

        (True, its result), or (False, None) when the write must be submitted
        instead: the writer has writes queued or in hand, or another process
        holds the file. A failure is raised, classified. Any thread may call it
        (the step thread of a plain function records its step here); it never
        waits, and never overtakes a write submitted before it.
        """
        if self._submitted != self._applied or not self._lock.acquire(blocking=False):
            return False, None
        try:
            conn = self._conn
            if conn is None or self._submitted != self._applied:
                return False, None
            result = op(conn, *args)
            self._count_writes(1)
            return True, result
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return False, None  # another process is writing: the writer thread will wait for it
            raise self._classify(exc) from None
        except Exception as exc:
            raise self._classify(exc) from None
        finally:
            self._lock.release()

    def read_now(self, op: Op, *args: Any) -> tuple[bool, Any]:
        """Run a read-only `op(conn, *args)` from this thread if the writer is idle: (True, result).

        (False, None) when the writer is busy or the file is locked: the caller
        goes the usual way. A read here costs no thread hop, and sees every
        commit of this process.
        """
        if self._submitted != self._applied or not self._lock.acquire(blocking=False):
            return False, None
        try:
            if self._conn is None or self._submitted != self._applied:
                return False, None
            return True, op(self._conn, *args)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return False, None
            raise self._classify(exc) from None
        finally:
            self._lock.release()

    def changed_elsewhere(self) -> bool:
        """Whether another connection (another process, another App) committed since the last call.

        This connection's own commits do not count. Looked at now when the writer
        is idle; when it is busy, the writer thread looked after its last commit.
        """
        if self._lock.acquire(blocking=False):
            try:
                if self._conn is not None:
                    self._look(self._conn)
            except sqlite3.Error:
                pass  # the file is busy or failing: the next look, or the writer's, tells
            finally:
                self._lock.release()
        moves = self._moves
        moved, self._told = moves != self._told, moves
        return moved

    def _look(self, conn: sqlite3.Connection) -> None:
        """Count a move of data_version (the lock is held)."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._moves += self._version is not None
            self._version = version

    def _count_writes(self, n: int) -> None:
        """Note `n` writes (the lock is held); wake the checkpointer every CHECKPOINT_EVERY."""
        self._written += n
        if self._written >= CHECKPOINT_EVERY:
            self._written = 0
            self._checkpoint_due.set()

    def _run_checkpoints(self) -> None:
        assert self._checkpoint is not None
        connect, op = self._checkpoint
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._checkpoint_due.wait()
                self._checkpoint_due.clear()
                if self._closing:
                    return
                try:
                    if conn is None:
                        conn = connect()
                    op(conn)  # the bulk of it, while this process goes on writing
                    with self._lock:
                        # The few pages written meanwhile, with this process's writes
                        # held back: the WAL is then wholly copied, so the next commit
                        # starts it over instead of growing it.
                        op(conn)
                except sqlite3.Error:
                    pass  # busy or refused: the next one catches up (a checkpoint only moves pages)
        finally:
            if conn is not None:
                conn.close()

    async def close(self) -> None:
        self._closing = True
        self._checkpoint_due.set()  # the checkpoint thread ends, closing its connection
        if not self._thread.is_alive():
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        if self._checkpointer.is_alive():
            await asyncio.to_thread(self._checkpointer.join)

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None and self._ready is not None
        try:
            conn = self._connect()
        except BaseException as exc:
            loop.call_soon_threadsafe(self._ready.set_exception, exc)
            return
        self._conn = conn
        try:
            with self._lock:
                self._look(conn)  # where changes elsewhere count from
        except sqlite3.Error:
            pass  # then from the first look that works
        loop.call_soon_threadsafe(self._ready.set_result, None)
        get, get_nowait = self._queue.get, self._queue.get_nowait
        stopping = False
        look_at = 0.0
        try:
            while not stopping:
                item = get()
                if item is _STOP:
                    break
                batch = [item]
                while len(batch) < MAX_BATCH:
                    try:
                        item = get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        break
                    batch.append(item)
                with self._lock:
                    outcomes = self._apply(conn, batch)
                    self._applied += len(batch)
                    self._count_writes(len(batch))
                    now = time.monotonic()
                    if now >= look_at:  # a busy writer is never idle for changed_elsewhere() to look itself
                        look_at = now + LOOK_EVERY_SECONDS
                        try:
                            self._look(conn)
                        except sqlite3.Error:
                            pass
                try:
                    loop.call_soon_threadsafe(deliver, batch, outcomes)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    return
                del batch, outcomes, item  # hold nothing of the runs while idle
        finally:
            with self._lock:
                self._conn = None
                conn.close()

    def _apply(self, conn: sqlite3.Connection, batch: list[Item]) -> list[Outcome]:
        """Apply a batch, waiting (up to the busy timeout) while another process holds the lock."""
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        pause = 0.0005
        while True:
            try:
                return self._apply_once(conn, batch)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() > deadline:
                    failure = self._classify(exc)
                    return [(False, failure)] * len(batch)
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    def _apply_once(self, conn: sqlite3.Connection, batch: list[Item]) -> list[Outcome]:
        """Apply a batch; raise only if the file is busy (then nothing was applied)."""
        if len(batch) == 1 and getattr(batch[0][1], "autocommit", False):
            # Its statements commit on their own: BEGIN and COMMIT would only add
            # two round trips. (Its one write takes the lock before it reads.)
            _, op, args = batch[0]
            try:
                return [(True, op(conn, *args))]
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    raise
                return [(False, self._classify(exc))]
            except Exception as exc:
                return [(False, self._classify(exc))]
        try:
            # IMMEDIATE takes the write lock up front: a deferred transaction that
            # reads first can fail with SQLITE_BUSY when it upgrades to write.
            conn.execute("BEGIN IMMEDIATE")
            results = _apply_in_runs(conn, batch)
            conn.execute("COMMIT")
            return results
        except Exception as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite already rolled back (a full disk, an I/O error)
            if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
                raise
            if len(batch) == 1:
                return [(False, self._classify(exc))]
        # One operation failed the shared transaction: apply each alone, so only
        # the faulty one reports an error and the others still commit.
        return [self._apply(conn, [item])[0] for item in batch]


def _apply_in_runs(conn: sqlite3.Connection, batch: list[Item]) -> list[Outcome]:
    """Apply a batch in order; consecutive ops that have a batched form (``op.many``) go in one call."""
    results: list[Outcome] = []
    for op, i, j in runs_of(batch):
        if j - i > 1:
            results += [(True, value) for value in op.many(conn, [args for _, _, args in batch[i:j]])]  # type: ignore[attr-defined]
        else:
            results.append((True, op(conn, *batch[i][2])))
    return results


def is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc)
    return "locked" in message or "busy" in message
