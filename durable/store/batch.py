"""Group commit, shared by both stores: the writes of many runs applied together.

Every write of a process goes into one queue, in the order it was submitted.
Whatever is queued when the store is free forms a batch, applied in one
transaction (one commit, one fsync) and answered in one hand-over to the event
loop, so a thousand runs stepping at once share a handful of commits. Within a
batch, consecutive calls of the same operation that offers a batched form
(``op.many``) go to the store as one statement.

An operation is a plain function ``op(conn, *args)`` with optional attributes:

- ``autocommit``: its statements may each commit on their own (one write,
  then at most reads), so alone in a batch it needs no BEGIN/COMMIT;
- ``direct``: it may be committed at once, bypassing the queue, when nothing
  is queued (the SQLite writer's fast path for a sequential run);
- ``many``: ``many(conn, [args, ...])`` applies a run of calls in one
  statement and returns each call's result.

If one operation fails a shared transaction, the store applies each alone,
so only the faulty one gets the error and the others still commit.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

__all__ = ["Batcher", "Item", "Op", "Outcome", "deliver", "ignore_result", "runs_of"]

Op = Callable[..., Any]
Item = tuple["asyncio.Future[Any]", Op, tuple[Any, ...]]
Outcome = tuple[bool, Any]  # (True, result) or (False, exception)

MAX_BATCH = 2048


def ignore_result(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # mark retrieved: fire-and-forget writes report nothing


def deliver(batch: list[Item], outcomes: list[Outcome]) -> None:
    """Resolve each item's future with its outcome (a caller that gave up is skipped)."""
    for (fut, _, _), (ok, value) in zip(batch, outcomes):
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def runs_of(batch: list[Item]) -> Iterator[tuple[Op, int, int]]:
    """Split a batch into (op, start, end): consecutive calls of one op that has a batched form, else single calls."""
    i, n = 0, len(batch)
    while i < n:
        op = batch[i][1]
        j = i + 1
        if getattr(op, "many", None) is not None:
            while j < n and batch[j][1] is op:
                j += 1
        yield op, i, j
        i = j


class Batcher:
    """The queue of an async store: batches applied one at a time by `apply`, in submission order.

    `apply(batch)` returns one outcome per item; it never raises (a failure of
    the whole batch is each item's outcome). One batch at a time keeps this
    process's writes in order and never lets two of its own transactions wait
    for each other's row locks.
    """

    def __init__(self, apply: Callable[[list[Item]], Awaitable[list[Outcome]]]) -> None:
        self._apply = apply
        self._queue: collections.deque[Item] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # a batch, or a direct write, holds the store
        self._closing = False

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="durable store writer")

    async def run(self, op: Op, *args: Any) -> Any:
        """Apply `op` now, from the caller's task, when nothing is queued or applying; else queue it.

        A sequential run writes one record at a time: it gains nothing from the
        queue and would pay a task switch to its writer and back at every step.
        """
        if self._queue or self._busy or self._closing or self._wake is None:
            return await self.submit(op, *args)
        self._busy = True
        try:
            ((ok, value),) = await self._apply([(None, op, args)])  # type: ignore[list-item]
        finally:
            self._busy = False
            if self._queue:
                self._wake.set()  # writes queued meanwhile: the writer takes them now
        if ok:
            return value
        raise value

    def submit(self, op: Op, *args: Any) -> asyncio.Future[Any]:
        """Apply `op(conn, *args)`; the future resolves once its transaction has committed."""
        if self._closing or self._wake is None:
            raise RuntimeError("the store is closed")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((fut, op, args))
        self._wake.set()
        return fut

    def submit_nowait(self, op: Op, *args: Any) -> None:
        """Apply a write whose outcome nobody awaits; later writes still commit after it."""
        self.submit(op, *args).add_done_callback(ignore_result)

    async def _run(self) -> None:
        assert self._wake is not None
        queue = self._queue
        while True:
            await self._wake.wait()
            self._wake.clear()
            while queue and not self._busy:  # a direct write wakes this again when it is done
                batch = [queue.popleft() for _ in range(min(len(queue), MAX_BATCH))]
                self._busy = True
                try:
                    outcomes = await self._apply(batch)
                finally:
                    self._busy = False
                deliver(batch, outcomes)
                del batch, outcomes  # hold nothing of the runs while idle
            if self._closing and not queue:
                return

    async def close(self) -> None:
        """Apply what is queued, then stop."""
        self._closing = True
        if self._task is None:
            return
        assert self._wake is not None
        self._wake.set()
        await self._task
