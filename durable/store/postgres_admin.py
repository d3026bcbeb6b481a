"""The PostgreSQL store's operator writes: retry, fork, pause, resume, prune (each in one transaction).

The same operations as :mod:`.sqlite_admin`, under READ COMMITTED: each locks
the run's row ``FOR UPDATE`` first, so it is serialised with claims and fenced
writes of that run, and its later statements see every change committed before.
"""

from __future__ import annotations

from typing import Any

from ..codec import failed_step
from .base import ASKED_AGAIN, FINAL, NOT_COPIED, UNHANDLED
from .prompts import ANSWER_COPIED

__all__ = ["fork", "pause", "prune", "resume", "retry"]

# fork(): a race decided before the fork's seq ($3) withdrew this record (see NOT_COPIED).
_DECIDED = (
    "EXISTS (SELECT 1 FROM durable.records AS d WHERE d.run_id = durable.records.run_id AND d.kind = 'wait'"
    " AND d.status = 'completed' AND d.seq < $3"
    " AND convert_from(d.value, 'UTF8')::jsonb -> 'withdrawn' @> to_jsonb(durable.records.seq))"
)
_ASIDE = (
    "INSERT INTO durable.set_aside (run_id, seq, kind, name, status, value, error, attempts, started_at, finished_at,"
    " set_aside_at)"
)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def retry(conn: Any, run_id: str, now: float) -> tuple[str, int] | None:
    row = await conn.fetchrow("SELECT status, error, workflow FROM durable.runs WHERE run_id = $1 FOR UPDATE", run_id)
    if row is None:
        return None
    status, error, workflow = row
    if status not in ("failed", "blocked"):
        return status, 0
    await conn.execute(f"{_ASIDE} VALUES ($1, -1, 'run', $2, $3, NULL, $4, 1, $5, $5, $5)", run_id, workflow, status, error, now)
    seq = failed_step(error) if status == "failed" and error is not None else None
    moved = 0
    if seq is not None:
        unhandled = UNHANDLED.format(records="durable.records", run_id="$1", seq="$2")
        where = f"FROM durable.records WHERE run_id = $1 AND {unhandled}"
        await conn.execute(
            f"{_ASIDE} SELECT run_id, seq, kind, name, status, value, error, attempts, started_at, finished_at, $3 {where}",
            run_id, seq, now,
        )  # fmt: skip
        moved = _count(await conn.execute(f"DELETE {where}", run_id, seq))
    await conn.execute(
        "UPDATE durable.runs SET status = 'pending', ready = 'retried', result = NULL, error = NULL, owner = NULL,"
        " lease_until = NULL, wake_at = NULL, deadline = NULL, updated_at = $2, records = GREATEST(0, records - $3)"
        " WHERE run_id = $1",
        run_id, now, moved,
    )  # fmt: skip
    return status, moved


retry.notifies = True  # type: ignore[attr-defined]  # a worker elsewhere takes the run


async def fork(conn: Any, run_id: str, new_run_id: str, at_seq: int, now: float) -> str:
    inserted = _count(await conn.execute(
        "INSERT INTO durable.runs (run_id, workflow, status, args, ready, created_at, updated_at, epoch, records)"
        " SELECT $1, workflow, 'pending', args, 'forked', $2, $2, 0, 0 FROM durable.runs WHERE run_id = $3"
        " ON CONFLICT (run_id) DO NOTHING",
        new_run_id, now, run_id,
    ))  # fmt: skip
    if not inserted:
        exists = await conn.fetchval("SELECT 1 FROM durable.runs WHERE run_id = $1", new_run_id)
        return "exists" if exists else "missing"
    copied = _count(await conn.execute(
        "INSERT INTO durable.records (run_id, seq, kind, name, status, value, error, attempts, started_at,"
        " finished_at, question, schema, deadline, assignee, answered_by, answered_via) SELECT $1, seq, kind, name,"
        f" {ASKED_AGAIN.format(now='$4')}, question, schema, deadline - started_at + $4, {ANSWER_COPIED}"
        " FROM durable.records WHERE run_id = $2 AND seq < $3"
        f" AND NOT {NOT_COPIED.format(decided=_DECIDED)}",
        new_run_id, run_id, at_seq, now,
    ))  # fmt: skip
    await conn.execute("UPDATE durable.runs SET records = $2 WHERE run_id = $1", new_run_id, copied)
    return "forked"


fork.notifies = True  # type: ignore[attr-defined]  # a worker elsewhere may take the new run


async def pause(conn: Any, run_id: str, now: float) -> tuple[str, str | None] | None:
    row = await conn.fetchrow("SELECT status, owner FROM durable.runs WHERE run_id = $1 FOR UPDATE", run_id)
    if row is None or row[0] in FINAL or row[0] in ("blocked", "paused"):
        return None if row is None else (row[0], row[1])
    await conn.execute("UPDATE durable.runs SET status = 'paused', ready = NULL, updated_at = $2 WHERE run_id = $1", run_id, now)
    return row[0], row[1]


pause.notifies = True  # type: ignore[attr-defined]  # the process executing it stops it at its next ctx call


async def resume(conn: Any, run_id: str, now: float) -> tuple[str, str] | None:
    status = await conn.fetchval("SELECT status FROM durable.runs WHERE run_id = $1 FOR UPDATE", run_id)
    if status != "paused":
        return None if status is None else (status, status)
    after = await conn.fetchval(
        "UPDATE durable.runs AS r SET status = CASE WHEN owner IS NOT NULL THEN 'running' WHEN wake_any THEN 'pending'"
        " WHEN EXISTS (SELECT 1 FROM durable.records WHERE run_id = r.run_id AND status = 'waiting') THEN 'waiting'"
        " ELSE 'pending' END, updated_at = $2 WHERE run_id = $1 RETURNING status",
        run_id, now,
    )  # fmt: skip
    if after == "pending":
        await conn.execute("UPDATE durable.runs SET ready = 'resumed' WHERE run_id = $1", run_id)
    return "paused", after


resume.notifies = True  # type: ignore[attr-defined]


async def prune(conn: Any, before: float, statuses: list[str], limit: int) -> int:
    ids = [r[0] for r in await conn.fetch(
        "SELECT run_id FROM durable.runs WHERE status = ANY($1::text[]) AND updated_at < $2 LIMIT $3 FOR UPDATE SKIP LOCKED",
        statuses, before, limit,
    )]  # fmt: skip
    if not ids:
        return 0
    deleted = 0
    for table in ("records", "set_aside", "messages", "prompt_log", "runs"):
        deleted = _count(await conn.execute(f"DELETE FROM durable.{table} WHERE run_id = ANY($1::text[])", ids))
    return deleted
