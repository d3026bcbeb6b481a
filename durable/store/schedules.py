"""What a store keeps of schedules (``@app.schedule``): one row per schedule, and the fire that moves it on.

A schedule's *cursor* is the time up to which its slots are handled. A worker
fires the slots after it in one commit that moves the cursor only if it is
still where that worker read it, and creates the slots' runs (under their
``name@slot`` run_ids, so a second create would find them). Two workers that
race for a slot: one moves the cursor, the other matches no row and creates
nothing. A slot is never fired twice, even after its run was pruned.

Pausing stops the fires; resuming moves the cursor to the time of the resume,
so the slots that passed while paused are skipped, not caught up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

__all__ = ["ScheduleRow", "ScheduleStore", "ScheduleWrites", "Slot"]


class ScheduleRow(NamedTuple):
    name: str
    workflow: str
    cron: str
    timezone: str
    cursor: float  # the slots up to this time are handled (fired, or skipped while paused)
    last_slot: float | None  # the latest slot fired
    paused: bool
    updated_at: float


class Slot(NamedTuple):
    """A run to create for a slot: its run_id, the slot's time, the encoded arguments (the slot's datetime)."""

    run_id: str
    at: float
    args: bytes


class ScheduleStore(Protocol):
    async def add_schedule(self, name: str, workflow: str, cron: str, timezone: str, now: float) -> ScheduleRow:
        """Register a schedule (its cursor: `now`), or update its cron and zone; its cursor and pause stay. The row."""

    async def fire_schedule(
        self, name: str, cursor: float, slots: Sequence[Slot], workflow: str, queue: str | None,
        deadline: float | None, now: float,
    ) -> bool:
        """Create the runs of `slots` ('pending', on `queue`) and move the cursor to the last slot, in one commit.

        Only if the schedule's cursor is still `cursor` and it is not paused; False (nothing written) otherwise.
        """

    async def pause_schedule(self, name: str, paused: bool, now: float) -> ScheduleRow | None:
        """Pause or resume (the cursor moves to `now`: slots passed while paused are skipped); None if no such schedule."""

    async def remove_schedule(self, name: str) -> bool:
        """Forget a schedule (its runs stay); whether there was one. An App that still has it registers it again."""

    async def schedules(self) -> list[ScheduleRow]: ...


class ScheduleWrites:
    """ScheduleStore for a store whose `schedule_ops` module has the SQL (sqlite_schedules, postgres_schedules)."""

    schedule_ops: Any
    _write: Callable[..., Any]
    _fetch: Callable[..., Any]

    async def add_schedule(self, name: str, workflow: str, cron: str, timezone: str, now: float) -> ScheduleRow:
        return ScheduleRow._make(await self._write(self.schedule_ops.add, name, workflow, cron, timezone, now))

    async def fire_schedule(
        self, name: str, cursor: float, slots: Sequence[Slot], workflow: str, queue: str | None,
        deadline: float | None, now: float,
    ) -> bool:
        return await self._write(self.schedule_ops.fire, name, cursor, list(slots), workflow, queue, deadline, now)

    async def pause_schedule(self, name: str, paused: bool, now: float) -> ScheduleRow | None:
        row = await self._write(self.schedule_ops.pause, name, paused, now)
        return None if row is None else ScheduleRow._make(row)

    async def remove_schedule(self, name: str) -> bool:
        return bool(await self._write(self.schedule_ops.remove, name))

    async def schedules(self) -> list[ScheduleRow]:
        return [ScheduleRow(*row[:6], bool(row[6]), row[7]) for row in await self._fetch(self.schedule_ops.SELECT)]
