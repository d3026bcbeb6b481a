"""Following a run as it goes: its journal (App.watch) and what it publishes (App.stream), recorded then live.

Both read what is stored, then wait for the next change (this process's, or
one the worker saw elsewhere) and read again, until the run has ended. Each
subscribes before it reads, so no change between two reads is missed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .codec import decode_any
from .engine import Engine
from .errors import AppNotOpen
from .model import Cursor, Record
from .store.base import FINAL

__all__ = ["stream", "watch"]


async def watch(engine: Engine, run_id: str, after: str | None, poll_interval: float) -> AsyncIterator[tuple[str, Record]]:
    cursor = Cursor.parse(after)
    store = engine.store
    await engine.load(run_id)
    while True:
        if engine.closed:
            raise AppNotOpen(engine.store.target)
        changed = engine.subscribe()  # before the reads: no change between them is missed
        row = await engine.load(run_id)
        ended = row.status in FINAL or row.status == "blocked"
        rows = await store.changes(run_id, cursor.seq, (cursor.changed_at, cursor.changed_seq))
        for record in sorted((r for r in rows if r.seq < cursor.seq), key=lambda r: (r.finished_at, r.seq)):
            cursor = cursor.changed(record)
            yield str(cursor), Record.from_row(record)
        later = {r.seq: r for r in rows if r.seq >= cursor.seq}
        while later:
            record = later.pop(cursor.seq, None)
            if record is None and not ended:
                break  # an earlier call is still in flight: keep the order
            cursor = cursor.passed(record)
            if record is not None:
                yield str(cursor), Record.from_row(record)
        if ended:
            return
        await engine.wait_changed(changed, poll_interval)


async def stream(
    engine: Engine, run_id: str, topic: str, after: int | None, poll_interval: float
) -> AsyncIterator[tuple[int, Any]]:
    await engine.load(run_id)  # RunNotFound
    offset = -1 if after is None else after
    while True:
        if engine.closed:
            raise AppNotOpen(engine.store.target)
        changed = engine.subscribe()
        ended = (await engine.load(run_id)).status in (*FINAL, "blocked")
        for offset, blob in await engine.store.published(run_id, topic, offset):
            yield offset, decode_any(blob)
        if ended:
            return
        await engine.wait_changed(changed, poll_interval)
