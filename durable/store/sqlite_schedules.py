"""The SQLite store's schedule writes (see :mod:`.schedules`), each on the writer's connection, in its transaction."""

from __future__ import annotations

import sqlite3
from typing import Any

from .schedules import Slot

__all__ = ["SELECT", "add", "fire", "pause", "remove"]

COLUMNS = "name, workflow, cron, timezone, cursor, last_slot, paused, updated_at"
SELECT = f"SELECT {COLUMNS} FROM schedules ORDER BY name"


def _row(conn: sqlite3.Connection, name: str) -> tuple[Any, ...] | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM schedules WHERE name = ?", (name,)).fetchone()
    return None if row is None else (*row[:6], bool(row[6]), row[7])


def add(conn: sqlite3.Connection, name: str, workflow: str, cron: str, timezone: str, now: float) -> tuple[Any, ...]:
    conn.execute(
        "INSERT INTO schedules (name, workflow, cron, timezone, cursor, paused, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5) ON CONFLICT (name) DO UPDATE SET workflow = ?2, cron = ?3, timezone = ?4,"
        " updated_at = ?5 WHERE workflow IS NOT ?2 OR cron IS NOT ?3 OR timezone IS NOT ?4",
        (name, workflow, cron, timezone, now),
    )
    return _row(conn, name)  # type: ignore[return-value]


def fire(
    conn: sqlite3.Connection, name: str, cursor: float, slots: list[Slot], workflow: str, queue: str | None,
    deadline: float | None, now: float,
) -> bool:
    last = max(slot.at for slot in slots)
    moved = conn.execute(
        "UPDATE schedules SET cursor = ?1, last_slot = ?1, updated_at = ?2 WHERE name = ?3 AND cursor = ?4 AND NOT paused",
        (last, now, name, cursor),
    ).rowcount
    if moved:
        conn.executemany(
            "INSERT INTO runs (run_id, workflow, status, args, ready, created_at, updated_at, epoch, deadline, queue)"
            " VALUES (?, ?, 'pending', ?, 'submitted', ?, ?, 0, ?, ?) ON CONFLICT (run_id) DO NOTHING",
            [(slot.run_id, workflow, slot.args, now, now, deadline, queue) for slot in slots],
        )
    return bool(moved)


def pause(conn: sqlite3.Connection, name: str, paused: bool, now: float) -> tuple[Any, ...] | None:
    conn.execute(
        "UPDATE schedules SET paused = ?2, updated_at = ?3,"
        " cursor = CASE WHEN paused AND NOT ?2 THEN MAX(cursor, ?3) ELSE cursor END WHERE name = ?1",
        (name, int(paused), now),
    )
    return _row(conn, name)


def remove(conn: sqlite3.Connection, name: str) -> int:
    return conn.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount
