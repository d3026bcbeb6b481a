"""The PostgreSQL store's claims of runs on queues: counted under an advisory lock per queue (see queues.py)."""

from __future__ import annotations

from typing import Any

from .base import Claimed
from .postgres_ops import CLAIMABLE, NOW
from .queues import Limits, QueueLoad, pick

__all__ = ["claim_queued", "queue_load"]

# A queue's candidates, best first. SKIP LOCKED passes rows another transaction holds (an answer, a park): the
# queue's budget is counted under an advisory lock on its name, so no two claimers spend it at once.
_QUEUED = (
    "SELECT run_id, workflow, args, epoch, status, owner, ready, records, deadline, status, queue_key, started_at"
    f" FROM durable.runs WHERE {CLAIMABLE} AND queue = $6"
    " ORDER BY CASE WHEN status = 'running' THEN 0 ELSE 1 END, priority DESC, updated_at LIMIT $5 FOR UPDATE SKIP LOCKED"
)
_CLAIM_QUEUED = (
    "UPDATE durable.runs SET status = 'running', ready = NULL, owner = $1, epoch = epoch + 1,"
    f" lease_until = {NOW} + $2, updated_at = $3, started_at = COALESCE(started_at, $3) WHERE run_id = ANY($4::text[])"
)


async def claim_queued(
    conn: Any, claimant: str, workflows: list[str], dead: list[str], room: int, lease: float, now: float,
    queues: dict[str, Limits],
) -> list[Claimed]:
    claimed: list[Claimed] = []
    for name, limits in sorted(queues.items()):  # sorted: two claimers take the queues' locks in one order
        left = room - len(claimed)
        if left <= 0:
            break
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('durable queue ' || $1, 0))", name)
        candidates = await conn.fetch(_QUEUED, claimant, workflows, dead, now, left + 64, name)
        if not candidates:
            continue
        taken = pick(candidates, limits, await queue_load(conn, name, claimant, limits, now), left)
        if taken:
            await conn.execute(_CLAIM_QUEUED, claimant, lease, now, [row[0] for row in taken])
            claimed += [Claimed(r[0], r[1], r[2], r[3] + 1, r[4], r[5], r[6], r[7], r[8]) for r in taken]
    return claimed


async def queue_load(conn: Any, queue: str, claimant: str, limits: Limits, now: float) -> QueueLoad:
    """What `queue` holds now: its executing runs (by key, and this claimant's), its starts in its rate window."""
    executing = await conn.fetch(
        "SELECT queue_key, owner = $1, count(*) FROM durable.runs WHERE queue = $2 AND status = 'running' GROUP BY 1, 2",
        claimant, queue,
    )  # fmt: skip
    started = 0
    if limits.rate is not None:
        started = await conn.fetchval(
            "SELECT count(*) FROM durable.runs WHERE queue = $1 AND started_at > $2", queue, now - limits.rate[1]
        )
    return QueueLoad.of(executing, started)


