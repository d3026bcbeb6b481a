"""Opening an SQLite journal: the file is ours (or empty), in WAL mode, at our schema version.

A durable journal is marked with ``PRAGMA application_id`` and versioned with
``PRAGMA user_version``; a foreign database, a file that is not a database or
one written by a newer durable is refused with its name and never written to.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse

from ..errors import JournalError
from .base import IN_PLACE, IN_PLACE_BEFORE_RACES

__all__ = ["APPLICATION_ID", "BUSY_TIMEOUT_MS", "MIGRATIONS", "SCHEMA_VERSION", "open_read_only", "prepare"]

# "DRBL": marks a file as a durable journal, so a foreign database is never touched.
APPLICATION_ID = 0x4452424C
BUSY_TIMEOUT_MS = 10_000

# When a child ends, its outcome fills the parent's record and the parent, if waiting, becomes ready: when nothing
# else it waits for is left ({wakes}). Its time is later than the run's in-place changes before ({kinds}).
CHILD_ENDED = (
    """CREATE TRIGGER child_ended AFTER UPDATE OF {event} ON runs
            WHEN NEW.parent IS NOT NULL AND NEW.status IN ('completed', 'failed', 'cancelled')
                AND OLD.status NOT IN ('completed', 'failed', 'cancelled')
            BEGIN
                UPDATE records SET status = NEW.status, value = NEW.result, error = NEW.error,
                    finished_at = MAX(NEW.updated_at, COALESCE((SELECT MAX(e.finished_at) FROM records AS e
                        WHERE e.run_id = NEW.parent AND e.kind IN {kinds}), 0) + 0.000001)
                    WHERE run_id = NEW.parent AND seq = NEW.parent_seq AND kind = 'child' AND status = 'waiting';
                UPDATE runs SET status = 'pending', ready = 'answered', wake_at = NULL, updated_at = NEW.updated_at
                    WHERE run_id = NEW.parent AND status = 'waiting'
                    AND {wakes};
            END"""
)
ALL_FILLED = "NOT EXISTS (SELECT 1 FROM records WHERE run_id = NEW.parent AND status = 'waiting')"
# A run that ends, however it ends, cancels its unfinished children (and, through them, theirs:
# the writer's connection sets recursive_triggers).
PARENT_ENDED = """CREATE TRIGGER parent_ended AFTER UPDATE OF {event} ON runs
        WHEN NEW.children > 0 AND NEW.status IN ('completed', 'failed', 'cancelled')
            AND OLD.status NOT IN ('completed', 'failed', 'cancelled')
        BEGIN
            UPDATE records SET status = 'cancelled', finished_at = NEW.updated_at
                WHERE status = 'waiting' AND run_id IN (SELECT run_id FROM runs
                    WHERE parent = NEW.run_id AND status NOT IN ('completed', 'failed', 'cancelled'));
            UPDATE runs SET status = 'cancelled',{ended} owner = NULL, lease_until = NULL, wake_at = NULL,
                updated_at = NEW.updated_at
                WHERE parent = NEW.run_id AND status NOT IN ('completed', 'failed', 'cancelled');
        END"""

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
    [  # version 2: every claim bumps the run's epoch (fenced writes check owner and epoch);
        # each run keeps how many records it had when it last parked or ended, to find lost ones
        "ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN records INTEGER NOT NULL DEFAULT 0",
    ],
    [  # version 3: what retry() sets aside (a run's error, the records of the step that failed it), kept for audit
        """CREATE TABLE set_aside (
            id           INTEGER PRIMARY KEY,
            run_id       TEXT NOT NULL,
            seq          INTEGER NOT NULL,
            kind         TEXT NOT NULL,
            name         TEXT NOT NULL,
            status       TEXT NOT NULL,
            value        BLOB,
            error        BLOB,
            attempts     INTEGER NOT NULL,
            started_at   REAL NOT NULL,
            finished_at  REAL,
            set_aside_at REAL NOT NULL
        )""",
        "CREATE INDEX set_aside_by_run ON set_aside (run_id, seq)",
        # and a prompt's deadline (ctx.ask(timeout=...)): when it expires unanswered
        "ALTER TABLE records ADD COLUMN deadline REAL",
    ],
    [  # version 4: messages sent to runs (app.send): kept until a ctx.receive takes one (`seq`: the receive's record)
        """CREATE TABLE messages (
            id      INTEGER PRIMARY KEY,
            run_id  TEXT NOT NULL,
            topic   TEXT NOT NULL,
            value   BLOB NOT NULL,
            sent_at REAL NOT NULL,
            seq     INTEGER
        )""",
        "CREATE INDEX messages_queued ON messages (run_id, topic, id) WHERE seq IS NULL",
        "CREATE INDEX messages_by_run ON messages (run_id)",
        # and a run's deadline (@app.workflow(timeout=...)): past it the run ends failed, RunTimedOut
        "ALTER TABLE runs ADD COLUMN deadline REAL",
        # and child runs (ctx.child): the parent and the seq of its record; when a child ends, its outcome fills
        # that record and the parent becomes ready, in the child's own commit (so it is never lost)
        "ALTER TABLE runs ADD COLUMN parent TEXT",
        "ALTER TABLE runs ADD COLUMN parent_seq INTEGER",
        "ALTER TABLE runs ADD COLUMN children INTEGER NOT NULL DEFAULT 0",  # how many children it started: only such a run cancels any when it ends
        "CREATE INDEX runs_by_parent ON runs (parent) WHERE parent IS NOT NULL",
        CHILD_ENDED.format(event="status", wakes=ALL_FILLED, kinds=IN_PLACE_BEFORE_RACES),
        PARENT_ENDED.format(event="status", ended=""),
    ],
    [  # version 5: ctx.wait and ctx.as_completed: a run unloaded in a race wakes at the first of its waits filled
        "ALTER TABLE runs ADD COLUMN wake_any INTEGER NOT NULL DEFAULT 0",
        "DROP TRIGGER child_ended",
        CHILD_ENDED.format(event="status", wakes=f"(wake_any OR {ALL_FILLED})", kinds=IN_PLACE),
    ],
    [  # version 6: queues (durable.Queue): a run's queue and key, its priority, when it may start (submit(delay=)),
        # when it first started (a queue's rate counts starts), and its debounce
        "ALTER TABLE runs ADD COLUMN queue TEXT",
        "ALTER TABLE runs ADD COLUMN queue_key TEXT",
        "ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN not_before REAL",
        "ALTER TABLE runs ADD COLUMN started_at REAL",
        "ALTER TABLE runs ADD COLUMN debounce REAL",  # submit(debounce=...): later submits of its key move it on
        "CREATE INDEX runs_by_queue ON runs (queue, status) WHERE queue IS NOT NULL",
        "CREATE INDEX runs_started ON runs (queue, started_at) WHERE queue IS NOT NULL",
    ],
    [  # version 7: schedules (@app.schedule): each one's cursor, the time up to which its slots are handled
        """
        CREATE TABLE schedules (
            name        TEXT PRIMARY KEY,
            workflow    TEXT NOT NULL,
            cron        TEXT NOT NULL,
            timezone    TEXT NOT NULL,
            cursor      REAL NOT NULL,
            last_slot   REAL,
            paused      INTEGER NOT NULL DEFAULT 0,
            updated_at  REAL NOT NULL
        )
        """,
    ],
    [  # version 8: a prompt's assignee; who answered it and how; the prompt log (store/prompts.py), append-only
        "ALTER TABLE records ADD COLUMN assignee TEXT",
        "ALTER TABLE records ADD COLUMN answered_by TEXT",
        "ALTER TABLE records ADD COLUMN answered_via TEXT",
        """
        CREATE TABLE prompt_log (
            id      INTEGER PRIMARY KEY,
            run_id  TEXT NOT NULL,
            seq     INTEGER NOT NULL,
            key     TEXT NOT NULL,
            action  TEXT NOT NULL,
            value   BLOB,
            who     TEXT,
            via     TEXT NOT NULL,
            at      REAL NOT NULL
        )
        """,
        "CREATE INDEX prompt_log_by_run ON prompt_log (run_id, id)",
        """
        CREATE TRIGGER prompt_log_is_final BEFORE UPDATE ON prompt_log
        BEGIN SELECT RAISE(ABORT, 'durable: the prompt log only grows: a recorded answer is never changed'); END
        """,
    ],
    [  # version 9: the triggers that tell a run's parent and children it ended fire on `ended`, which only the writes
        # ending a run that has either set (sqlite_ops.finish, cancel, and the cascade itself). A trigger on `status`
        # cost every run's last UPDATE about 8 µs, and most runs have neither.
        "ALTER TABLE runs ADD COLUMN ended INTEGER NOT NULL DEFAULT 0",
        "DROP TRIGGER child_ended",
        "DROP TRIGGER parent_ended",
        CHILD_ENDED.format(event="ended", wakes=f"(wake_any OR {ALL_FILLED})", kinds=IN_PLACE),
        PARENT_ENDED.format(event="ended", ended=" ended = 1,"),
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
# The oldest schema whose runs and records check() can replay, read-only (a journal of the durable before this one),
# and the schema that added runs.deadline (read as NULL from an older one).
REPLAYS_FROM = 2
RUN_DEADLINE_FROM = 4


def prepare(path: str) -> None:
    """Check the file is ours (or empty), then create or migrate the schema; raise JournalError if not."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise JournalError(path, f"the directory {directory!r} does not exist. Create it first.")
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise JournalError(path, f"{exc}. Check the path and its permissions.") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # One snapshot for the whole check: another process may be creating the schema right now.
        conn.execute("BEGIN")
        try:
            check_identity(conn, path)
        finally:
            conn.execute("COMMIT")
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            # A new file: pages freed by prune() can be given back (incremental vacuum); set before anything is written.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = _enable_wal(conn)
        if mode.lower() != "wal":
            raise JournalError(path, f"SQLite refused WAL mode (it kept {mode!r}). Use a file on a local disk.")
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                check_identity(conn, path)  # another process may have migrated meanwhile
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
        raise JournalError(path, _why_not_opened(path, exc)) from None
    except sqlite3.DatabaseError as exc:
        raise JournalError(
            path, f"SQLite says {exc!s}: the file is corrupt or not a database. Pass another path; durable never overwrites it."
        ) from None
    finally:
        conn.close()


def read_only_location(path: str) -> bool:
    """Whether durable may not write the journal (or its -wal and -shm files) where it is."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        pass
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return True
    return not os.access(directory, os.W_OK)


def _why_not_opened(path: str, exc: sqlite3.OperationalError) -> str:
    """What really stopped SQLite, in words a person can act on."""
    text = str(exc)
    if read_only_location(path):
        return (
            f"SQLite says {text}: the file or its directory is read-only (a read-only mount or permissions), "
            "and durable writes the journal and its -wal and -shm files there. Make them writable; to only look "
            "at it, use durable runs/show/prompts, which open it read-only."
        )
    if "locked" in text or "busy" in text:
        return f"SQLite says {text}: another program holds the file locked. Try again when it lets go."
    if "full" in text:
        return f"SQLite says {text}: the disk is full. Free some space and try again."
    return f"SQLite says {text}. Check the path and its permissions."


def check_identity(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a file of another application or of a newer durable."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id == 0:
        # Any object at all (a view, a trigger, not only a table) makes it someone else's database.
        objects = [f"{r[0]} {r[1]}" for r in conn.execute("SELECT type, name FROM sqlite_master ORDER BY type, name")]
        if objects:
            raise JournalError(
                path,
                f"it is an SQLite database of another application ({', '.join(objects[:5])}). "
                "Pass a new path; durable never writes into a foreign database.",
            )
    elif app_id != APPLICATION_ID:
        raise JournalError(path, f"it belongs to another application (application_id {app_id:#x}). Pass a new path.")
    elif version > SCHEMA_VERSION:
        raise JournalError(
            path, f"it was written by a newer durable (schema {version}, this one knows {SCHEMA_VERSION}). Upgrade durable."
        )


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


def read_only_uri(path: str, immutable: bool = False) -> str:
    quoted = urllib.parse.quote(os.path.abspath(path))
    return f"file:{quoted}?mode=ro" + ("&immutable=1" if immutable else "")


def open_read_only(path: str, older_ok: bool = False) -> tuple[str, int]:
    """Check a journal that is only to be read; return the URI to read it with. Never writes to it.

    A journal in WAL mode is normally read through its -shm file, which a
    read-only directory or mount does not let SQLite create. When no -wal file
    is there (a journal closed cleanly), nothing can be missing from the
    database file and it is read as immutable instead.
    """
    if not os.path.exists(path):
        raise JournalError(path, "there is no such file. Check the path.")
    uri = read_only_uri(path)
    wal = f"{path}-wal"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            conn.close()
            if os.path.exists(wal) and os.path.getsize(wal) > 0:
                raise JournalError(
                    path,
                    "it cannot be read where it is: its write-ahead log (-wal) holds commits, and reading them needs "
                    "a directory durable may write to. Copy the journal with its -wal and -shm files somewhere "
                    "writable and read the copy.",
                ) from None
            uri = read_only_uri(path, immutable=True)
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            check_identity(conn, path)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise JournalError(
            path, f"SQLite says {exc!s}: the file is damaged or not a database. Restore it from a backup."
        ) from None
    if version == 0:
        raise JournalError(path, "it holds no durable journal yet: there is nothing to read.")
    if version < (REPLAYS_FROM if older_ok else SCHEMA_VERSION):
        raise JournalError(
            path,
            f"it was written by an older durable (schema {version}); open it once with write access, "
            "which migrates it, then read it.",
        )
    return uri, version
