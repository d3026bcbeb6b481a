"""The journal on SQLite: schema, migrations, and every SQL statement durable runs.

Two tables. ``runs`` holds one row per run: its workflow, status, arguments,
result or error, and which process owns it (``owner``, with a lease for owners on
other machines). ``records`` holds the journal proper, one row per ctx call,
keyed by ``(run_id, seq)``.

Writes go through the process's single :class:`~durable.writer.Writer` (group
commit); reads use an aiosqlite connection that is query-only. Everything the
engine needs from storage is a method of :class:`Journal`; another backend
implements the same methods.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from typing import Any, NamedTuple

import aiosqlite

from .errors import JournalError
from .writer import Writer

__all__ = ["FINAL", "Journal", "PromptRow", "RecordRow", "Recorded", "RunRow"]

# "DRBL": marks a file as a durable journal, so a foreign database is never touched.
APPLICATION_ID = 0x4452424C
BUSY_TIMEOUT_MS = 10_000
DURABILITY = {"normal": "NORMAL", "full": "FULL"}
FINAL = frozenset({"completed", "failed", "cancelled"})

MIGRATIONS: list[list[str]] = [
    [  # version 1
        """CREATE TABLE runs (
            run_id      TEXT PRIMARY KEY,
            workflow    TEXT NOT NULL,
            status      TEXT NOT NULL,
            args        BLOB NOT NULL,
            result      BLOB,
            error       BLOB,
            owner       TEXT,
            lease_until REAL,
            wake_at     REAL,
            ready       TEXT,
            created_at  REAL NOT NULL,
            updated_at  REAL NOT NULL
        )""",
        "CREATE INDEX runs_by_status ON runs (status, wake_at)",
        "CREATE INDEX runs_by_created ON runs (created_at)",
        "CREATE INDEX runs_by_owner ON runs (owner) WHERE owner IS NOT NULL",
        """CREATE TABLE records (
            run_id      TEXT NOT NULL,
            seq         INTEGER NOT NULL,
            kind        TEXT NOT NULL,
            name        TEXT NOT NULL,
            status      TEXT NOT NULL,
            value       BLOB,
            error       BLOB,
            attempts    INTEGER NOT NULL,
            started_at  REAL NOT NULL,
            finished_at REAL,
            question    TEXT,
            schema      TEXT,
            PRIMARY KEY (run_id, seq)
        ) WITHOUT ROWID""",
        "CREATE INDEX records_waiting ON records (run_id) WHERE status = 'waiting'",
        "CREATE UNIQUE INDEX records_prompt_key ON records (run_id, name) WHERE kind = 'ask'",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

_RUN = "run_id, workflow, status, args, result, error, owner, lease_until, wake_at, created_at, updated_at"
_RECORD = "seq, kind, name, status, value, error, attempts, started_at, finished_at, question, schema"


class RunRow(NamedTuple):
    run_id: str
    workflow: str
    status: str
    args: bytes
    result: bytes | None
    error: bytes | None
    owner: str | None
    lease_until: float | None
    wake_at: float | None
    created_at: float
    updated_at: float


class RecordRow(NamedTuple):
    seq: int
    kind: str
    name: str
    status: str
    value: bytes | None
    error: bytes | None
    attempts: int
    started_at: float
    finished_at: float | None
    question: str | None
    schema: str | None


class Recorded(NamedTuple):
    """What replay needs of a record."""

    seq: int
    kind: str
    name: str
    status: str
    value: bytes | None
    error: bytes | None


class PromptRow(NamedTuple):
    run_id: str
    workflow: str
    seq: int
    key: str
    question: str
    schema: str
    created_at: float


# --- write operations: each runs inside the writer's shared transaction --------

# The time of an in-place change (a prompt answered, cancelled or reopened, a
# sleep done): strictly later than every earlier such change of the run, so the
# order of these times is their commit order and a watcher can resume after one.
_CHANGED_AT = (
    "MAX(:now, COALESCE((SELECT MAX(finished_at) FROM records"
    " WHERE run_id = :run_id AND kind IN ('ask', 'sleep')), 0) + 0.000001)"
)

_APPEND = (
    "INSERT INTO records (run_id, seq, kind, name, status, value, error, attempts,"
    " started_at, finished_at, question, schema)"
    " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12"
    " WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ?1 AND owner = ?13)"
)


def _append(conn: sqlite3.Connection, params: tuple[Any, ...]) -> bool:
    # The owner guard makes a process that lost its claim (cancelled, or taken
    # over after it was presumed dead) unable to write into the run.
    return conn.execute(_APPEND, params).rowcount == 1


_CREATE_RUN = (
    "INSERT INTO runs (run_id, workflow, status, args, owner, lease_until, ready, created_at, updated_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, CASE WHEN ?3 = 'pending' THEN 'submitted' END, ?7, ?8)"
    " ON CONFLICT (run_id) DO NOTHING"
)


def _create_run(conn: sqlite3.Connection, params: tuple[Any, ...]) -> RunRow | None:
    if conn.execute(_CREATE_RUN, params).rowcount == 1:
        return None
    return _select_run(conn, params[0])


def _select_run(conn: sqlite3.Connection, run_id: str) -> RunRow | None:
    row = conn.execute(f"SELECT {_RUN} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else RunRow(*row)


def _claim(conn: sqlite3.Connection, params: tuple[Any, ...]) -> tuple[str, bytes] | None:
    return conn.execute(
        "UPDATE runs SET status = 'running', ready = NULL, owner = ?, lease_until = ?, updated_at = ?"
        " WHERE run_id = ? AND status = ? AND owner IS ? RETURNING workflow, args",
        params,
    ).fetchone()


def _suspend(conn: sqlite3.Connection, params: tuple[Any, ...]) -> str | None:
    # Decided inside the transaction: an answer that arrived while the run was
    # still executing must not leave it 'waiting' for an answer it already has.
    row = conn.execute(
        "UPDATE runs SET status = CASE"
        "   WHEN EXISTS (SELECT 1 FROM records WHERE run_id = ?1 AND status = 'waiting') THEN 'waiting'"
        "   WHEN ?3 IS NOT NULL THEN 'sleeping' ELSE 'pending' END,"
        " wake_at = ?3, owner = NULL, lease_until = NULL, updated_at = ?4"
        " WHERE run_id = ?1 AND owner = ?2 RETURNING status",
        params,
    ).fetchone()
    return None if row is None else row[0]


_FINISH = (
    "UPDATE runs SET status = ?, result = ?, error = ?, owner = NULL, lease_until = NULL,"
    " wake_at = NULL, updated_at = ? WHERE run_id = ? AND owner = ?"
)


def _finish(conn: sqlite3.Connection, params: tuple[Any, ...]) -> bool:
    return conn.execute(_FINISH, params).rowcount == 1


def _answer(
    conn: sqlite3.Connection, run_id: str, key: str, value: bytes, now: float, claim: tuple[str, float] | None
) -> tuple[str | None, bool, bytes | None]:
    cur = conn.execute(
        f"UPDATE records SET status = 'answered', value = :value, finished_at = {_CHANGED_AT}"
        " WHERE run_id = :run_id AND kind = 'ask' AND name = :key AND status = 'waiting'",
        {"value": value, "now": now, "run_id": run_id, "key": key},
    )
    if cur.rowcount == 0:
        row = conn.execute(
            "SELECT status FROM records WHERE run_id = ? AND kind = 'ask' AND name = ?", (run_id, key)
        ).fetchone()
        return (None if row is None else row[0]), False, None
    # The run is ready once no prompt waits. The answering process may take it at
    # once (it has the workflow and room): one commit instead of two.
    owner, lease_until = claim if claim is not None else (None, None)
    row = conn.execute(
        "UPDATE runs SET status = CASE WHEN ?3 IS NULL THEN 'pending' ELSE 'running' END,"
        " ready = CASE WHEN ?3 IS NULL THEN 'answered' END, owner = ?3, lease_until = ?4, updated_at = ?1"
        " WHERE run_id = ?2 AND status = 'waiting'"
        " AND NOT EXISTS (SELECT 1 FROM records WHERE run_id = ?2 AND status = 'waiting') RETURNING args",
        (now, run_id, owner, lease_until),
    ).fetchone()
    if row is None:
        return "waiting", False, None
    return "waiting", True, row[0] if claim is not None else None


def _reopen_prompt(conn: sqlite3.Connection, run_id: str, key: str, owner: str, now: float) -> bool:
    return (
        conn.execute(
            f"UPDATE records SET status = 'waiting', value = NULL, finished_at = {_CHANGED_AT}"
            " WHERE run_id = :run_id AND kind = 'ask' AND name = :key AND status = 'answered'"
            " AND EXISTS (SELECT 1 FROM runs WHERE run_id = :run_id AND owner = :owner)",
            {"run_id": run_id, "key": key, "owner": owner, "now": now},
        ).rowcount
        == 1
    )


def _complete_sleep(conn: sqlite3.Connection, run_id: str, seq: int, owner: str, now: float) -> bool:
    return (
        conn.execute(
            f"UPDATE records SET status = 'completed', finished_at = {_CHANGED_AT}"
            " WHERE run_id = :run_id AND seq = :seq AND status = 'scheduled'"
            " AND EXISTS (SELECT 1 FROM runs WHERE run_id = :run_id AND owner = :owner)",
            {"run_id": run_id, "seq": seq, "owner": owner, "now": now},
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


def _release(conn: sqlite3.Connection, owner: str, run_id: str | None, now: float) -> int:
    return conn.execute(
        "UPDATE runs SET status = 'pending', ready = 'released', owner = NULL, lease_until = NULL, updated_at = ?"
        " WHERE owner = ? AND status = 'running' AND (?3 IS NULL OR run_id = ?3)",
        (now, owner, run_id),
    ).rowcount


def _heartbeat(conn: sqlite3.Connection, owner: str, lease_until: float) -> int:
    return conn.execute("UPDATE runs SET lease_until = ? WHERE owner = ?", (lease_until, owner)).rowcount


# These write with one statement (then at most read), or only read: alone in a
# batch, each may commit on its own, without BEGIN/COMMIT.
for _op in (_select_run, _append, _create_run, _claim, _suspend, _finish, _reopen_prompt, _complete_sleep, _release, _heartbeat):
    _op.autocommit = True  # type: ignore[attr-defined]


def _in_one_statement(sql: str, single: Any, done: Any) -> Any:
    """The batched form of `single`: its rows through one executemany, when every row applies.

    ``many(conn, [args, ...])`` returns each row's result. If a row did not apply
    (an owner guard or a conflict said no), the batch is undone to a savepoint and
    each row is applied alone, so each gets its own answer.
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


def _enable_wal(conn: sqlite3.Connection) -> str:
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if mode.lower() == "wal":
        return mode
    # Switching to WAL needs the file to itself, and SQLite does not wait for
    # that through busy_timeout: retry while another process opens it too.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# --- the journal --------------------------------------------------------------


class Journal:
    """Storage of runs and records in one SQLite file."""

    def __init__(self, path: str, durability: str = "normal") -> None:
        if durability not in DURABILITY:
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        self.path = path
        self.durability = durability
        self._writer: Writer | None = None
        self._reader: aiosqlite.Connection | None = None

    # lifecycle

    async def open(self) -> None:
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            raise JournalError(self.path, "an in-memory database cannot be shared by the writer and readers. Give a file path.")
        await asyncio.to_thread(self._prepare)
        # Direct commits from the event loop only where a commit needs no fsync.
        writer = Writer(
            self._connect_writer,
            inline=self.durability == "normal",
            busy_timeout_ms=BUSY_TIMEOUT_MS,
            checkpoint=(self._connect_checkpointer, _checkpoint),
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

    def _prepare(self) -> None:
        """Check the file is ours (or empty), then create or migrate the schema."""
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise JournalError(self.path, f"the directory {directory!r} does not exist. Create it first.")
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(self.path, f"{exc}. Check the path and its permissions.") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # One snapshot for the whole check: another process may be creating the schema right now.
            conn.execute("BEGIN")
            try:
                self._check_identity(conn)
            finally:
                conn.execute("COMMIT")
            mode = _enable_wal(conn)
            if mode.lower() != "wal":
                raise JournalError(self.path, f"SQLite refused WAL mode (it kept {mode!r}). Use a file on a local disk.")
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    self._check_identity(conn)  # another process may have migrated meanwhile
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    for statements in MIGRATIONS[version:]:
                        for statement in statements:
                            conn.execute(statement)
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except sqlite3.OperationalError as exc:
            raise JournalError(self.path, f"SQLite says {exc!s}. Another program may hold the file locked; try again.") from None
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                self.path, f"SQLite says {exc!s}: the file is corrupt or not a database. Pass another path; durable never overwrites it."
            ) from None
        finally:
            conn.close()

    def _check_identity(self, conn: sqlite3.Connection) -> None:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id == 0:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if tables:
                raise JournalError(
                    self.path,
                    f"it is an SQLite database of another application (tables: {', '.join(sorted(tables)[:5])}). "
                    "Pass a new path; durable never writes into a foreign database.",
                )
        elif app_id != APPLICATION_ID:
            raise JournalError(
                self.path,
                f"it belongs to another application (application_id {app_id:#x}). Pass a new path.",
            )
        elif version > SCHEMA_VERSION:
            raise JournalError(
                self.path,
                f"it was written by a newer durable (schema {version}, this one knows {SCHEMA_VERSION}). Upgrade durable.",
            )

    # writes

    def _write(self, op: Any, *args: Any) -> Any:
        if self._writer is None:
            raise RuntimeError("journal is closed")
        return self._writer.submit(op, *args)

    async def create_run(
        self, run_id: str, workflow: str, args: bytes, status: str, owner: str | None, lease_until: float | None, now: float
    ) -> RunRow | None:
        """Insert a run; return None if inserted, else the run already stored under run_id."""
        return await self._write(_create_run, (run_id, workflow, status, args, owner, lease_until, now, now))

    def ended_run_now(self, run_id: str) -> RunRow | None:
        """The run if it has ended, when that can be read at once (the writer idle); else None.

        An ended run never changes again, so a caller that finds one needs no write.
        None means: not ended, not stored, or not known without waiting.
        """
        if self._writer is None:
            raise RuntimeError("journal is closed")
        _, row = self._writer.read_now(_select_run, run_id)
        return row if row is not None and row.status in FINAL else None

    async def run_after_writes(self, run_id: str) -> RunRow | None:
        """The run as stored once every write queued before this call has committed."""
        return await self._write(_select_run, run_id)

    async def claim(
        self, run_id: str, status: str, previous_owner: str | None, owner: str, lease_until: float, now: float
    ) -> tuple[str, bytes] | None:
        """Take a run still in `status` under `previous_owner` (compare and set): its (workflow, args), or None."""
        return await self._write(_claim, (owner, lease_until, now, run_id, status, previous_owner))

    def append(self, params: tuple[Any, ...]) -> Any:
        """Add a record (an awaitable of True, or False if the owner lost the run)."""
        return self._write(_append, params)

    def append_nowait(self, params: tuple[Any, ...]) -> None:
        """Add a record without waiting; records queued later commit after it."""
        if self._writer is None:
            raise RuntimeError("journal is closed")
        self._writer.submit_nowait(_append, params)

    async def suspend(self, run_id: str, owner: str, wake_at: float | None, now: float) -> str | None:
        """Unload a run: 'waiting' (prompt), 'sleeping' (timer) or 'pending' (ready again)."""
        return await self._write(_suspend, (run_id, owner, wake_at, now))

    async def finish(self, run_id: str, owner: str, status: str, result: bytes | None, error: bytes | None, now: float) -> bool:
        return await self._write(_finish, (status, result, error, now, run_id, owner))

    async def answer(
        self, run_id: str, key: str, value: bytes, now: float, claim: tuple[str, float] | None = None
    ) -> tuple[str | None, bool, bytes | None]:
        """Record an answer once. Return (prompt status before, whether the run became ready, its args if claimed).

        With `claim` = (owner, lease_until), a run the answer makes ready is taken
        by that owner in the same transaction ('running') instead of left 'pending'.
        """
        return await self._write(_answer, run_id, key, value, now, claim)

    async def reopen_prompt(self, run_id: str, key: str, owner: str, now: float) -> bool:
        """Discard an answer the workflow could not use, so the prompt waits again."""
        return await self._write(_reopen_prompt, run_id, key, owner, now)

    def complete_sleep_nowait(self, run_id: str, seq: int, owner: str, now: float) -> None:
        """Mark a sleep done, without waiting: replay needs only its wake-up time."""
        if self._writer is None:
            raise RuntimeError("journal is closed")
        self._writer.submit_nowait(_complete_sleep, run_id, seq, owner, now)

    async def cancel(self, run_id: str, now: float) -> tuple[str, str | None] | None:
        """Cancel a run that has not ended. Return its (status, owner) before, None if unknown."""
        return await self._write(_cancel, run_id, now)

    async def release(self, owner: str, now: float, run_id: str | None = None) -> int:
        """Hand running runs of `owner` back as 'pending' so any worker takes them at once."""
        return await self._write(_release, owner, run_id, now)

    async def heartbeat(self, owner: str, lease_until: float) -> int:
        return await self._write(_heartbeat, owner, lease_until)

    # reads

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self._reader is None:
            raise RuntimeError("journal is closed")
        return list(await self._reader.execute_fetchall(sql, params))

    async def load_run(self, run_id: str) -> RunRow | None:
        rows = await self._fetch(f"SELECT {_RUN} FROM runs WHERE run_id = ?", (run_id,))
        return RunRow(*rows[0]) if rows else None

    async def load_records(self, run_id: str) -> list[RecordRow]:
        rows = await self._fetch(f"SELECT {_RECORD} FROM records WHERE run_id = ? ORDER BY seq", (run_id,))
        return list(map(RecordRow._make, rows))

    async def load_replay(self, run_id: str) -> list[Recorded]:
        """A run's records as replay reads them (the columns it needs, in seq order)."""
        rows = await self._fetch(
            "SELECT seq, kind, name, status, value, error FROM records WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        return list(map(Recorded._make, rows))

    async def changes(self, run_id: str, from_seq: int, changed_after: tuple[float, int]) -> list[RecordRow]:
        """Records at `from_seq` or later, and prompts/sleeps before it changed after (time, seq)."""
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

    async def prompt_schema(self, run_id: str, key: str) -> tuple[str, str, str] | None:
        """The (status, schema, workflow) of a prompt, or None if the run never asked it."""
        rows = await self._fetch(
            "SELECT r.status, r.schema, runs.workflow FROM records AS r JOIN runs ON runs.run_id = r.run_id"
            " WHERE r.run_id = ? AND r.kind = 'ask' AND r.name = ?",
            (run_id, key),
        )
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    async def ready(self, now: float) -> list[tuple[str, str, str, str | None, str | None]]:
        """Runs a worker may take now: ready ('pending') or with a due timer."""
        return await self._fetch(
            "SELECT run_id, workflow, status, owner, ready FROM runs"
            " WHERE status = 'pending' OR (status = 'sleeping' AND wake_at <= ?)",
            (now,),
        )

    async def running_owners(self) -> list[tuple[str, float | None]]:
        """Each owner of running runs, with its lease."""
        return await self._fetch(
            "SELECT owner, MAX(lease_until) FROM runs WHERE status = 'running' AND owner IS NOT NULL GROUP BY owner"
        )

    async def runs_of(self, owner: str) -> list[tuple[str, str]]:
        """(run_id, workflow) of the running runs of one owner."""
        return await self._fetch("SELECT run_id, workflow FROM runs WHERE owner = ? AND status = 'running'", (owner,))

    async def next_wake(self) -> float | None:
        rows = await self._fetch("SELECT MIN(wake_at) FROM runs WHERE status = 'sleeping'")
        return rows[0][0]

    async def owned(self, owner: str) -> set[str]:
        rows = await self._fetch("SELECT run_id FROM runs WHERE owner = ?", (owner,))
        return {r[0] for r in rows}

    async def data_version(self) -> int:
        """A number that changes whenever another connection commits to the file."""
        rows = await self._fetch("PRAGMA data_version")
        return rows[0][0]
