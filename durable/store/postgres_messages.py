"""The PostgreSQL store's writes between runs: messages (a send delivers or queues, a receive takes the oldest), child runs, races.

The same operations as :mod:`.sqlite_messages`. A send locks the run's row
``FOR UPDATE`` and a receive (a fenced write) ``FOR SHARE``, so the two are
serialised per run: whichever commits second sees the other.
"""

from __future__ import annotations

from typing import Any

from . import postgres_ops
from .base import FINAL, Answered, Fence, RecordRow
from .postgres_ops import changed_at, ready_if_none_waits

__all__ = ["receive", "send", "settle", "start_child"]


async def send(
    conn: Any, run_id: str, topic: str, value: bytes, now: float, claimant: str | None, lease: float
) -> Answered | None:
    status = await conn.fetchval("SELECT status FROM durable.runs WHERE run_id = $1 FOR UPDATE", run_id)
    if status is None:
        return None
    if status in FINAL:
        return Answered(status, False, None)
    seq = await conn.fetchval(
        "SELECT seq FROM durable.records WHERE run_id = $1 AND kind = 'receive' AND name = $2 AND status = 'waiting'"
        " AND (deadline IS NULL OR deadline > $3) ORDER BY seq LIMIT 1",
        run_id, topic, now,
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO durable.messages (run_id, topic, value, sent_at, seq) VALUES ($1, $2, $3, $4, $5)",
        run_id, topic, value, now, seq,
    )  # fmt: skip
    if seq is None:
        return Answered(status, False, None)
    await conn.execute(
        f"UPDATE durable.records SET status = 'received', value = $3, finished_at = {changed_at('$4', '$1')}"
        " WHERE run_id = $1 AND seq = $2",
        run_id, seq, value, now,
    )  # fmt: skip
    return Answered(status, *await ready_if_none_waits(conn, run_id, now, claimant, lease))


send.notifies = True  # type: ignore[attr-defined]  # the run's worker, elsewhere, takes it or knows of the message


async def receive(
    conn: Any, run_id: str, owner: str, epoch: int, seq: int, topic: str, now: float, deadline: float | None
) -> tuple[bool, bytes | None]:
    held = await conn.fetchval(
        "SELECT 1 FROM durable.runs WHERE run_id = $1 AND owner = $2 AND epoch = $3 FOR SHARE", run_id, owner, epoch
    )
    if held is None:
        return False, None
    queued = await conn.fetchrow(
        "SELECT id, value FROM durable.messages WHERE run_id = $1 AND topic = $2 AND seq IS NULL ORDER BY id LIMIT 1"
        " FOR UPDATE",
        run_id, topic,
    )  # fmt: skip
    if queued is not None:
        await conn.execute("UPDATE durable.messages SET seq = $2 WHERE id = $1", queued[0], seq)
    await conn.execute(
        "INSERT INTO durable.records (run_id, seq, kind, name, status, value, attempts, started_at, finished_at, deadline)"
        " VALUES ($1, $2, 'receive', $3, $4, $5, 1, $6, $7, $8)",
        run_id, seq, topic, "waiting" if queued is None else "received", None if queued is None else queued[1], now,
        None if queued is None else now, deadline,
    )  # fmt: skip
    return True, None if queued is None else queued[1]


async def start_child(
    conn: Any, run_id: str, owner: str, epoch: int, seq: int, child_id: str, workflow: str, args: bytes,
    now: float, deadline: float | None, queue: str | None = None,
) -> tuple[bool, str, bytes | None, bytes | None]:
    held = await conn.fetchval(
        "SELECT 1 FROM durable.runs WHERE run_id = $1 AND owner = $2 AND epoch = $3 FOR SHARE", run_id, owner, epoch
    )
    if held is None:
        return False, "", None, None
    inserted = await conn.fetchval(
        "INSERT INTO durable.runs (run_id, workflow, status, args, ready, created_at, updated_at, epoch, deadline, parent,"
        " parent_seq, queue) VALUES ($1, $2, 'pending', $3, 'submitted', $4, $4, 0, $5, $6, $7, $8)"
        " ON CONFLICT (run_id) DO NOTHING RETURNING 1",
        child_id, workflow, args, now, deadline, run_id, seq, queue,
    )  # fmt: skip
    status, value, error = "waiting", None, None
    if inserted is None:
        found = await conn.fetchrow(
            "SELECT workflow, status, result, error, parent, parent_seq FROM durable.runs WHERE run_id = $1 FOR UPDATE",
            child_id,
        )  # fmt: skip
        if found[0] != workflow:
            return True, "taken", found[0].encode(), None
        if found[1] in FINAL:
            status, value, error = found[1], found[2], found[3]
        elif found[4] is not None and (found[4], found[5]) != (run_id, seq):
            return True, "parented", found[4].encode(), None  # one parent hears of a child's end: not two
        else:
            await conn.execute(
                "UPDATE durable.runs SET parent = $2, parent_seq = $3 WHERE run_id = $1", child_id, run_id, seq
            )
    await conn.execute("UPDATE durable.runs SET children = children + 1 WHERE run_id = $1", run_id)
    await conn.execute(
        "INSERT INTO durable.records (run_id, seq, kind, name, status, value, error, attempts, started_at, finished_at,"
        " question) VALUES ($1, $2, 'child', $3, $4, $5, $6, 1, $7, $8, $9)",
        run_id, seq, workflow, status, value, error, now, None if status == "waiting" else now, child_id,
    )  # fmt: skip
    return True, status, value, error


start_child.notifies = True  # type: ignore[attr-defined]  # a worker elsewhere may take the child


async def settle(conn: Any, fence: Fence, decision: RecordRow, losers: list[int]) -> bool:
    """Record a race's decision (in place of its 'scheduled' record) and withdraw its losers, in one transaction."""
    run_id, owner, epoch = fence
    held = await conn.fetchval(
        "SELECT 1 FROM durable.runs WHERE run_id = $1 AND owner = $2 AND epoch = $3 FOR UPDATE", run_id, owner, epoch
    )
    if held is None:
        return False
    await conn.execute(
        "INSERT INTO durable.records (run_id, seq, kind, name, status, value, error, attempts, started_at, finished_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (run_id, seq) DO UPDATE SET"
        " status = excluded.status, value = excluded.value, finished_at = excluded.finished_at"
        " WHERE durable.records.status = 'scheduled'",
        run_id, *decision[:9],
    )  # fmt: skip
    if not losers:
        return True
    children = await conn.fetch(
        "SELECT question FROM durable.records WHERE run_id = $1 AND seq = ANY($2::int[]) AND kind = 'child'"
        " AND status = 'waiting'",
        run_id, losers,
    )  # fmt: skip
    # A message a loser took is queued again, in its place.
    await conn.execute("UPDATE durable.messages SET seq = NULL WHERE run_id = $1 AND seq = ANY($2::int[])", run_id, losers)
    await conn.execute(
        "UPDATE durable.records SET status = 'withdrawn', value = CASE WHEN kind = 'sleep' THEN value END,"
        f" finished_at = {changed_at('$3', '$1')} WHERE run_id = $1 AND seq = ANY($2::int[])"
        " AND status IN ('waiting', 'scheduled', 'received', 'answered')",
        run_id, losers, decision.finished_at,
    )  # fmt: skip
    for (child,) in children:
        await postgres_ops.cancel(conn, child, decision.finished_at)
    return True


settle.notifies = True  # type: ignore[attr-defined]  # a withdrawn child's process stops it at once
