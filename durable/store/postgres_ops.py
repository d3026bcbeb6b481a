"""Every write the PostgreSQL store makes: one async function per operation, on an asyncpg connection.

Each operation is ``await op(conn, *args)`` (see :mod:`.batch` for its
attributes). Operations that change a run's status set ``notifies``: the
batch that applies one also sends a NOTIFY, a wake-up hint for the workers of
other processes, committed with it.

Concurrency is PostgreSQL's READ COMMITTED, so the rules are explicit:
- A fenced write checks owner and epoch in the same statement and takes a
  ``FOR SHARE`` lock on the run's row. A claim updates that row, so it waits
  for fenced writes in flight and they wait for it: once a claim has
  committed, no write of the previous owner can commit.
- An operation that reads records to decide a run's status (parking, an
  answer, a cancel) first locks the run's row ``FOR UPDATE`` in a statement
  of its own, so its next statement sees every change committed before it.
- Claims of ready runs use ``FOR UPDATE SKIP LOCKED``: racing workers take
  different runs and never wait for each other.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from .base import FINAL, IN_PLACE, Answered, Claimed, RunRow
from .queues import Limits

__all__ = [
    "append", "append_bare", "cancel", "claim", "claim_ready", "ready_if_none_waits", "complete_sleep", "create_pending",
    "create_placed", "create_running", "expire", "finish", "flush", "park", "release",
    "renew", "reassign", "reopen_prompt", "replace", "select_run",
]  # fmt: skip

# The database server's clock, in seconds since the epoch: leases never depend on a worker's clock.
NOW = "extract(epoch from clock_timestamp())::float8"
RUN = (
    "run_id, workflow, status, args, result, error, owner, epoch, lease_until, wake_at, created_at, updated_at, records,"
    " deadline, parent"
)
# The same, from a journal older than the schema that added a run's deadline and parent (read-only, for check()).
RUN_BEFORE_CHILDREN = RUN.replace(", deadline, parent", ", NULL, NULL")
RECORD_COLUMNS = (
    "run_id, seq, kind, name, status, value, error, attempts, started_at, finished_at, question, schema, deadline,"
    " assignee, answered_by, answered_via"
)


def changed_at(now: str, run_id: str) -> str:
    """The time of an in-place change, strictly after the run's earlier ones (see the SQLite store)."""
    return (
        f"GREATEST({now}, COALESCE((SELECT MAX(finished_at) FROM durable.records"
        f" WHERE run_id = {run_id} AND kind IN {IN_PLACE}), 0) + 0.000001)"
    )


def _count(status: str) -> int:
    """The row count of a command tag: 'INSERT 0 1' -> 1, 'UPDATE 3' -> 3."""
    return int(status.rsplit(" ", 1)[-1])


async def flush(conn: Any) -> None:
    pass


async def select_run(conn: Any, run_id: str) -> RunRow | None:
    row = await conn.fetchrow(f"SELECT {RUN} FROM durable.runs WHERE run_id = $1", run_id)
    return None if row is None else RunRow(*row)


# --- records ------------------------------------------------------------------------------

_TYPES = dict(zip(RECORD_COLUMNS.split(", "), (
    "text int text text text bytea bytea int float8 float8 text text float8 text text text".split())))  # fmt: skip


def _fenced_insert(columns: list[str]) -> tuple[str, str]:
    """A record's INSERT into `columns`, fenced on the run's (owner, epoch) under a FOR SHARE lock of its row:
    alone ($1.. the columns, then owner and epoch), and over columns of values (its batched form)."""
    listed, n = ", ".join(columns), len(columns)
    one = (
        f"INSERT INTO durable.records ({listed}) SELECT {', '.join(f'${i}' for i in range(1, n + 1))}"
        f" FROM durable.runs WHERE run_id = $1 AND owner = ${n + 1} AND epoch = ${n + 2} FOR SHARE"
    )
    arrays = ", ".join(f"${i}::{_TYPES[column]}[]" for i, column in enumerate(columns, 1))
    many = (
        f"INSERT INTO durable.records ({listed}) SELECT {', '.join(f'u.{column}' for column in columns)}"
        f" FROM unnest({arrays}, ${n + 1}::text[], ${n + 2}::bigint[]) AS u({listed}, owner, epoch)"
        " JOIN durable.runs AS r ON r.run_id = u.run_id AND r.owner = u.owner AND r.epoch = u.epoch"
        " FOR SHARE OF r RETURNING run_id, seq"
    )
    return one, many


_APPEND, _APPEND_MANY = _fenced_insert(RECORD_COLUMNS.split(", "))
# The same for a record with none of a prompt's or an answer's fields (a step's, a sleep's, ...): six parameters
# (or arrays) fewer to encode and bind.
_APPEND_BARE, _APPEND_BARE_MANY = _fenced_insert(RECORD_COLUMNS.split(", ")[:10])


async def append(conn: Any, params: tuple[Any, ...]) -> bool:
    return _count(await conn.execute(_APPEND, *params)) == 1


async def append_bare(conn: Any, params: tuple[Any, ...]) -> bool:
    return _count(await conn.execute(_APPEND_BARE, *params)) == 1


_REPLACE = (
    _APPEND
    + " ON CONFLICT (run_id, seq) DO UPDATE SET status = excluded.status, value = excluded.value,"
    " error = excluded.error, attempts = excluded.attempts, finished_at = excluded.finished_at"
    " WHERE durable.records.status = 'retrying'"
)


async def replace(conn: Any, params: tuple[Any, ...]) -> bool:
    return _count(await conn.execute(_REPLACE, *params)) == 1


def _appends(sql: str) -> Callable[[Any, list[tuple[Any, ...]]], Awaitable[list[bool]]]:
    """The batched form of an append: one statement over columns of values; which rows the fence let in."""

    async def many(conn: Any, batch: list[tuple[Any, ...]]) -> list[bool]:
        rows = [args[0] for args in batch]
        written = {(r[0], r[1]) for r in await conn.fetch(sql, *map(list, zip(*rows)))}
        return [(row[0], row[1]) in written for row in rows]

    return many


append.many = _appends(_APPEND_MANY)  # type: ignore[attr-defined]
append_bare.many = _appends(_APPEND_BARE_MANY)  # type: ignore[attr-defined]


async def complete_sleep(conn: Any, run_id: str, owner: str, epoch: int, seq: int, now: float) -> bool:
    status = await conn.execute(
        f"UPDATE durable.records SET status = 'completed', finished_at = {changed_at('$5', '$1')}"
        " WHERE run_id = $1 AND seq = $4 AND status = 'scheduled'"
        " AND EXISTS (SELECT 1 FROM durable.runs WHERE run_id = $1 AND owner = $2 AND epoch = $3 FOR SHARE)",
        run_id, owner, epoch, seq, now,
    )  # fmt: skip
    return _count(status) == 1


async def reopen_prompt(conn: Any, run_id: str, owner: str, epoch: int, key: str, now: float) -> bool:
    status = await conn.execute(
        "UPDATE durable.records SET status = 'waiting', value = NULL, answered_by = NULL, answered_via = NULL,"
        f" finished_at = {changed_at('$5', '$1')} WHERE run_id = $1 AND kind = 'ask' AND name = $4 AND status = 'answered'"
        " AND EXISTS (SELECT 1 FROM durable.runs WHERE run_id = $1 AND owner = $2 AND epoch = $3 FOR SHARE)",
        run_id, owner, epoch, key, now,
    )  # fmt: skip
    return _count(status) == 1


async def expire(conn: Any, run_id: str, owner: str, epoch: int, seq: int, now: float) -> bool:
    status = await conn.execute(
        f"UPDATE durable.records SET status = 'expired', finished_at = {changed_at('$5', '$1')}"
        " WHERE run_id = $1 AND seq = $4 AND status = 'waiting'"
        " AND EXISTS (SELECT 1 FROM durable.runs WHERE run_id = $1 AND owner = $2 AND epoch = $3 FOR SHARE)",
        run_id, owner, epoch, seq, now,
    )  # fmt: skip
    return _count(status) == 1


# --- creating and claiming runs ---------------------------------------------------------------

_CREATE = (
    "INSERT INTO durable.runs (run_id, workflow, status, args, owner, epoch, lease_until, ready, created_at, updated_at,"
    " deadline) VALUES ($1, $2, CASE WHEN $4::text IS NULL THEN 'pending' ELSE 'running' END, $3, $4,"
    f" CASE WHEN $4::text IS NULL THEN 0 ELSE 1 END, CASE WHEN $4::text IS NOT NULL THEN {NOW} + $5 END,"
    " CASE WHEN $4::text IS NULL THEN 'submitted' END, $6, $6, $7)"
    " ON CONFLICT (run_id) DO NOTHING"
)
_CREATE_MANY = (
    "INSERT INTO durable.runs (run_id, workflow, status, args, owner, epoch, lease_until, ready, created_at, updated_at,"
    " deadline) SELECT u.run_id, u.workflow, CASE WHEN u.owner IS NULL THEN 'pending' ELSE 'running' END, u.args, u.owner,"
    f"  CASE WHEN u.owner IS NULL THEN 0 ELSE 1 END, CASE WHEN u.owner IS NOT NULL THEN {NOW} + u.lease END,"
    "  CASE WHEN u.owner IS NULL THEN 'submitted' END, u.now, u.now, u.deadline"
    " FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::float8[], $6::float8[], $7::float8[])"
    "  AS u(run_id, workflow, args, owner, lease, now, deadline)"
    " ON CONFLICT (run_id) DO NOTHING RETURNING run_id"
)


async def create_running(conn: Any, params: tuple[Any, ...]) -> RunRow | None:
    if _count(await conn.execute(_CREATE, *params)) == 1:
        return None
    # ON CONFLICT waited for a concurrent insert to commit: this new statement sees it.
    return await select_run(conn, params[0])


async def create_placed(conn: Any, params: tuple[Any, ...]) -> RunRow | None:
    """A pending run on a queue, with a key, a priority, or a time before which it does not start; else as create_pending.

    Debounced ($10), it is the run of the same workflow and key not started yet, if there is one (see the SQLite
    store); two debounced submits of one key are serialised by an advisory lock on it.
    """
    if params[9] is not None:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('durable debounce ' || $1 || ' ' || $2, 0))",
                           params[1], params[6] or "")  # fmt: skip
        moved = await conn.fetchval(
            "UPDATE durable.runs SET args = $3, updated_at = $4, deadline = $5, queue = $6, priority = $8,"
            " not_before = $9, debounce = $10 WHERE run_id = (SELECT run_id FROM durable.runs WHERE workflow = $2"
            " AND queue_key IS NOT DISTINCT FROM $7 AND debounce IS NOT NULL AND status = 'pending' AND epoch = 0"
            " AND $1::text IS NOT NULL ORDER BY created_at LIMIT 1 FOR UPDATE) RETURNING run_id",
            *params,
        )  # fmt: skip
        if moved is not None:
            return await select_run(conn, moved)
    inserted = await conn.execute(
        "INSERT INTO durable.runs (run_id, workflow, status, args, ready, created_at, updated_at, epoch, deadline, queue,"
        " queue_key, priority, not_before, debounce)"
        " VALUES ($1, $2, 'pending', $3, 'submitted', $4, $4, 0, $5, $6, $7, $8, $9, $10) ON CONFLICT (run_id) DO NOTHING",
        *params,
    )  # fmt: skip
    return None if _count(inserted) == 1 else await select_run(conn, params[0])


create_placed.notifies = True  # type: ignore[attr-defined]  # a worker elsewhere may take it


async def _create_many(conn: Any, batch: list[tuple[Any, ...]]) -> list[RunRow | None]:
    rows = [args[0] for args in batch]
    created = {r[0] for r in await conn.fetch(_CREATE_MANY, *map(list, zip(*rows)))}
    results: list[RunRow | None] = []
    seen: set[str] = set()
    for row in rows:
        # A run_id given twice in one batch was created by its first row only.
        if row[0] in created and row[0] not in seen:
            seen.add(row[0])
            results.append(None)
        else:
            results.append(await select_run(conn, row[0]))
    return results


create_running.many = _create_many  # type: ignore[attr-defined]


async def create_pending(conn: Any, params: tuple[Any, ...]) -> RunRow | None:
    return await create_running(conn, params)


create_pending.many = _create_many  # type: ignore[attr-defined]
create_pending.notifies = True  # type: ignore[attr-defined]  # a worker elsewhere may take it


async def claim(
    conn: Any, run_id: str, status: str, owner: str | None, claimant: str, lease: float, now: float, owner_dead: bool
) -> Claimed | None:
    row = await conn.fetchrow(
        "UPDATE durable.runs SET status = 'running', ready = NULL, owner = $1, epoch = epoch + 1,"
        f" lease_until = {NOW} + $2, updated_at = $3"
        " WHERE run_id = $4 AND status = $5 AND owner IS NOT DISTINCT FROM $6 AND queue IS NULL"
        f" AND (status <> 'running' OR $7 OR lease_until IS NULL OR lease_until < {NOW})"
        " RETURNING workflow, args, epoch, records, deadline",
        claimant, lease, now, run_id, status, owner, owner_dead,
    )  # fmt: skip
    return None if row is None else Claimed(run_id, row[0], row[1], row[2], status, owner, None, row[3], row[4])


claim.notifies = True  # type: ignore[attr-defined]  # a previous owner still alive learns it lost the run

CLAIMABLE = (
    " workflow = ANY($2::text[]) AND ("
    f"  (status = 'running' AND owner <> $1 AND (lease_until IS NULL OR lease_until < {NOW} OR owner = ANY($3::text[])))"
    "  OR (status = 'pending' AND (not_before IS NULL OR not_before <= $4))"
    "  OR (status IN ('sleeping', 'waiting') AND wake_at <= $4))"
)
_CLAIM_READY = (
    "WITH candidate AS ("
    f" SELECT run_id, status, owner, ready FROM durable.runs WHERE {CLAIMABLE} AND queue IS NULL"
    # Orphans first (already started, maybe holding resources), new submissions last.
    " ORDER BY CASE WHEN status = 'running' THEN 0 WHEN ready = 'submitted' THEN 2 ELSE 1 END, updated_at"
    " LIMIT $5 FOR UPDATE SKIP LOCKED)"
    " UPDATE durable.runs AS r SET status = 'running', ready = NULL, owner = $1, epoch = r.epoch + 1,"
    f" lease_until = {NOW} + $6, updated_at = $4, started_at = COALESCE(r.started_at, $4)"
    " FROM candidate AS c WHERE r.run_id = c.run_id"
    " RETURNING r.run_id, r.workflow, r.args, r.epoch, c.status, c.owner, c.ready, r.records, r.deadline"
)
async def claim_ready(
    conn: Any, claimant: str, workflows: list[str], dead: list[str], limit: int, lease: float, now: float,
    queues: dict[str, Limits] | None = None,
) -> list[Claimed]:
    claimed = [Claimed(*row) for row in await conn.fetch(_CLAIM_READY, claimant, workflows, dead, now, limit, lease)]
    if not queues or len(claimed) >= limit:
        return claimed
    from .postgres_queues import claim_queued  # it reads this module's CLAIMABLE

    # In a transaction (the batch's, or one of its own): each queue's lock is held until its claims commit.
    if conn.is_in_transaction():
        return claimed + await claim_queued(conn, claimant, workflows, dead, limit - len(claimed), lease, now, queues)
    async with conn.transaction():
        return claimed + await claim_queued(conn, claimant, workflows, dead, limit - len(claimed), lease, now, queues)


async def renew(conn: Any, owner: str, lease: float) -> dict[str, tuple[int, bool]]:
    rows = await conn.fetch(
        f"UPDATE durable.runs SET lease_until = {NOW} + $2 WHERE owner = $1 AND status IN ('running', 'paused')"
        " RETURNING run_id, epoch, status = 'paused'",
        owner, lease,
    )  # fmt: skip
    return {r[0]: (r[1], r[2]) for r in rows}


async def release(conn: Any, owner: str, run_id: str | None, now: float, records: int | None) -> int:
    status = await conn.execute(
        # A run paused while it executed here stays paused, now unloaded (and replayed when resumed: wake_any).
        "UPDATE durable.runs SET status = CASE WHEN status = 'paused' THEN 'paused' ELSE 'pending' END,"
        " ready = CASE WHEN status = 'paused' THEN NULL ELSE 'released' END, owner = NULL, lease_until = NULL, wake_any = TRUE,"
        " updated_at = $3, records = GREATEST(records, COALESCE($4::integer, 0))"
        " WHERE owner = $1 AND status IN ('running', 'paused') AND ($2::text IS NULL OR run_id = $2)",
        owner, run_id, now, records,
    )  # fmt: skip
    return _count(status)


release.notifies = True  # type: ignore[attr-defined]


# --- an execution's outcome ------------------------------------------------------------------


async def park(
    conn: Any, run_id: str, owner: str, epoch: int, wake_at: float | None, now: float, records: int,
    deadline: float | None = None, waiting_at: list[int] | None = None, race: bool = False,
) -> str | None:
    # Lock first, decide next: an answer committed meanwhile is seen by the second statement,
    # so the run is never left 'waiting' for an answer it already has; nor a run that wakes at
    # its first wait filled (wake_any) one of whose waits was. $6: the seqs it waits at, $7: a race's among them.
    if await conn.fetchval(
        "SELECT 1 FROM durable.runs WHERE run_id = $1 AND owner = $2 AND epoch = $3 FOR UPDATE", run_id, owner, epoch
    ) is None:
        return None
    return await conn.fetchval(_PARK, run_id, wake_at, now, records, deadline, waiting_at, race)


# Each condition is computed once (f, then g), after the lock above: what committed before it is seen.
_PARK = (
    "WITH f AS (SELECT EXISTS (SELECT 1 FROM durable.records WHERE run_id = $1 AND status = 'waiting') AS waits,"
    # A race, or waits the run no longer makes (left by an abandoned ctx.as_completed): the first filled wakes it.
    "  ($7::boolean OR ($6::int[] IS NOT NULL AND EXISTS (SELECT 1 FROM durable.records WHERE run_id = $1"
    "   AND status = 'waiting' AND NOT seq = ANY($6::int[])))) AS wake_any),"
    " g AS (SELECT waits, wake_any, wake_any AND EXISTS (SELECT 1 FROM durable.records WHERE run_id = $1"
    "  AND seq = ANY($6::int[]) AND status <> 'waiting') AS raced FROM f)"
    " UPDATE durable.runs AS r SET status = CASE WHEN r.status = 'paused' THEN 'paused' WHEN g.raced THEN 'pending'"
    "   WHEN g.waits THEN 'waiting' WHEN $2::float8 IS NOT NULL THEN 'sleeping' ELSE 'pending' END,"
    " ready = CASE WHEN r.status <> 'paused' AND (g.raced OR ($2::float8 IS NULL AND NOT g.waits)) THEN 'answered' END,"
    # A waiting run wakes at its prompts' earliest deadline too, and any run at its own deadline
    # (the soonest of these; LEAST leaves out NULLs).
    " wake_at = CASE WHEN g.waits THEN LEAST($2::float8, $5::float8, r.deadline) ELSE LEAST($2::float8, r.deadline) END,"
    " wake_any = g.wake_any, owner = NULL, lease_until = NULL, updated_at = $3, records = GREATEST(r.records, $4)"
    " FROM g WHERE r.run_id = $1 RETURNING r.status"
)


park.notifies = True  # type: ignore[attr-defined]


_FINISH = (
    "UPDATE durable.runs SET status = $1, result = $2, error = $3, owner = NULL, lease_until = NULL,"
    " wake_at = NULL, updated_at = $4, records = GREATEST(records, $8) WHERE run_id = $5 AND owner = $6 AND epoch = $7"
)
_FINISH_MANY = (
    "UPDATE durable.runs AS r SET status = u.status, result = u.result, error = u.error, owner = NULL,"
    " lease_until = NULL, wake_at = NULL, updated_at = u.now, records = GREATEST(r.records, u.records)"
    " FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::float8[], $5::text[], $6::text[], $7::bigint[],"
    "  $8::integer[]) AS u(status, result, error, now, run_id, owner, epoch, records)"
    " WHERE r.run_id = u.run_id AND r.owner = u.owner AND r.epoch = u.epoch RETURNING r.run_id"
)


async def finish(conn: Any, params: tuple[Any, ...]) -> bool:
    return _count(await conn.execute(_FINISH, *params)) == 1


async def _finish_many(conn: Any, batch: list[tuple[Any, ...]]) -> list[bool]:
    rows = [args[0] for args in batch]
    done = {r[0] for r in await conn.fetch(_FINISH_MANY, *map(list, zip(*rows)))}
    return [row[4] in done for row in rows]


finish.many = _finish_many  # type: ignore[attr-defined]
finish.notifies = True  # type: ignore[attr-defined]  # whoever waits for its outcome elsewhere


# --- writes from outside the run ------------------------------------------------------------


async def answer(
    conn: Any, run_id: str, key: str, value: bytes, now: float, claimant: str | None, lease: float, by: str | None,
    via: str,
) -> Answered:
    await conn.execute("SELECT 1 FROM durable.runs WHERE run_id = $1 FOR UPDATE", run_id)
    updated = await conn.fetchval(
        f"UPDATE durable.records SET status = 'answered', value = $3, finished_at = {changed_at('$4', '$1')},"
        " answered_by = $5, answered_via = $6"
        " WHERE run_id = $1 AND kind = 'ask' AND name = $2 AND status = 'waiting'"
        " AND (deadline IS NULL OR deadline > $4) RETURNING seq",
        run_id, key, value, now, by, via,
    )  # fmt: skip
    if updated is None:
        status = await conn.fetchval(
            "SELECT CASE WHEN status = 'waiting' AND deadline <= $3 THEN 'expired' ELSE status END"
            " FROM durable.records WHERE run_id = $1 AND kind = 'ask' AND name = $2",
            run_id, key, now,
        )  # fmt: skip
        return Answered(status, False, None)
    await log_prompt(conn, run_id, updated, key, "answered", value, by, via, now)
    return Answered("waiting", *await ready_if_none_waits(conn, run_id, now, claimant, lease))


async def log_prompt(
    conn: Any, run_id: str, seq: int, key: str, action: str, value: bytes | None, by: str | None, via: str, now: float
) -> None:
    await conn.execute(
        "INSERT INTO durable.prompt_log (run_id, seq, key, action, value, who, via, at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        run_id, seq, key, action, value, by, via, now,
    )  # fmt: skip


async def reassign(conn: Any, run_id: str, key: str, assignee: str | None, now: float, by: str | None, via: str) -> str | None:
    moved = await conn.fetchval(
        "UPDATE durable.records SET assignee = $3 WHERE run_id = $1 AND kind = 'ask' AND name = $2"
        " AND status = 'waiting' RETURNING seq",
        run_id, key, assignee,
    )  # fmt: skip
    if moved is None:
        return await conn.fetchval(
            "SELECT status FROM durable.records WHERE run_id = $1 AND kind = 'ask' AND name = $2", run_id, key
        )  # type: ignore[no-any-return]
    await log_prompt(conn, run_id, moved, key, "reassigned", json.dumps(assignee).encode(), by, via, now)
    return "waiting"


async def ready_if_none_waits(
    conn: Any, run_id: str, now: float, claimant: str | None, lease: float
) -> tuple[bool, Claimed | None]:
    """After an answer or a delivered message (the run's row locked): a waiting run none of whose records waits is ready
    (one unloaded in a race, ``wake_any``: at the first).

    The process that answered may take it at once (it has the workflow and
    room): one commit instead of two. Returns (ready, the claim if taken).
    """
    row = await conn.fetchrow(
        # A run on a queue goes back to its queue: only a claim that counts the queue's runs takes it.
        "UPDATE durable.runs SET status = CASE WHEN $3::text IS NULL OR queue IS NOT NULL THEN 'pending' ELSE 'running' END,"
        " ready = CASE WHEN $3::text IS NULL OR queue IS NOT NULL THEN 'answered' END,"
        " owner = CASE WHEN queue IS NULL THEN $3 END, wake_at = NULL,"
        " epoch = epoch + CASE WHEN $3::text IS NULL OR queue IS NOT NULL THEN 0 ELSE 1 END,"
        f" lease_until = CASE WHEN $3::text IS NOT NULL AND queue IS NULL THEN {NOW} + $4 END, updated_at = $1"
        " WHERE run_id = $2 AND status = 'waiting'"
        " AND (wake_any OR NOT EXISTS (SELECT 1 FROM durable.records WHERE run_id = $2 AND status = 'waiting'))"
        " RETURNING workflow, args, epoch, records, deadline, owner",
        now, run_id, claimant, lease,
    )  # fmt: skip
    if row is None:
        return False, None
    claimed = Claimed(run_id, row[0], row[1], row[2], "waiting", None, "answered", row[3], row[4])
    return True, None if row[5] is None else claimed


answer.notifies = True  # type: ignore[attr-defined]


async def cancel(conn: Any, run_id: str, now: float) -> tuple[str, str | None] | None:
    row = await conn.fetchrow("SELECT status, owner FROM durable.runs WHERE run_id = $1 FOR UPDATE", run_id)
    if row is None or row[0] in FINAL:
        return None if row is None else (row[0], row[1])
    # Its unfinished children (and theirs) are cancelled by the parent_ended trigger, in this same statement.
    await conn.execute(
        "UPDATE durable.runs SET status = 'cancelled', owner = NULL, lease_until = NULL, wake_at = NULL,"
        " updated_at = $2 WHERE run_id = $1",
        run_id, now,
    )  # fmt: skip
    await conn.execute(
        f"UPDATE durable.records SET status = 'cancelled', finished_at = {changed_at('$2', '$1')}"
        " WHERE run_id = $1 AND status = 'waiting'",
        run_id, now,
    )  # fmt: skip
    return row[0], row[1]


cancel.notifies = True  # type: ignore[attr-defined]  # the process executing it stops at once

# One statement, committing on its own: no BEGIN/COMMIT when alone in a batch.
for _op in (
    flush, select_run, append, append_bare, replace, complete_sleep, reopen_prompt, expire, create_running, claim_ready,
    renew,
):  # fmt: skip
    _op.autocommit = True  # type: ignore[attr-defined]
