"""The SQLite store's operator writes: retry, fork, pause, resume, prune (run on the writer's connection).

Like :mod:`.sqlite_ops`, each is ``op(conn, *args)`` inside the writer's
transaction, so each is atomic and serialised with every claim and fenced write.
"""

from __future__ import annotations

import sqlite3

from ..codec import failed_step
from .base import ASKED_AGAIN, FINAL, NOT_COPIED, UNHANDLED
from .prompts import ANSWER_COPIED

__all__ = ["fork", "pause", "prune", "reclaim", "resume", "retry"]

# fork(): a race decided before the fork's seq (?3) withdrew this record (see NOT_COPIED).
_DECIDED = (
    "EXISTS (SELECT 1 FROM records AS d, json_each(CAST(d.value AS TEXT), '$.withdrawn') AS w"
    " WHERE d.run_id = records.run_id AND d.kind = 'wait' AND d.status = 'completed' AND d.seq < ?3 AND w.value = records.seq)"
)
_ASIDE = (
    "INSERT INTO set_aside (run_id, seq, kind, name, status, value, error, attempts, started_at, finished_at, set_aside_at)"
)


def retry(conn: sqlite3.Connection, run_id: str, now: float) -> tuple[str, int] | None:
    """Make a failed or blocked run pending again: (its status before, records set aside); None if no such run."""
    row = conn.execute("SELECT status, error, workflow FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    status, error, workflow = row
    if status not in ("failed", "blocked"):
        return status, 0
    # The run's own error, then the records of the step whose failure it was (and later failed steps):
    # kept for audit, no longer replayed, so the step runs again.
    conn.execute(f"{_ASIDE} VALUES (?, -1, 'run', ?, ?, NULL, ?, 1, ?, ?, ?)", (run_id, workflow, status, error, now, now, now))
    seq = failed_step(error) if status == "failed" and error is not None else None
    moved = 0
    if seq is not None:
        where = f"FROM records WHERE run_id = :run_id AND {UNHANDLED.format(records='records', run_id=':run_id', seq=':seq')}"
        args = {"run_id": run_id, "seq": seq, "now": now}
        conn.execute(
            f"{_ASIDE} SELECT run_id, seq, kind, name, status, value, error, attempts, started_at, finished_at, :now {where}",
            args,
        )
        moved = conn.execute(f"DELETE {where}", args).rowcount
    conn.execute(
        "UPDATE runs SET status = 'pending', ready = 'retried', result = NULL, error = NULL, owner = NULL,"
        " lease_until = NULL, wake_at = NULL, deadline = NULL, updated_at = ?, records = MAX(0, records - ?)"
        " WHERE run_id = ?",
        (now, moved, run_id),
    )
    return status, moved


def fork(conn: sqlite3.Connection, run_id: str, new_run_id: str, at_seq: int, now: float) -> str:
    """Copy a run's records before `at_seq` into a new pending run: 'forked', 'missing' or 'exists'."""
    if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (new_run_id,)).fetchone() is not None:
        return "exists"
    # A prompt or receive that waits (or was cancelled with its run) waits anew in the fork, its timeout counted
    # from now; a child run it still waited for is not copied (the fork starts a child of its own there); every
    # other record is copied as it is.
    copied = conn.execute(
        "INSERT INTO records (run_id, seq, kind, name, status, value, error, attempts, started_at, finished_at,"
        f" question, schema, deadline, assignee, answered_by, answered_via) SELECT ?1, seq, kind, name,"
        f" {ASKED_AGAIN.format(now='?4')}, question, schema, deadline - started_at + ?4, {ANSWER_COPIED}"
        f" FROM records WHERE run_id = ?2 AND seq < ?3"
        f" AND NOT {NOT_COPIED.format(decided=_DECIDED)}",
        (new_run_id, run_id, at_seq, now),
    ).rowcount
    inserted = conn.execute(
        "INSERT INTO runs (run_id, workflow, status, args, ready, created_at, updated_at, epoch, records)"
        " SELECT ?1, workflow, 'pending', args, 'forked', ?2, ?2, 0, ?3 FROM runs WHERE run_id = ?4",
        (new_run_id, now, copied, run_id),
    ).rowcount
    if not inserted:
        conn.execute("DELETE FROM records WHERE run_id = ?", (new_run_id,))
        return "missing"
    return "forked"


def pause(conn: sqlite3.Connection, run_id: str, now: float) -> tuple[str, str | None] | None:
    """Pause a run that has not ended: its (status, owner) before; None if there is no such run.

    An executing run keeps its owner and epoch: its steps in flight may still be
    recorded, and its owner stops it at its next ctx call and unloads it 'paused'.
    """
    row = conn.execute("SELECT status, owner FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None or row[0] in FINAL or row[0] in ("blocked", "paused"):
        return row
    conn.execute("UPDATE runs SET status = 'paused', ready = NULL, updated_at = ? WHERE run_id = ?", (now, run_id))
    return row


# What a paused run goes back to: executing (its owner had not stopped it yet), waiting (for a prompt or a
# message, woken at its wake_at), or ready: a worker replays it, and a run that sleeps parks again with its timer
# (wake_at may be stale: the deadline of a prompt answered while the run was paused). A run parked in a race, or
# released while it executed (wake_any), is replayed: its race may have been decided meanwhile.
RESUMED = (
    "CASE WHEN owner IS NOT NULL THEN 'running' WHEN wake_any THEN 'pending'"
    " WHEN EXISTS (SELECT 1 FROM records WHERE run_id = runs.run_id AND status = 'waiting') THEN 'waiting'"
    " ELSE 'pending' END"
)


def resume(conn: sqlite3.Connection, run_id: str, now: float) -> tuple[str, str] | None:
    """Let a paused run go on: (status before, status after); None if there is no such run."""
    row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None or row[0] != "paused":
        return None if row is None else (row[0], row[0])
    after = conn.execute(
        f"UPDATE runs SET status = {RESUMED}, updated_at = ?1 WHERE run_id = ?2 RETURNING status", (now, run_id)
    ).fetchone()[0]
    if after == "pending":
        conn.execute("UPDATE runs SET ready = 'resumed' WHERE run_id = ?", (run_id,))
    return "paused", after


def prune(conn: sqlite3.Connection, before: float, statuses: list[str], limit: int) -> int:
    """Delete up to `limit` ended runs of `statuses` last updated before `before`, with all they own."""
    marks = ", ".join("?" for _ in statuses)
    ids = [r[0] for r in conn.execute(
        f"SELECT run_id FROM runs WHERE status IN ({marks}) AND updated_at < ? LIMIT ?", (*statuses, before, limit)
    )]  # fmt: skip
    if not ids:
        return 0
    chosen = ", ".join("?" for _ in ids)
    for table in ("records", "set_aside", "messages", "prompt_log", "runs"):  # one transaction: no writer between
        deleted = conn.execute(f"DELETE FROM {table} WHERE run_id IN ({chosen})", ids).rowcount
    return deleted


def reclaim(conn: sqlite3.Connection, pages: int) -> bool:
    """Give up to `pages` free pages back to the file system (incremental vacuum); whether more are left to give.

    Only a journal created with incremental auto-vacuum (every journal durable
    creates) shrinks; an older one reuses its free pages for new records instead.
    """
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # 2: INCREMENTAL
        return False
    before = conn.execute("PRAGMA freelist_count").fetchone()[0]
    conn.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
    left = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return 0 < left < before

