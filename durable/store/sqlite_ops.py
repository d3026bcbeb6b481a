"""Every write the SQLite store makes: one function per operation, run on the writer's connection.

Each operation is ``op(conn, *args)`` (see :mod:`.batch` for its attributes),
applied inside the writer's shared transaction. SQLite serialises writers, so
a fenced write (an INSERT or UPDATE whose WHERE checks the run's owner and
epoch) can never interleave with a claim.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from typing import Any

from .base import FINAL, IN_PLACE, Answered, Claimed, Fence, RunRow
from .queues import Limits, QueueLoad, pick

__all__ = [
    "CHANGED_AT", "CLAIMABLE", "RECORD", "RUN", "answer", "append", "append_bare", "cancel", "checkpoint", "claim", "claim_ready",
    "complete_sleep", "create_placed", "create_run", "expire", "finish", "ready_if_none_waits", "flush", "park", "release", "renew", "reassign", "reopen_prompt", "replace",
    "select_run",
]  # fmt: skip

NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # the store's clock, in seconds since the epoch
RUN = (
    "run_id, workflow, status, args, result, error, owner, epoch, lease_until, wake_at, created_at, updated_at, records,"
    " deadline, parent"
)
# The same, from a journal older than the schema that added a run's deadline and parent (read-only, for check()).
RUN_BEFORE_CHILDREN = RUN.replace(", deadline, parent", ", NULL, NULL")
RECORD = (
    "seq, kind, name, status, value, error, attempts, started_at, finished_at, question, schema, deadline, assignee,"
    " answered_by, answered_via"
)

# The time of an in-place change (a prompt answered, cancelled or reopened, a
# sleep done): strictly later than every earlier such change of the run, so the
# order of these times is their commit order and a watcher can resume after one.
CHANGED_AT = (
    "MAX(:now, COALESCE((SELECT MAX(finished_at) FROM records"
    f" WHERE run_id = :run_id AND kind IN {IN_PLACE}), 0) + 0.000001)"
)
_FENCED = "EXISTS (SELECT 1 FROM runs WHERE run_id = :run_id AND owner = :owner AND epoch = :epoch)"

# --- write operations: each runs on the writer's connection, inside its shared transaction ---

# An append's parameters are the fence, then the record: `fence + record`, one tuple made in C.
_APPEND = (
    "INSERT INTO records (run_id, seq, kind, name, status, value, error, attempts,"
    " started_at, finished_at, question, schema, deadline, assignee, answered_by, answered_via)"
    " SELECT ?1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18"
    " WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ?1 AND owner = ?2 AND epoch = ?3)"
)


def append(conn: sqlite3.Connection, params: tuple[Any, ...]) -> bool:
    return conn.execute(_APPEND, params).rowcount == 1


# The same for a record with none of a prompt's or an answer's fields (a step's, a sleep's, ...): four parameters
# fewer to bind, which a thousand runs stepping at once notice.
_APPEND_BARE = (
    "INSERT INTO records (run_id, seq, kind, name, status, value, error, attempts, started_at, finished_at)"
    " SELECT ?1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12"
    " WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ?1 AND owner = ?2 AND epoch = ?3)"
)


def append_bare(conn: sqlite3.Connection, params: tuple[Any, ...]) -> bool:
    return conn.execute(_APPEND_BARE, params).rowcount == 1


_REPLACE = (
    _APPEND
    + " ON CONFLICT (run_id, seq) DO UPDATE SET status = excluded.status, value = excluded.value,"
    " error = excluded.error, attempts = excluded.attempts, finished_at = excluded.finished_at"
    " WHERE records.status = 'retrying'"
)


def replace(conn: sqlite3.Connection, params: tuple[Any, ...]) -> bool:
    return conn.execute(_REPLACE, params).rowcount == 1


_CREATE_RUN = (
    "INSERT INTO runs (run_id, workflow, status, args, owner, epoch, lease_until, ready, created_at, updated_at, deadline)"
    " VALUES (?1, ?2, CASE WHEN ?4 IS NULL THEN 'pending' ELSE 'running' END, ?3, ?4,"
    f" CASE WHEN ?4 IS NULL THEN 0 ELSE 1 END, CASE WHEN ?4 IS NOT NULL THEN {NOW} + ?5 END,"
    " CASE WHEN ?4 IS NULL THEN 'submitted' END, ?6, ?6, ?7)"
    " ON CONFLICT (run_id) DO NOTHING"
)


def create_run(conn: sqlite3.Connection, params: tuple[Any, ...]) -> RunRow | None:
    if conn.execute(_CREATE_RUN, params).rowcount == 1:
        return None
    return select_run(conn, params[0])


def create_placed(conn: sqlite3.Connection, params: tuple[Any, ...]) -> RunRow | None:
    """A pending run on a queue, with a key, a priority, or a time before which it does not start; else as create_run.

    Debounced (?10), it is the run of the same workflow and key not started yet, if there is one: that one takes
    these arguments and starts ?10 seconds from now (RunRow of it returned).
    """
    if params[9] is not None:
        moved = conn.execute(f"{DEBOUNCE} RETURNING run_id", params).fetchone()
        if moved is not None:
            return select_run(conn, moved[0])
    inserted = conn.execute(
        "INSERT INTO runs (run_id, workflow, status, args, ready, created_at, updated_at, epoch, deadline, queue,"
        " queue_key, priority, not_before, debounce)"
        " VALUES (?1, ?2, 'pending', ?3, 'submitted', ?4, ?4, 0, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (run_id) DO NOTHING",
        params,
    ).rowcount
    return None if inserted else select_run(conn, params[0])


# A debounced submit: the pending run of its workflow and key that never started takes the new arguments.
DEBOUNCE = (
    "UPDATE runs SET args = ?3, updated_at = ?4, deadline = ?5, queue = ?6, priority = ?8, not_before = ?9,"
    " debounce = ?10 WHERE run_id = (SELECT run_id FROM runs WHERE workflow = ?2 AND queue_key IS ?7"
    " AND debounce IS NOT NULL AND status = 'pending' AND epoch = 0 ORDER BY created_at LIMIT 1)"
)


def select_run(conn: sqlite3.Connection, run_id: str) -> RunRow | None:
    row = conn.execute(f"SELECT {RUN} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else RunRow._make(row)


def flush(conn: sqlite3.Connection) -> None:
    pass


def claim(
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
        f"UPDATE runs SET status = 'running', ready = NULL, owner = ?1, epoch = epoch + 1, lease_until = {NOW} + ?2,"
        " updated_at = ?3 WHERE run_id = ?4 AND status = ?5 AND owner IS ?6 AND queue IS NULL"
        f" AND (status <> 'running' OR ?7 OR lease_until IS NULL OR lease_until < {NOW})"
        " RETURNING workflow, args, epoch, records, deadline",
        (claimant, lease, now, run_id, status, owner, owner_dead),
    ).fetchone()
    return None if row is None else Claimed(run_id, row[0], row[1], row[2], status, owner, None, row[3], row[4])


CLAIMABLE = (
    "workflow IN (SELECT value FROM json_each(:workflows)) AND ("
    f" (status = 'running' AND owner IS NOT :me AND (lease_until IS NULL OR lease_until < {NOW}"
    "  OR owner IN (SELECT value FROM json_each(:dead))))"
    " OR (status = 'pending' AND (not_before IS NULL OR not_before <= :now))"
    " OR (status IN ('sleeping', 'waiting') AND wake_at <= :now))"
)
_CANDIDATE = "run_id, workflow, args, epoch, status, owner, ready, records, deadline"
_CLAIM = (
    f"UPDATE runs SET status = 'running', ready = NULL, owner = ?, epoch = epoch + 1, lease_until = {NOW} + ?,"
    " updated_at = ?, started_at = COALESCE(started_at, ?) WHERE run_id = ?"
)


def claim_ready(
    conn: sqlite3.Connection, claimant: str, workflows: str, dead: str, limit: int, lease: float, now: float,
    queues: dict[str, Limits] | None = None,
) -> list[Claimed]:
    # Read and update in one transaction: the writer holds SQLite's write lock
    # throughout, so no other process can claim these rows (or count a queue's runs) in between.
    params = {"workflows": workflows, "me": claimant, "dead": dead, "now": now, "limit": limit}
    rows = conn.execute(
        f"SELECT {_CANDIDATE} FROM runs WHERE {CLAIMABLE} AND queue IS NULL"
        # Orphans first (already started, maybe holding resources), new submissions last.
        " ORDER BY CASE WHEN status = 'running' THEN 0 WHEN ready IS 'submitted' THEN 2 ELSE 1 END, updated_at"
        " LIMIT :limit",
        params,
    ).fetchall()
    for name, limits in sorted((queues or {}).items()):
        room = limit - len(rows)
        if room <= 0:
            break
        candidates = conn.execute(
            f"SELECT {_CANDIDATE}, status, queue_key, started_at FROM runs WHERE {CLAIMABLE} AND queue = :queue"
            " ORDER BY CASE WHEN status = 'running' THEN 0 ELSE 1 END, priority DESC, updated_at LIMIT :room",
            {**params, "queue": name, "room": room + 64},
        ).fetchall()
        if candidates:
            rows += [row[:9] for row in pick(candidates, limits, queue_load(conn, name, claimant, limits, now), room)]
    if not rows:
        return []
    conn.executemany(_CLAIM, [(claimant, lease, now, now, row[0]) for row in rows])
    return [Claimed(r[0], r[1], r[2], r[3] + 1, r[4], r[5], r[6], r[7], r[8]) for r in rows]


def queue_load(conn: sqlite3.Connection, queue: str, claimant: str, limits: Limits, now: float) -> QueueLoad:
    """What `queue` holds now: its executing runs (by key, and this claimant's), its starts in its rate window."""
    executing = conn.execute(
        "SELECT queue_key, owner = ?, count(*) FROM runs WHERE queue = ? AND status = 'running' GROUP BY 1, 2",
        (claimant, queue),
    ).fetchall()
    started = 0
    if limits.rate is not None:
        since = now - limits.rate[1]
        started = conn.execute("SELECT count(*) FROM runs WHERE queue = ? AND started_at > ?", (queue, since)).fetchone()[0]
    return QueueLoad.of(executing, started)


def renew(conn: sqlite3.Connection, owner: str, lease: float) -> dict[str, tuple[int, bool]]:
    rows = conn.execute(
        f"UPDATE runs SET lease_until = {NOW} + ? WHERE owner = ? AND status IN ('running', 'paused')"
        " RETURNING run_id, epoch, status = 'paused'",
        (lease, owner),
    ).fetchall()
    return {run_id: (epoch, bool(paused)) for run_id, epoch, paused in rows}


# The records of a run that wait, through their partial index: without statistics the planner prefers the
# primary key's run_id prefix, which reads every record of the run (all 10,000 of a long run, several times a park).
WAITING = "records INDEXED BY records_waiting"


def soonest(a: str, b: str) -> str:
    """The earlier of two times, either of which may be NULL (NULL only when both are)."""
    return f"MIN(COALESCE({a}, {b}), COALESCE({b}, {a}))"


def park(conn: sqlite3.Connection, params: tuple[Any, ...]) -> str | None:
    # Decided inside the transaction: an answer that arrived while the run was
    # still executing must not leave it 'waiting' for an answer it already has;
    # nor a run that wakes at its first wait filled (wake_any) one of whose waits was.
    # ?8: the seqs it waits at (JSON), ?9: whether branches of a race wait among them.
    waits = f"EXISTS (SELECT 1 FROM {WAITING} WHERE run_id = ?1 AND status = 'waiting')"
    among = "seq IN (SELECT value FROM json_each(?8))"
    # A race, or waits the run no longer makes (left by an abandoned ctx.as_completed): the first filled wakes it.
    wake_any = f"(?9 OR (?8 IS NOT NULL AND EXISTS (SELECT 1 FROM {WAITING} WHERE run_id = ?1 AND status = 'waiting' AND NOT {among})))"
    raced = f"({wake_any} AND EXISTS (SELECT 1 FROM records WHERE run_id = ?1 AND {among} AND status <> 'waiting'))"
    row = conn.execute(
        f"UPDATE runs SET status = CASE WHEN status = 'paused' THEN 'paused' WHEN {raced} THEN 'pending'"
        f"   WHEN {waits} THEN 'waiting' WHEN ?4 IS NOT NULL THEN 'sleeping' ELSE 'pending' END,"
        f" ready = CASE WHEN status <> 'paused' AND ({raced} OR (?4 IS NULL AND NOT {waits})) THEN 'answered' END,"
        # A waiting run wakes at its prompts' earliest deadline too, and any run at its own deadline
        # (the soonest of these; any may be NULL).
        f" wake_at = CASE WHEN {waits} THEN {soonest(soonest('?4', '?7'), 'deadline')} ELSE {soonest('?4', 'deadline')} END,"
        f" wake_any = {wake_any},"
        " owner = NULL, lease_until = NULL, updated_at = ?5, records = MAX(records, ?6)"
        " WHERE run_id = ?1 AND owner = ?2 AND epoch = ?3 RETURNING status",
        params,
    ).fetchone()
    return None if row is None else row[0]


# A run ends in one of two statements: _FINISH_ALONE where it has no parent and no children (most runs), which no
# trigger watches; else _FINISH, whose `ended = 1` fires the triggers that tell them (sqlite_schema, version 9).
_ENDING = (
    "UPDATE runs SET status = ?1, result = ?2, error = ?3, owner = NULL, lease_until = NULL,"
    " wake_at = NULL, updated_at = ?4, records = MAX(records, ?8)"
)
_FINISH_FENCE = " WHERE run_id = ?5 AND owner = ?6 AND epoch = ?7"
_FINISH_ALONE = _ENDING + _FINISH_FENCE + " AND parent IS NULL AND children = 0"
_FINISH = _ENDING + ", ended = 1" + _FINISH_FENCE


def finish(conn: sqlite3.Connection, params: tuple[Any, ...]) -> bool:
    return conn.execute(_FINISH_ALONE, params).rowcount == 1 or conn.execute(_FINISH, params).rowcount == 1


def answer(
    conn: sqlite3.Connection, run_id: str, key: str, value: bytes, now: float, claimant: str | None, lease: float,
    by: str | None, via: str,
) -> Answered:
    answered = conn.execute(
        f"UPDATE records SET status = 'answered', value = :value, finished_at = {CHANGED_AT},"
        " answered_by = :by, answered_via = :via"
        " WHERE run_id = :run_id AND kind = 'ask' AND name = :key AND status = 'waiting'"
        " AND (deadline IS NULL OR deadline > :now) RETURNING seq",
        {"value": value, "now": now, "run_id": run_id, "key": key, "by": by, "via": via},
    ).fetchone()
    if answered is None:
        row = conn.execute(
            "SELECT CASE WHEN status = 'waiting' AND deadline <= ? THEN 'expired' ELSE status END"
            " FROM records WHERE run_id = ? AND kind = 'ask' AND name = ?",
            (now, run_id, key),
        ).fetchone()
        return Answered(None if row is None else row[0], False, None)
    log_prompt(conn, run_id, answered[0], key, "answered", value, by, via, now)
    return Answered("waiting", *ready_if_none_waits(conn, run_id, now, claimant, lease))


def ready_if_none_waits(
    conn: sqlite3.Connection, run_id: str, now: float, claimant: str | None, lease: float
) -> tuple[bool, Claimed | None]:
    """After an answer or a delivered message: a waiting run none of whose records waits any more is ready
    (one unloaded in a race, ``wake_any``: at the first).

    The process that answered may take it at once (it has the workflow and
    room): one commit instead of two. Returns (ready, the claim if taken).
    """
    row = conn.execute(
        # A run on a queue goes back to its queue: only a claim that counts the queue's runs takes it.
        "UPDATE runs SET status = CASE WHEN ?3 IS NULL OR queue IS NOT NULL THEN 'pending' ELSE 'running' END,"
        " ready = CASE WHEN ?3 IS NULL OR queue IS NOT NULL THEN 'answered' END,"
        " owner = CASE WHEN queue IS NULL THEN ?3 END, wake_at = NULL,"
        " epoch = epoch + (?3 IS NOT NULL AND queue IS NULL),"
        f" lease_until = CASE WHEN ?3 IS NOT NULL AND queue IS NULL THEN {NOW} + ?4 END, updated_at = ?1"
        " WHERE run_id = ?2 AND status = 'waiting'"
        f" AND (wake_any OR NOT EXISTS (SELECT 1 FROM {WAITING} WHERE run_id = ?2 AND status = 'waiting'))"
        " RETURNING workflow, args, epoch, records, deadline, owner",
        (now, run_id, claimant, lease),
    ).fetchone()
    if row is None:
        return False, None
    claimed = Claimed(run_id, row[0], row[1], row[2], "waiting", None, "answered", row[3], row[4])
    return True, None if row[5] is None else claimed


def log_prompt(
    conn: sqlite3.Connection, run_id: str, seq: int, key: str, action: str, value: bytes | None, by: str | None,
    via: str, now: float,
) -> None:
    conn.execute(
        "INSERT INTO prompt_log (run_id, seq, key, action, value, who, via, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, seq, key, action, value, by, via, now),
    )


def reassign(
    conn: sqlite3.Connection, run_id: str, key: str, assignee: str | None, now: float, by: str | None, via: str
) -> str | None:
    moved = conn.execute(
        "UPDATE records SET assignee = ?3 WHERE run_id = ?1 AND kind = 'ask' AND name = ?2 AND status = 'waiting'"
        " RETURNING seq",
        (run_id, key, assignee),
    ).fetchone()
    if moved is None:
        row = conn.execute("SELECT status FROM records WHERE run_id = ? AND kind = 'ask' AND name = ?", (run_id, key)).fetchone()
        return None if row is None else row[0]
    log_prompt(conn, run_id, moved[0], key, "reassigned", json.dumps(assignee).encode(), by, via, now)
    return "waiting"


def reopen_prompt(conn: sqlite3.Connection, fence: Fence, key: str, now: float) -> bool:
    return (
        conn.execute(
            f"UPDATE records SET status = 'waiting', value = NULL, answered_by = NULL, answered_via = NULL,"
            f" finished_at = {CHANGED_AT}"
            f" WHERE run_id = :run_id AND kind = 'ask' AND name = :key AND status = 'answered' AND {_FENCED}",
            {**fence._asdict(), "key": key, "now": now},
        ).rowcount
        == 1
    )


def expire(conn: sqlite3.Connection, fence: Fence, seq: int, now: float) -> bool:
    return (
        conn.execute(
            f"UPDATE records SET status = 'expired', finished_at = {CHANGED_AT}"
            f" WHERE run_id = :run_id AND seq = :seq AND status = 'waiting' AND {_FENCED}",
            {**fence._asdict(), "seq": seq, "now": now},
        ).rowcount
        == 1
    )


def complete_sleep(conn: sqlite3.Connection, fence: Fence, seq: int, now: float) -> bool:
    return (
        conn.execute(
            f"UPDATE records SET status = 'completed', finished_at = {CHANGED_AT}"
            f" WHERE run_id = :run_id AND seq = :seq AND status = 'scheduled' AND {_FENCED}",
            {**fence._asdict(), "seq": seq, "now": now},
        ).rowcount
        == 1
    )


def cancel(conn: sqlite3.Connection, run_id: str, now: float) -> tuple[str, str | None] | None:
    row = conn.execute("SELECT status, owner FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None or row[0] in FINAL:
        return row
    # Its unfinished children (and theirs) are cancelled by the parent_ended trigger, in this same statement
    # (`ended` fires it).
    conn.execute(
        "UPDATE runs SET status = 'cancelled', ended = 1, owner = NULL, lease_until = NULL, wake_at = NULL,"
        " updated_at = ? WHERE run_id = ?",
        (now, run_id),
    )
    conn.execute(
        f"UPDATE records SET status = 'cancelled', finished_at = {CHANGED_AT}"
        " WHERE run_id = :run_id AND status = 'waiting'",
        {"now": now, "run_id": run_id},
    )
    return row


def release(conn: sqlite3.Connection, owner: str, run_id: str | None, now: float, records: int | None) -> int:
    return conn.execute(
        # A run paused while it executed here stays paused, now unloaded (and replayed when resumed: wake_any).
        "UPDATE runs SET status = CASE WHEN status = 'paused' THEN 'paused' ELSE 'pending' END,"
        " ready = CASE WHEN status = 'paused' THEN NULL ELSE 'released' END, owner = NULL, lease_until = NULL, wake_any = TRUE,"
        " updated_at = ?1, records = MAX(records, COALESCE(?4, 0))"
        " WHERE owner = ?2 AND status IN ('running', 'paused') AND (?3 IS NULL OR run_id = ?3)",
        (now, owner, run_id, records),
    ).rowcount


# These write with one statement (then at most read), or only read: alone in a
# batch, each may commit on its own, without BEGIN/COMMIT.
for _op in (
    flush, select_run, append, append_bare, replace, create_run, create_placed, claim, renew, park, finish, reopen_prompt, expire,
    complete_sleep, release,
):  # fmt: skip
    _op.autocommit = True  # type: ignore[attr-defined]


def _all_or_each(conn: sqlite3.Connection, rows: list[Any], apply: Any, single: Any, done: Any) -> list[Any]:
    """Apply `rows` together (`apply(conn, rows)` returns how many applied); if one did not (a fence or a
    conflict said no), undo the batch to a savepoint and apply each row alone, so each gets its own answer."""
    conn.execute("SAVEPOINT batch")
    if apply(conn, rows) == len(rows):
        conn.execute("RELEASE batch")
        return [done] * len(rows)
    conn.execute("ROLLBACK TO batch")
    conn.execute("RELEASE batch")
    return [single(conn, row) for row in rows]


def in_one_statement(sql: str, single: Any, done: Any, then: str | None = None) -> Any:
    """The batched form of `single`: its rows through one executemany (rows `sql` did not apply go through
    `then`, if given, in a second one: a row either statement applies, the other can no longer apply)."""

    def apply(conn: sqlite3.Connection, rows: list[Any]) -> int:
        applied = conn.executemany(sql, rows).rowcount
        return applied + conn.executemany(then, rows).rowcount if applied < len(rows) and then is not None else applied

    return lambda conn, batch: _all_or_each(conn, [a[0] for a in batch], apply, single, done)


def in_values(sql: str, single: Any) -> Any:
    """The batched form of a fenced append (``INSERT ... SELECT <?N> WHERE <?N>``, its ?N the parameters of a row).

    Its rows go in as ``VALUES`` lists of a power of two rows each (a handful of statements, each prepared
    once, serve every batch size). An executemany steps SQLite once per row, and each step gives up the GIL
    and takes it back: with the event loop busy, the writer waited at every row. A chunk is one step.
    """
    head, where = sql.split(" WHERE ", 1)
    width = max(int(n) for n in re.findall(r"\?(\d+)", sql))
    for n in range(width, 0, -1):  # ?12 before ?1
        head, where = head.replace(f"?{n}", f"v.column{n}"), where.replace(f"?{n}", f"v.column{n}")
    row = "(" + ", ".join("?" * width) + ")"

    @functools.lru_cache(maxsize=None)  # one per power of two
    def statement(rows: int) -> str:
        return f"{head} FROM (VALUES {', '.join([row] * rows)}) AS v WHERE {where}"

    def apply(conn: sqlite3.Connection, rows: list[Any]) -> int:
        most = 1 << (min(MAX_CHUNK, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width).bit_length() - 1)
        applied, start = 0, 0
        while start < len(rows):
            size = min(most, 1 << (len(rows) - start).bit_length() - 1)
            applied += conn.execute(statement(size), [v for r in rows[start : start + size] for v in r]).rowcount
            start += size
        return applied

    return lambda conn, batch: _all_or_each(conn, [a[0] for a in batch], apply, single, True)


MAX_CHUNK = 1024  # rows per statement of in_values (at most 18,432 parameters: SQLite allows 32,766)

# Where many runs do the same at once (a thousand runs started, stepping,
# finishing), the writer hands their consecutive writes over in one call.
append.many = in_values(_APPEND, append)  # type: ignore[attr-defined]
append_bare.many = in_values(_APPEND_BARE, append_bare)  # type: ignore[attr-defined]
create_run.many = in_one_statement(_CREATE_RUN, create_run, None)  # type: ignore[attr-defined]
finish.many = in_one_statement(_FINISH_ALONE, finish, True, then=_FINISH)  # type: ignore[attr-defined]
# A step's record may even be committed from the event loop when the writer is idle
# (the sequential case). Run creation and claims stay queued: when a thousand runs
# start at once, they must share commits rather than take one each.
append.direct = append_bare.direct = True  # type: ignore[attr-defined]


def checkpoint(conn: sqlite3.Connection) -> None:
    # PASSIVE: copies what it can without waiting for readers or writers.
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


