"""The SQLite store: one file in WAL mode, every SQLite statement durable runs.

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
from collections.abc import Sequence
from typing import Any

import aiosqlite

from ..errors import JournalError, StoreUnavailable
from .base import FINAL, Answered, Claimed, Fence, PromptRow, RecordRow, Recorded, RunRow
from .sqlite_schema import BUSY_TIMEOUT_MS, open_read_only, prepare, read_only_location
from .sqlite_writer import Writer, is_busy

__all__ = ["SQLiteStore"]

DURABILITY = {"normal": "NORMAL", "full": "FULL"}
# How often wait_for_change asks SQLite whether another connection committed.
CHANGE_CHECK_SECONDS = 0.05

_NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # the store's clock, in seconds since the epoch
_RUN = "run_id, workflow, status, args, result, error, owner, epoch, lease_until, wake_at, created_at, updated_at, records"
_RECORD = "seq, kind, name, status, value, error, attempts, started_at, finished_at, question, schema"

# The time of an in-place change (a prompt answered, cancelled or reopened, a
# sleep done): strictly later than every earlier such change of the run, so the
# order of these times is their commit order and a watcher can resume after one.
_CHANGED_AT = (
    "MAX(:now, COALESCE((SELECT MAX(finished_at) FROM records"
    " WHERE run_id = :run_id AND kind IN ('ask', 'sleep')), 0) + 0.000001)"
)
_FENCED = "EXISTS (SELECT 1 FROM runs WHERE run_id = :run_id AND owner = :owner AND epoch = :epoch)"

# --- write operations: each runs on the writer's connection, inside its shared transaction ---

_APPEND = (
    "INSERT INTO records (run_id, seq, kind, name, status, value, error, attempts,"
    " started_at, finished_at, question, schema)"
    " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12"
    " WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ?1 AND owner = ?13 AND epoch = ?14)"
)


def _append(conn: sqlite3.Connection, params: tuple[Any, ...]) -> bool:
    return conn.execute(_APPEND, params).rowcount == 1


_CREATE_RUN = (
    "INSERT INTO runs (run_id, workflow, status, args, owner, epoch, lease_until, ready, created_at, updated_at)"
    " VALUES (?1, ?2, CASE WHEN ?4 IS NULL THEN 'pending' ELSE 'running' END, ?3, ?4,"
    f" CASE WHEN ?4 IS NULL THEN 0 ELSE 1 END, CASE WHEN ?4 IS NOT NULL THEN {_NOW} + ?5 END,"
    " CASE WHEN ?4 IS NULL THEN 'submitted' END, ?6, ?6)"
    " ON CONFLICT (run_id) DO NOTHING"
)


def _create_run(conn: sqlite3.Connection, params: tuple[Any, ...]) -> RunRow | None:
    if conn.execute(_CREATE_RUN, params).rowcount == 1:
        return None
    return _select_run(conn, params[0])


def _select_run(conn: sqlite3.Connection, run_id: str) -> RunRow | None:
    row = conn.execute(f"SELECT {_RUN} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else RunRow._make(row)


def _flush(conn: sqlite3.Connection) -> None:
    pass


def _claim(
    conn: sqlite3.Connection,
    run_id: str,
    status: str,
    owner: str | None,
    claimant: str,
    lease: float,
    now: float,
    owner_dead: bool,
) -> Claimed | None:
    # A run another owner executes is taken only when that owner is known dead or its lease has expired.
    row = conn.execute(
        f"UPDATE runs SET status = 'running', ready = NULL, owner = ?1, epoch = epoch + 1, lease_until = {_NOW} + ?2,"
        " updated_at = ?3 WHERE run_id = ?4 AND status = ?5 AND owner IS ?6"
        f" AND (status <> 'running' OR ?7 OR lease_until IS NULL OR lease_until < {_NOW})"
        " RETURNING workflow, args, epoch, records",
        (claimant, lease, now, run_id, status, owner, owner_dead),
    ).fetchone()
    return None if row is None else Claimed(run_id, row[0], row[1], row[2], status, owner, None, row[3])


_CLAIMABLE = (
    "workflow IN (SELECT value FROM json_each(:workflows)) AND ("
    f" (status = 'running' AND owner IS NOT :me AND (lease_until IS NULL OR lease_until < {_NOW}"
    "  OR owner IN (SELECT value FROM json_each(:dead))))"
    " OR status = 'pending' OR (status = 'sleeping' AND wake_at <= :now))"
)


def _claim_ready(
    conn: sqlite3.Connection, claimant: str, workflows: str, dead: str, limit: int, lease: float, now: float
) -> list[Claimed]:
    # Read and update in one transaction: the writer holds SQLite's write lock
    # throughout, so no other process can claim these rows in between.
    rows = conn.execute(
        f"SELECT run_id, workflow, args, epoch, status, owner, ready, records FROM runs WHERE {_CLAIMABLE}"
        # Orphans first (already started, maybe holding resources), new submissions last.
        " ORDER BY CASE WHEN status = 'running' THEN 0 WHEN ready IS 'submitted' THEN 2 ELSE 1 END, updated_at"
        " LIMIT :limit",
        {"workflows": workflows, "me": claimant, "dead": dead, "now": now, "limit": limit},
    ).fetchall()
    if not rows:
        return []
    conn.executemany(
        f"UPDATE runs SET status = 'running', ready = NULL, owner = ?, epoch = epoch + 1, lease_until = {_NOW} + ?,"
        " updated_at = ? WHERE run_id = ?",
        [(claimant, lease, now, row[0]) for row in rows],
    )
    return [Claimed(r[0], r[1], r[2], r[3] + 1, r[4], r[5], r[6], r[7]) for r in rows]


def _renew(conn: sqlite3.Connection, owner: str, lease: float) -> dict[str, int]:
    rows = conn.execute(
        f"UPDATE runs SET lease_until = {_NOW} + ? WHERE owner = ? AND status = 'running' RETURNING run_id, epoch",
        (lease, owner),
    ).fetchall()
    return dict(rows)


def _park(conn: sqlite3.Connection, params: tuple[Any, ...]) -> str | None:
    # Decided inside the transaction: an answer that arrived while the run was
    # still executing must not leave it 'waiting' for an answer it already has.
    row = conn.execute(
        "UPDATE runs SET status = CASE"
        "   WHEN EXISTS (SELECT 1 FROM records WHERE run_id = ?1 AND status = 'waiting') THEN 'waiting'"
        "   WHEN ?4 IS NOT NULL THEN 'sleeping' ELSE 'pending' END,"
        " ready = CASE WHEN ?4 IS NULL AND NOT EXISTS (SELECT 1 FROM records WHERE run_id = ?1 AND status = 'waiting')"
        "   THEN 'answered' END,"
        " wake_at = ?4, owner = NULL, lease_until = NULL, updated_at = ?5, records = MAX(records, ?6)"
        " WHERE run_id = ?1 AND owner = ?2 AND epoch = ?3 RETURNING status",
        params,
    ).fetchone()
    return None if row is None else row[0]


_FINISH = (
    "UPDATE runs SET status = ?1, result = ?2, error = ?3, owner = NULL, lease_until = NULL,"
    " wake_at = NULL, updated_at = ?4, records = MAX(records, ?8) WHERE run_id = ?5 AND owner = ?6 AND epoch = ?7"
)


def _finish(conn: sqlite3.Connection, params: tuple[Any, ...]) -> bool:
    return conn.execute(_FINISH, params).rowcount == 1


def _answer(
    conn: sqlite3.Connection, run_id: str, key: str, value: bytes, now: float, claimant: str | None, lease: float
) -> Answered:
    cur = conn.execute(
        f"UPDATE records SET status = 'answered', value = :value, finished_at = {_CHANGED_AT}"
        " WHERE run_id = :run_id AND kind = 'ask' AND name = :key AND status = 'waiting'",
        {"value": value, "now": now, "run_id": run_id, "key": key},
    )
    if cur.rowcount == 0:
        row = conn.execute(
            "SELECT status FROM records WHERE run_id = ? AND kind = 'ask' AND name = ?", (run_id, key)
        ).fetchone()
        return Answered(None if row is None else row[0], False, None)
    # The run is ready once no prompt waits. The answering process may take it at
    # once (it has the workflow and room): one commit instead of two.
    row = conn.execute(
        "UPDATE runs SET status = CASE WHEN ?3 IS NULL THEN 'pending' ELSE 'running' END,"
        " ready = CASE WHEN ?3 IS NULL THEN 'answered' END, owner = ?3,"
        f" epoch = epoch + (?3 IS NOT NULL), lease_until = CASE WHEN ?3 IS NOT NULL THEN {_NOW} + ?4 END, updated_at = ?1"
        " WHERE run_id = ?2 AND status = 'waiting'"
        " AND NOT EXISTS (SELECT 1 FROM records WHERE run_id = ?2 AND status = 'waiting')"
        " RETURNING workflow, args, epoch, records",
        (now, run_id, claimant, lease),
    ).fetchone()
    if row is None:
        return Answered("waiting", False, None)
    claimed = None if claimant is None else Claimed(run_id, row[0], row[1], row[2], "waiting", None, "answered", row[3])
    return Answered("waiting", True, claimed)


def _reopen_prompt(conn: sqlite3.Connection, fence: Fence, key: str, now: float) -> bool:
    return (
        conn.execute(
            f"UPDATE records SET status = 'waiting', value = NULL, finished_at = {_CHANGED_AT}"
            f" WHERE run_id = :run_id AND kind = 'ask' AND name = :key AND status = 'answered' AND {_FENCED}",
            {**fence._asdict(), "key": key, "now": now},
        ).rowcount
        == 1
    )


def _complete_sleep(conn: sqlite3.Connection, fence: Fence, seq: int, now: float) -> bool:
    return (
        conn.execute(
            f"UPDATE records SET status = 'completed', finished_at = {_CHANGED_AT}"
            f" WHERE run_id = :run_id AND seq = :seq AND status = 'scheduled' AND {_FENCED}",
            {**fence._asdict(), "seq": seq, "now": now},
        ).rowcount
        == 1
    )


def _cancel(conn: sqlite3.Connection, run_id: str, now: float) -> tuple[str, str | None] | None:
    row = conn.execute("SELECT status, owner FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None or row[0] in FINAL:
        return row
    conn.execute(
        "UPDATE runs SET status = 'cancelled', owner = NULL, lease_until = NULL, wake_at = NULL,"
        " updated_at = ? WHERE run_id = ?",
        (now, run_id),
    )
    conn.execute(
        f"UPDATE records SET status = 'cancelled', finished_at = {_CHANGED_AT}"
        " WHERE run_id = :run_id AND status = 'waiting'",
        {"now": now, "run_id": run_id},
    )
    return row


def _release(conn: sqlite3.Connection, owner: str, run_id: str | None, now: float, records: int | None) -> int:
    return conn.execute(
        "UPDATE runs SET status = 'pending', ready = 'released', owner = NULL, lease_until = NULL, updated_at = ?1,"
        " records = MAX(records, COALESCE(?4, 0)) WHERE owner = ?2 AND status = 'running' AND (?3 IS NULL OR run_id = ?3)",
        (now, owner, run_id, records),
    ).rowcount


# These write with one statement (then at most read), or only read: alone in a
# batch, each may commit on its own, without BEGIN/COMMIT.
for _op in (_flush, _select_run, _append, _create_run, _claim, _renew, _park, _finish, _reopen_prompt, _complete_sleep, _release):
    _op.autocommit = True  # type: ignore[attr-defined]


def _in_one_statement(sql: str, single: Any, done: Any) -> Any:
    """The batched form of `single`: its rows through one executemany, when every row applies.

    If a row did not apply (a fence or a conflict said no), the batch is undone
    to a savepoint and each row is applied alone, so each gets its own answer.
    """

    def many(conn: sqlite3.Connection, batch: list[tuple[Any, ...]]) -> list[Any]:
        rows = [args[0] for args in batch]
        conn.execute("SAVEPOINT batch")
        if conn.executemany(sql, rows).rowcount == len(rows):
            conn.execute("RELEASE batch")
            return [done] * len(rows)
        conn.execute("ROLLBACK TO batch")
        conn.execute("RELEASE batch")
        return [single(conn, row) for row in rows]

    return many


# Where many runs do the same at once (a thousand runs started, stepping,
# finishing), the writer hands their consecutive writes over in one call.
_append.many = _in_one_statement(_APPEND, _append, True)  # type: ignore[attr-defined]
_create_run.many = _in_one_statement(_CREATE_RUN, _create_run, None)  # type: ignore[attr-defined]
_finish.many = _in_one_statement(_FINISH, _finish, True)  # type: ignore[attr-defined]
# A step's record may even be committed from the event loop when the writer is idle
# (the sequential case). Run creation and claims stay queued: when a thousand runs
# start at once, they must share commits rather than take one each.
_append.direct = True  # type: ignore[attr-defined]


def _checkpoint(conn: sqlite3.Connection) -> None:
    # PASSIVE: copies what it can without waiting for readers or writers.
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


# --- the store --------------------------------------------------------------------------


class SQLiteStore:
    """Runs and records in one SQLite file."""

    def __init__(self, path: str, durability: str = "normal", read_only: bool = False) -> None:
        if durability not in DURABILITY:
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        self.target = self.path = path
        self.durability = durability
        self.read_only = read_only
        self._writer: Writer | None = None
        self._reader: aiosqlite.Connection | None = None
        self._data_version: int | None = None

    # lifecycle

    async def open(self) -> None:
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            raise JournalError(self.path, "an in-memory database cannot be shared by the writer and readers. Give a file path.")
        if self.read_only:
            # No writer, no migration, no WAL switch: the file is only looked at.
            uri = await asyncio.to_thread(open_read_only, self.path)
            self._reader = await aiosqlite.connect(uri, uri=True, isolation_level=None)
            await self._reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            return
        await asyncio.to_thread(prepare, self.path)
        # Direct commits from the event loop only where a commit needs no fsync.
        writer = Writer(
            self._connect_writer,
            inline=self.durability == "normal",
            busy_timeout_ms=BUSY_TIMEOUT_MS,
            checkpoint=(self._connect_checkpointer, _checkpoint),
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
        self, run_id: str, workflow: str, args: bytes, claimant: str | None, lease_seconds: float, now: float
    ) -> Any:
        return self._write(_create_run, (run_id, workflow, args, claimant, lease_seconds, now))

    async def ended_run(self, run_id: str) -> RunRow | None:
        # Read on the writer's connection from this thread when the writer is idle: no thread hop.
        if self._writer is None:
            if self.read_only:
                return None
            raise RuntimeError("the store is closed")
        _, row = self._writer.read_now(_select_run, run_id)
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
        return await self._write(_claim, run_id, status, owner, claimant, lease_seconds, now, owner_dead)

    async def claim_ready(
        self,
        claimant: str,
        workflows: Sequence[str],
        dead_owners: Sequence[str],
        limit: int,
        lease_seconds: float,
        now: float,
    ) -> list[Claimed]:
        if limit <= 0 or not workflows:
            return []
        names, dead = json.dumps(list(workflows)), json.dumps(list(dead_owners))
        # Look before taking the write lock: most passes find nothing to claim, and a
        # write queued behind them would hold back this process's direct commits.
        if self._reader is None:
            raise RuntimeError("the store is closed")
        probe = {"workflows": names, "me": claimant, "dead": dead, "now": now}
        try:
            async with self._reader.execute(f"SELECT 1 FROM runs WHERE {_CLAIMABLE} LIMIT 1", probe) as cursor:
                if await cursor.fetchone() is None:
                    return []
        except sqlite3.Error as exc:
            raise self._classify(exc) from None
        return await self._write(_claim_ready, claimant, names, dead, limit, lease_seconds, now)

    async def renew(self, owner: str, lease_seconds: float) -> dict[str, int]:
        return await self._write(_renew, owner, lease_seconds)

    async def release(self, owner: str, now: float, run_id: str | None = None, records: int | None = None) -> int:
        return await self._write(_release, owner, run_id, now, records)

    def append(self, fence: Fence, record: RecordRow) -> Any:
        writer = self._writer
        if writer is None:
            raise self._closed()
        return writer.submit(_append, (fence.run_id, *record, fence.owner, fence.epoch))

    def append_nowait(self, fence: Fence, record: RecordRow) -> None:
        if self._writer is None:
            raise RuntimeError("the store is closed")
        self._writer.submit_nowait(_append, (fence.run_id, *record, fence.owner, fence.epoch))

    async def park(self, fence: Fence, wake_at: float | None, now: float, records: int) -> str | None:
        return await self._write(_park, (*fence, wake_at, now, records))

    async def finish(
        self, fence: Fence, status: str, result: bytes | None, error: bytes | None, now: float, records: int
    ) -> bool:
        return await self._write(_finish, (status, result, error, now, *fence, records))

    async def reopen_prompt(self, fence: Fence, key: str, now: float) -> bool:
        return await self._write(_reopen_prompt, fence, key, now)

    def complete_sleep_nowait(self, fence: Fence, seq: int, now: float) -> None:
        if self._writer is None:
            raise RuntimeError("the store is closed")
        self._writer.submit_nowait(_complete_sleep, fence, seq, now)

    async def answer(
        self, run_id: str, key: str, value: bytes, now: float, claimant: str | None = None, lease_seconds: float = 0.0
    ) -> Answered:
        return await self._write(_answer, run_id, key, value, now, claimant, lease_seconds)

    async def cancel(self, run_id: str, now: float) -> tuple[str, str | None] | None:
        return await self._write(_cancel, run_id, now)

    async def flush(self) -> None:
        await self._write(_flush)

    # reads

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self._reader is None:
            raise RuntimeError("the store is closed")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise self._classify(exc) from None

    async def load_run(self, run_id: str) -> RunRow | None:
        rows = await self._fetch(f"SELECT {_RUN} FROM runs WHERE run_id = ?", (run_id,))
        return RunRow._make(rows[0]) if rows else None

    async def load_records(self, run_id: str) -> list[RecordRow]:
        rows = await self._fetch(f"SELECT {_RECORD} FROM records WHERE run_id = ? ORDER BY seq", (run_id,))
        return list(map(RecordRow._make, rows))

    async def load_replay(self, run_id: str) -> list[Recorded]:
        rows = await self._fetch(
            "SELECT seq, kind, name, status, value, error FROM records WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        return list(map(Recorded._make, rows))

    async def changes(self, run_id: str, from_seq: int, changed_after: tuple[float, int]) -> list[RecordRow]:
        rows = await self._fetch(
            f"SELECT {_RECORD} FROM records WHERE run_id = ?1 AND (seq >= ?2 OR (kind IN ('ask', 'sleep')"
            " AND finished_at IS NOT NULL AND (finished_at > ?3 OR (finished_at = ?3 AND seq > ?4))))",
            (run_id, from_seq, *changed_after),
        )
        return list(map(RecordRow._make, rows))

    async def list_runs(self, status: str | None, workflow: str | None, limit: int) -> list[RunRow]:
        rows = await self._fetch(
            f"SELECT {_RUN} FROM runs WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2)"
            " ORDER BY created_at DESC, run_id DESC LIMIT ?3",
            (status, workflow, limit),
        )
        return list(map(RunRow._make, rows))

    async def pending_prompts(self, run_id: str | None) -> list[PromptRow]:
        rows = await self._fetch(
            "SELECT r.run_id, runs.workflow, r.seq, r.name, r.question, r.schema, r.started_at"
            " FROM records AS r JOIN runs ON runs.run_id = r.run_id"
            " WHERE r.status = 'waiting' AND (?1 IS NULL OR r.run_id = ?1) ORDER BY r.started_at, r.run_id",
            (run_id,),
        )
        return list(map(PromptRow._make, rows))

    async def prompt(self, run_id: str, key: str) -> tuple[str, str, str] | None:
        rows = await self._fetch(
            "SELECT r.status, r.schema, runs.workflow FROM records AS r JOIN runs ON runs.run_id = r.run_id"
            " WHERE r.run_id = ? AND r.kind = 'ask' AND r.name = ?",
            (run_id, key),
        )
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    async def held(self, owner: str) -> dict[str, int]:
        rows = await self._fetch("SELECT run_id, epoch FROM runs WHERE owner = ? AND status = 'running'", (owner,))
        return dict(rows)

    async def running_owners(self) -> list[str]:
        rows = await self._fetch("SELECT DISTINCT owner FROM runs WHERE status = 'running' AND owner IS NOT NULL")
        return [r[0] for r in rows]

    async def next_wake(self) -> float | None:
        rows = await self._fetch("SELECT MIN(wake_at) FROM runs WHERE status = 'sleeping'")
        return rows[0][0]

    async def wait_for_change(self, timeout: float, wake: asyncio.Event) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            version = (await self._fetch("PRAGMA data_version"))[0][0]
            if version != self._data_version:
                first = self._data_version is None
                self._data_version = version
                if not first:
                    return True
            remaining = deadline - loop.time()
            if remaining <= 0 or wake.is_set():
                return False
            try:
                await asyncio.wait_for(wake.wait(), min(CHANGE_CHECK_SECONDS, remaining))
                return False
            except TimeoutError:
                pass
