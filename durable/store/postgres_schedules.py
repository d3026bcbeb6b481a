"""The PostgreSQL store's schedule writes (see :mod:`.schedules`); a fire commits with a NOTIFY for other workers."""

from __future__ import annotations

from typing import Any

from .schedules import Slot

__all__ = ["SELECT", "add", "fire", "pause", "remove"]

COLUMNS = "name, workflow, cron, timezone, cursor, last_slot, paused, updated_at"
SELECT = f"SELECT {COLUMNS} FROM durable.schedules ORDER BY name"


async def add(conn: Any, name: str, workflow: str, cron: str, timezone: str, now: float) -> tuple[Any, ...]:
    return tuple(await conn.fetchrow(
        "INSERT INTO durable.schedules AS s (name, workflow, cron, timezone, cursor, paused, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, false, $5) ON CONFLICT (name) DO UPDATE SET workflow = $2, cron = $3,"
        " timezone = $4, updated_at = $5 WHERE (s.workflow, s.cron, s.timezone) IS DISTINCT FROM ($2, $3, $4)"
        f" RETURNING {COLUMNS}",
        name, workflow, cron, timezone, now,
    ) or await conn.fetchrow(f"SELECT {COLUMNS} FROM durable.schedules WHERE name = $1", name))  # fmt: skip


async def fire(
    conn: Any, name: str, cursor: float, slots: list[Slot], workflow: str, queue: str | None,
    deadline: float | None, now: float,
) -> bool:
    last = max(slot.at for slot in slots)
    moved = await conn.fetchval(
        "UPDATE durable.schedules SET cursor = $1, last_slot = $1, updated_at = $2"
        " WHERE name = $3 AND cursor = $4 AND NOT paused RETURNING true",
        last, now, name, cursor,
    )  # fmt: skip
    if moved:
        await conn.executemany(
            "INSERT INTO durable.runs (run_id, workflow, status, args, ready, created_at, updated_at, epoch, deadline,"
            " queue) VALUES ($1, $2, 'pending', $3, 'submitted', $4, $4, 0, $5, $6) ON CONFLICT (run_id) DO NOTHING",
            [(slot.run_id, workflow, slot.args, now, deadline, queue) for slot in slots],
        )  # fmt: skip
    return bool(moved)


fire.notifies = True  # type: ignore[attr-defined]  # a worker elsewhere may take its runs


async def pause(conn: Any, name: str, paused: bool, now: float) -> tuple[Any, ...] | None:
    row = await conn.fetchrow(
        "UPDATE durable.schedules SET paused = $2, updated_at = $3,"
        " cursor = CASE WHEN paused AND NOT $2 THEN GREATEST(cursor, $3) ELSE cursor END"
        f" WHERE name = $1 RETURNING {COLUMNS}",
        name, paused, now,
    )  # fmt: skip
    return None if row is None else tuple(row)


async def remove(conn: Any, name: str) -> int:
    return int((await conn.execute("DELETE FROM durable.schedules WHERE name = $1", name)).rsplit(" ", 1)[-1])
