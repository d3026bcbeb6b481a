"""The SQLite store: one file in WAL mode (its writes are in :mod:`.sqlite_ops`, its reads here).

Writes go through the process's single :class:`~.sqlite_writer.Writer` (group
commit, and direct commits from the event loop when it is idle); reads use an
aiosqlite connection that is query-only. Another process noticing a commit
is SQLite's ``PRAGMA data_version`` (one pragma, no table read).

SQLite serialises writers, so a fenced write (an INSERT or UPDATE whose WHERE
checks the run's owner and epoch) can never interleave with a claim. The
store's clock for leases is SQLite's own ``julianday('now')``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import aiosqlite

from ..errors import JournalError, StoreUnavailable
from . import sqlite_admin, sqlite_messages, sqlite_schedules
from . import sqlite_ops as ops
from .batch import ignore_result
from .base import (
    FINAL, IN_PLACE, NO_PROMPT, SET_ASIDE, Answered, Claimed, Fence, Placement, PromptRow, RecordRow, Recorded, RunRow,
)
from .verify import LOST_RECORDS, VALUES_AFTER, damaged_values, lost_records
from .operators import OperatorWrites
from .queues import Limits, by_queue
from .prompts import SELECT_LOG, PromptLogRow
from .schedules import ScheduleWrites
from .sqlite_schema import BUSY_TIMEOUT_MS, RUN_DEADLINE_FROM, open_read_only, prepare, read_only_location
from .sqlite_writer import Writer, is_busy

__all__ = ["SQLiteStore"]

_VALUES_AFTER = VALUES_AFTER.format(schema="", after="(?, ?)")
DURABILITY = {"normal": "NORMAL", "full": "FULL"}
# How often wait_for_change asks SQLite whether another connection committed.
CHANGE_CHECK_SECONDS = 0.05
# How many free pages one commit of reclaim() gives back (4 MiB of 4 KiB pages).
RECLAIM_PAGES = 1024


def _appending(fence: Fence, record: RecordRow) -> tuple[Any, tuple[Any, ...]]:
    """The operation and parameters that append `record`."""
    if record[9:] == NO_PROMPT:  # none of a prompt's or an answer's fields: the shorter statement
        return ops.append_bare, fence + record[:9]
    return ops.append, fence + record


class SQLiteStore(OperatorWrites, ScheduleWrites):
    """Runs and records in one SQLite file."""

    admin = sqlite_admin  # its operators' writes (OperatorWrites)
    schedule_ops = sqlite_schedules  # ScheduleWrites

    def __init__(self, path: str, durability: str = "normal", read_only: bool = False) -> None:
        if durability not in DURABILITY:
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        self.target = self.path = path
        self.durability = durability
        self.read_only = read_only
        self.older_ok = False  # read-only: also a journal of the previous schema (for check())
        self._runs = ops.RUN  # the columns a run is read with
        self._writer: Writer | None = None
        self._reader: aiosqlite.Connection | None = None
        self._data_version: int | None = None

    # lifecycle

    async def open(self) -> None:
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            raise JournalError(self.path, "an in-memory database cannot be shared by the writer and readers. Give a file path.")
        if self.read_only:
            # No writer, no migration, no WAL switch: the file is only looked at.
            uri, version = await asyncio.to_thread(open_read_only, self.path, self.older_ok)
            if version < RUN_DEADLINE_FROM:  # an older journal, read as it is: its runs have no deadline
                self._runs = ops.RUN_BEFORE_CHILDREN
            self._reader = await aiosqlite.connect(uri, uri=True, isolation_level=None)
            await self._reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            return
        await asyncio.to_thread(prepare, self.path)
        # Direct commits from the event loop only where a commit needs no fsync.
        writer = Writer(
            self._connect_writer,
            inline=self.durability == "normal",
            busy_timeout_ms=BUSY_TIMEOUT_MS,
            checkpoint=(self._connect_checkpointer, ops.checkpoint),
            classify=self._classify,
        )
        await writer.start()
        try:
            reader = await aiosqlite.connect(self.path, isolation_level=None)
            await reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await reader.execute("PRAGMA query_only = ON")
        except BaseException:
            await writer.close()
            raise
        self._writer, self._reader = writer, reader

    async def close(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if reader is not None:
            await reader.close()
        if writer is not None:
            await writer.close()

    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # setting up may wait for another process
        # NORMAL in WAL mode survives a process crash (the OS has the pages);
        # FULL also fsyncs the WAL at every commit and survives power loss.
        conn.execute(f"PRAGMA synchronous = {DURABILITY[self.durability]}")
        conn.execute("PRAGMA busy_timeout = 0")  # from now on the writer waits for locks itself (Writer._apply)
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the Writer's checkpoint thread does it, off the commit path
        conn.execute("PRAGMA recursive_triggers = ON")  # a run that ends cancels its children, theirs, and so on
        return conn

    def _connect_checkpointer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA synchronous = {DURABILITY[self.durability]}")  # the fsyncs a checkpoint does
        return conn

    def _classify(self, exc: Exception) -> Exception:
        """SQLite's error as durable's own: what happened to the file, and what to do."""
        if not isinstance(exc, sqlite3.Error) or isinstance(exc, sqlite3.IntegrityError):
            return exc
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
            reason = f"another program has held the file locked for over {BUSY_TIMEOUT_MS / 1000:g} s"
        elif "full" in text:
            reason = "the disk is full (SQLite: database or disk is full); free some space"
        elif "readonly" in text or "read-only" in text or read_only_location(self.path):
            reason = "the file or its directory is read-only (a read-only mount or permissions); make both writable"
        elif "disk I/O" in text:
            reason = "the disk reported an I/O error (SQLite: disk I/O error); check the disk"
        elif "malformed" in text or "not a database" in text or isinstance(exc, sqlite3.DatabaseError) and "corrupt" in text:
            # Not a fault that passes: waiting would only repeat it.
            return JournalError(self.path, f"the file is damaged (SQLite: {text}). Restore it from a backup.")
        else:
            reason = f"SQLite says {text}"
        return StoreUnavailable(self.path, reason)

    # writes

    def _write(self, op: Any, *args: Any) -> Any:
        if self._writer is None:
            raise self._closed()
        return self._writer.submit(op, *args)

    def _closed(self) -> Exception:
        if self.read_only:
            return JournalError(self.path, "it was opened read-only; open it without read_only to change anything.")
        return RuntimeError("the store is closed")

    def create_run(
        self, run_id: str, workflow: str, args: bytes, claimant: str | None, lease_seconds: float, now: float,
        deadline: float | None = None, placement: Placement | None = None,
    ) -> Any:
        if placement is not None:
            return self._write(ops.create_placed, (run_id, workflow, args, now, deadline, *placement))
        return self._write(ops.create_run, (run_id, workflow, args, claimant, lease_seconds, now, deadline))

    async def ended_run(self, run_id: str) -> RunRow | None:
        # Read on the writer's connection from this thread when the writer is idle: no thread hop.
        if self._writer is None:
            if self.read_only:
                return None
            raise RuntimeError("the store is closed")
        _, row = self._writer.read_now(ops.select_run, run_id)
        return row if row is not None and row.status in FINAL else None

    async def claim(
        self,
        run_id: str,
        status: str,
        owner: str | None,
        claimant: str,
        lease_seconds: float,
        now: float,
        owner_dead: bool = False,
    ) -> Claimed | None:
        return await self._write(ops.claim, run_id, status, owner, claimant, lease_seconds, now, owner_dead)

    async def claim_ready(
        self,
        claimant: str,
        workflows: Sequence[str],
        dead_owners: Sequence[str],
        limit: int,
        lease_seconds: float,
        now: float,
        queues: Mapping[str, Limits] | None = None,
    ) -> list[Claimed]:
        if limit <= 0 or not workflows:
            return []
        names, dead = json.dumps(list(workflows)), json.dumps(list(dead_owners))
        queues = dict(queues or {})
        # Look before taking the write lock: most passes find nothing to claim, and a
        # write queued behind them would hold back this process's direct commits.
        if self._reader is None:
            raise RuntimeError("the store is closed")
        probe = {"workflows": names, "me": claimant, "dead": dead, "now": now, "queues": json.dumps(list(queues))}
        ours = "(queue IS NULL OR queue IN (SELECT value FROM json_each(:queues)))"
        try:
            async with self._reader.execute(f"SELECT 1 FROM runs WHERE {ops.CLAIMABLE} AND {ours} LIMIT 1", probe) as cursor:
                if await cursor.fetchone() is None:
                    return []
        except sqlite3.Error as exc:
            raise self._classify(exc) from None
        return await self._write(ops.claim_ready, claimant, names, dead, limit, lease_seconds, now, queues)

    async def renew(self, owner: str, lease_seconds: float) -> dict[str, tuple[int, bool]]:
        return await self._write(ops.renew, owner, lease_seconds)

    async def release(self, owner: str, now: float, run_id: str | None = None, records: int | None = None) -> int:
        return await self._write(ops.release, owner, run_id, now, records)

    def append(self, fence: Fence, record: RecordRow) -> Any:
        writer = self._writer
        if writer is None:
            raise self._closed()
        op, params = _appending(fence, record)
        return writer.submit(op, params)

    def append_from_thread(self, fence: Fence, record: RecordRow) -> bool | None:
        writer = self._writer
        if writer is None:
            return None
        op, params = _appending(fence, record)
        done, written = writer.write_here(op, (params,))
        return written if done else None

    async def replace(self, fence: Fence, record: RecordRow) -> bool:
        return await self._write(ops.replace, fence + record)

    def append_nowait(self, fence: Fence, record: RecordRow) -> None:
        self.append(fence, record).add_done_callback(ignore_result)  # later writes still commit after it

    async def park(
        self, fence: Fence, wake_at: float | None, now: float, records: int, deadline: float | None = None,
        waiting_at: Sequence[int] | None = None, race: bool = False,
    ) -> str | None:
        seqs = None if waiting_at is None else json.dumps(list(waiting_at))
        return await self._write(ops.park, (*fence, wake_at, now, records, deadline, seqs, race))

    async def settle(self, fence: Fence, decision: RecordRow, losers: Sequence[int]) -> bool:
        return await self._write(sqlite_messages.settle, fence, decision, list(losers))

    async def finish(
        self, fence: Fence, status: str, result: bytes | None, error: bytes | None, now: float, records: int
    ) -> bool:
        return await self._write(ops.finish, (status, result, error, now, *fence, records))

    async def reopen_prompt(self, fence: Fence, key: str, now: float) -> bool:
        return await self._write(ops.reopen_prompt, fence, key, now)

    async def expire(self, fence: Fence, seq: int, now: float) -> bool:
        return await self._write(ops.expire, fence, seq, now)

    def complete_sleep_nowait(self, fence: Fence, seq: int, now: float) -> None:
        if self._writer is None:
            raise RuntimeError("the store is closed")
        self._writer.submit_nowait(ops.complete_sleep, fence, seq, now)

    async def reassign(
        self, run_id: str, key: str, assignee: str | None, now: float, by: str | None, via: str
    ) -> str | None:
        return await self._write(ops.reassign, run_id, key, assignee, now, by, via)

    async def answer(
        self, run_id: str, key: str, value: bytes, now: float, claimant: str | None = None, lease_seconds: float = 0.0,
        by: str | None = None, via: str = "python",
    ) -> Answered:
        return await self._write(ops.answer, run_id, key, value, now, claimant, lease_seconds, by, via)

    async def send(
        self, run_id: str, topic: str, value: bytes, now: float, claimant: str | None = None, lease_seconds: float = 0.0
    ) -> Answered | None:
        return await self._write(sqlite_messages.send, run_id, topic, value, now, claimant, lease_seconds)

    async def receive(self, fence: Fence, seq: int, topic: str, now: float, deadline: float | None) -> tuple[bool, bytes | None]:
        return await self._write(sqlite_messages.receive, *fence, seq, topic, now, deadline)

    async def start_child(
        self, fence: Fence, seq: int, child_id: str, workflow: str, args: bytes, now: float, deadline: float | None,
        queue: str | None = None,
    ) -> tuple[bool, str, bytes | None, bytes | None]:
        return await self._write(sqlite_messages.start_child, *fence, seq, child_id, workflow, args, now, deadline, queue)

    async def cancel(self, run_id: str, now: float) -> tuple[str, str | None] | None:
        return await self._write(ops.cancel, run_id, now)

    async def flush(self) -> None:
        await self._write(ops.flush)

    # operators' writes (retry, fork, pause, resume, prune: OperatorWrites)

    async def reclaim(self) -> None:
        while await self._write(sqlite_admin.reclaim, RECLAIM_PAGES):
            await asyncio.sleep(0)  # one batch of pages per commit: other writes go in between

    # reads

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self._reader is None:
            raise RuntimeError("the store is closed")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise self._classify(exc) from None

    async def load_run(self, run_id: str) -> RunRow | None:
        rows = await self._fetch(f"SELECT {self._runs} FROM runs WHERE run_id = ?", (run_id,))
        return RunRow._make(rows[0]) if rows else None

    async def load_records(self, run_id: str) -> list[RecordRow]:
        rows = await self._fetch(f"SELECT {ops.RECORD} FROM records WHERE run_id = ? ORDER BY seq", (run_id,))
        return list(map(RecordRow._make, rows))

    async def load_set_aside(self, run_id: str) -> list[RecordRow]:
        rows = await self._fetch(f"SELECT {SET_ASIDE} FROM set_aside WHERE run_id = ? ORDER BY id", (run_id,))
        return list(map(RecordRow._make, rows))

    async def load_replay(self, run_id: str) -> list[Recorded]:
        rows = await self._fetch(
            "SELECT seq, kind, name, status, value, error, attempts FROM records WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        return list(map(Recorded._make, rows))

    async def changes(self, run_id: str, from_seq: int, changed_after: tuple[float, int]) -> list[RecordRow]:
        rows = await self._fetch(
            # A step 'retrying' is not streamed until it is final (its record is replaced in place).
            f"SELECT {ops.RECORD} FROM records WHERE run_id = ?1 AND ((seq >= ?2 AND status <> 'retrying')"
            f" OR (kind IN {IN_PLACE}"
            " AND finished_at IS NOT NULL AND (finished_at > ?3 OR (finished_at = ?3 AND seq > ?4))))",
            (run_id, from_seq, *changed_after),
        )
        return list(map(RecordRow._make, rows))

    async def list_runs(
        self, status: str | Sequence[str] | None, workflow: str | None, limit: int, queue: str | None = None,
        since: float | None = None, until: float | None = None,
    ) -> list[RunRow]:
        statuses = [status] if isinstance(status, str) else list(status or ())
        where = [f"status IN ({', '.join('?' * len(statuses))})"] if statuses else []
        params: list[Any] = list(statuses)
        for clause, value in (("workflow = ?", workflow), ("queue = ?", queue), ("created_at >= ?", since), ("created_at < ?", until)):
            if value is not None:
                where.append(clause)
                params.append(value)
        rows = await self._fetch(
            f"SELECT {self._runs} FROM runs{' WHERE ' + ' AND '.join(where) if where else ''}"
            " ORDER BY created_at DESC, run_id DESC LIMIT ?", (*params, limit),
        )  # fmt: skip
        return list(map(RunRow._make, rows))

    async def queue_counts(self) -> dict[str, dict[str, int]]:
        rows = await self._fetch(
            "SELECT queue, status, count(*) FROM runs WHERE queue IS NOT NULL"
            " AND status NOT IN ('completed', 'failed', 'cancelled') GROUP BY 1, 2"
        )
        return by_queue(rows)

    async def published(self, run_id: str, topic: str, after: int) -> list[tuple[int, bytes]]:
        rows = await self._fetch(
            "SELECT seq, value FROM records WHERE run_id = ? AND kind = 'publish' AND name = ? AND seq > ? ORDER BY seq",
            (run_id, topic, after),
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]

    async def pending_prompts(self, run_id: str | None, assignee: str | None = None) -> list[PromptRow]:
        rows = await self._fetch(
            "SELECT r.run_id, runs.workflow, r.seq, r.name, r.question, r.schema, r.started_at, r.deadline, r.assignee"
            " FROM records AS r JOIN runs ON runs.run_id = r.run_id"
            " WHERE r.status = 'waiting' AND r.kind = 'ask' AND runs.status NOT IN ('completed', 'failed', 'cancelled')"
            " AND (?1 IS NULL OR r.run_id = ?1) AND (?2 IS NULL OR r.assignee = ?2) ORDER BY r.started_at, r.run_id",
            (run_id, assignee),
        )
        return list(map(PromptRow._make, rows))

    async def prompt_log(self, run_id: str) -> list[PromptLogRow]:
        rows = await self._fetch(SELECT_LOG.format(table="prompt_log", run="?"), (run_id,))
        return list(map(PromptLogRow._make, rows))

    async def prompt(self, run_id: str, key: str) -> tuple[str, str, str, float | None] | None:
        rows = await self._fetch(
            "SELECT r.status, r.schema, runs.workflow, r.deadline FROM records AS r JOIN runs ON runs.run_id = r.run_id"
            " WHERE r.run_id = ? AND r.kind = 'ask' AND r.name = ?",
            (run_id, key),
        )
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    async def deadline(self, run_id: str, seq: int) -> float | None:
        rows = await self._fetch("SELECT deadline FROM records WHERE run_id = ? AND seq = ?", (run_id, seq))
        return rows[0][0] if rows else None

    async def held(self, owner: str) -> dict[str, tuple[int, bool]]:
        rows = await self._fetch(
            "SELECT run_id, epoch, status = 'paused' FROM runs WHERE owner = ? AND status IN ('running', 'paused')", (owner,)
        )
        return {run_id: (epoch, bool(paused)) for run_id, epoch, paused in rows}

    async def running_owners(self) -> list[str]:
        rows = await self._fetch("SELECT DISTINCT owner FROM runs WHERE status = 'running' AND owner IS NOT NULL")
        return [r[0] for r in rows]

    async def pending_workflows(self) -> dict[str, int]:
        rows = await self._fetch("SELECT workflow, count(*) FROM runs WHERE status = 'pending' GROUP BY workflow")
        return dict(rows)

    async def verify(self) -> list[str]:
        # quick_check reads every page and checks its structure (not index contents: that is integrity_check).
        try:
            found = [row for (row,) in await self._fetch("PRAGMA quick_check")]
        except JournalError as damage:  # a page so damaged that the check itself cannot go on
            return [f"SQLite's integrity check (PRAGMA quick_check) could not finish: {damage.reason}"]
        if found != ["ok"]:  # damaged pages: counting records over them would only fail on them
            return [f"SQLite's integrity check (PRAGMA quick_check): {row}" for row in found]
        values = await damaged_values(lambda run_id, seq: self._fetch(_VALUES_AFTER, (run_id, seq)))
        return lost_records(await self._fetch(LOST_RECORDS.format(schema=""))) + values

    async def next_wake(self) -> float | None:
        rows = await self._fetch(
            "SELECT MIN(t) FROM (SELECT MIN(wake_at) AS t FROM runs WHERE status IN ('sleeping', 'waiting')"
            " UNION ALL SELECT MIN(not_before) FROM runs WHERE status = 'pending')"
        )
        return rows[0][0]

    async def wait_for_change(self, timeout: float, wake: asyncio.Event) -> bool:
        # Every CHANGE_CHECK_SECONDS, whether another connection committed: PRAGMA data_version on the writer's
        # connection, which this process's own writes do not move (no thread hop), or on the reader's if read-only.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        writer = self._writer
        if writer is None and self._data_version is None:
            self._data_version = (await self._fetch("PRAGMA data_version"))[0][0]
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or wake.is_set():
                return False
            try:
                await asyncio.wait_for(wake.wait(), min(CHANGE_CHECK_SECONDS, remaining))
                return False
            except TimeoutError:
                pass
            if writer is not None:
                if writer.changed_elsewhere():
                    return True
                continue
            version = (await self._fetch("PRAGMA data_version"))[0][0]
            if version != self._data_version:
                self._data_version = version
                return True
