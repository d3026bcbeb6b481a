"""Opening an SQLite journal: the file is ours (or empty), in WAL mode, at our schema version.

A durable journal is marked with ``PRAGMA application_id`` and versioned with
``PRAGMA user_version``; a foreign database, a file that is not a database or
one written by a newer durable is refused with its name and never written to.
"""

from __future__ import annotations

import os
import sqlite3
import time

from ..errors import JournalError

__all__ = ["APPLICATION_ID", "BUSY_TIMEOUT_MS", "MIGRATIONS", "SCHEMA_VERSION", "prepare"]

# "DRBL": marks a file as a durable journal, so a foreign database is never touched.
APPLICATION_ID = 0x4452424C
BUSY_TIMEOUT_MS = 10_000

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
    [  # version 2: every claim bumps the run's epoch; fenced writes check owner and epoch
        "ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


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
        raise JournalError(path, f"SQLite says {exc!s}. Another program may hold the file locked; try again.") from None
    except sqlite3.DatabaseError as exc:
        raise JournalError(
            path, f"SQLite says {exc!s}: the file is corrupt or not a database. Pass another path; durable never overwrites it."
        ) from None
    finally:
        conn.close()


def check_identity(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a file of another application or of a newer durable."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id == 0:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if tables:
            raise JournalError(
                path,
                f"it is an SQLite database of another application (tables: {', '.join(sorted(tables)[:5])}). "
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
