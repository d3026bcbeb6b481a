"""The journal's single writer: one thread, one connection, group commit.

Every write of the process goes through one queue. The writer thread takes
whatever is queued (the records of many concurrent runs), applies it in one
``BEGIN IMMEDIATE … COMMIT`` and hands all results back to the event loop in one
call. A lone sequential step costs one transaction, like a plain autocommitted
INSERT; a thousand concurrent runs share a handful of commits.

aiosqlite runs one call per round trip to its thread, so batching several
statements into one transaction would cost one hop per statement; the writer
owns its thread instead and keeps aiosqlite for reads.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Writer"]

Op = Callable[..., Any]

_STOP = object()
_MAX_BATCH = 2048


def _ignore_result(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # mark retrieved: fire-and-forget writes report nothing


def _deliver(batch: list[tuple[asyncio.Future[Any], Op, tuple[Any, ...]]], outcomes: list[tuple[bool, Any]]) -> None:
    for (fut, _, _), (ok, value) in zip(batch, outcomes):
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class Writer:
    """Apply write operations from many coroutines in shared transactions."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str = "durable-writer") -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self._thread.start()
        await self._ready

    def submit(self, op: Op, *args: Any) -> asyncio.Future[Any]:
        """Queue `op(conn, *args)`; the future resolves after its transaction commits.

        An op that runs exactly one SQL statement may say so with
        ``op.single_statement = True``: alone in a batch, it then runs in autocommit.
        """
        fut = self._loop.create_future()  # type: ignore[union-attr]
        self._queue.put((fut, op, args))
        return fut

    def submit_nowait(self, op: Op, *args: Any) -> None:
        """Queue a write whose outcome nobody awaits; later writes still commit after it."""
        self.submit(op, *args).add_done_callback(_ignore_result)

    async def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None and self._ready is not None
        try:
            conn = self._connect()
        except BaseException as exc:
            loop.call_soon_threadsafe(self._ready.set_exception, exc)
            return
        loop.call_soon_threadsafe(self._ready.set_result, None)
        get, get_nowait = self._queue.get, self._queue.get_nowait
        stopping = False
        try:
            while not stopping:
                item = get()
                if item is _STOP:
                    break
                batch = [item]
                while len(batch) < _MAX_BATCH:
                    try:
                        item = get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        break
                    batch.append(item)
                outcomes = self._apply(conn, batch)
                try:
                    loop.call_soon_threadsafe(_deliver, batch, outcomes)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    return
        finally:
            conn.close()

    def _apply(self, conn: sqlite3.Connection, batch: list[Any]) -> list[tuple[bool, Any]]:
        if len(batch) == 1 and getattr(batch[0][1], "single_statement", False):
            # One statement is its own transaction (and takes the write lock
            # before reading): BEGIN and COMMIT would only add two round trips.
            _, op, args = batch[0]
            try:
                return [(True, op(conn, *args))]
            except Exception as exc:
                return [(False, exc)]
        try:
            # IMMEDIATE takes the write lock up front: a deferred transaction that
            # reads first can fail with SQLITE_BUSY when it upgrades to write.
            conn.execute("BEGIN IMMEDIATE")
            results = [(True, op(conn, *args)) for _, op, args in batch]
            conn.execute("COMMIT")
            return results
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(batch) == 1:
                return [(False, exc)]
        # One operation failed the shared transaction: apply each alone, so only
        # the faulty one reports an error and the others still commit.
        return [self._apply(conn, [item])[0] for item in batch]
