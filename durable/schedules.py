"""Schedules: a workflow run once per slot of a cron expression, across every process sharing the store.

``@app.schedule("*/5 * * * *")`` registers an ``async def (ctx, at)`` workflow.
Each open App that registered it fires its slots from its worker loop: at a
slot's time it reads the schedule's cursor from the store and creates the runs
of the slots since, in one commit that moves the cursor on only if no other
process did first (see ``durable/store/schedules.py``). The run of a slot is
``"<name>@<slot, UTC ISO 8601>"`` and gets the slot's time as ``at``.

Slots missed while no process ran (downtime) follow ``catch_up``: the latest
``catch_up`` of them run (default 1, the latest), older ones are skipped.

Cron expressions are read by croniter (``pip install 'durable[schedules]'``):
maintained (pallets-eco, used by Airflow), it walks slots backwards as well as
forwards, which catch_up needs without stepping through a long downtime slot
by slot; it takes an optional sixth field, first, for seconds; and it steps
through daylight-saving changes in the schedule's own timezone.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import zoneinfo
from typing import TYPE_CHECKING, Any, NamedTuple

from .codec import Codec
from .errors import DefinitionError, DurableError
from .store.schedules import ScheduleRow, Slot

if TYPE_CHECKING:
    from .app import App
    from .engine import Engine
    from .workflow import Workflow

__all__ = ["Schedule", "ScheduleInfo", "ScheduleNotFound", "Scheduler", "cron_library"]

log = logging.getLogger("durable")

# A slot fires when the clock is at most this far before it (a worker woken a hair early does not wait a pass).
EARLY_SECONDS = 0.001


class ScheduleNotFound(DurableError):
    """No schedule of that name is in the store."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name, known)
        self.name, self.known = name, known

    def describe(self) -> str:
        known = ", ".join(self.known) or "none"
        return f"No schedule {self.name!r} in this store (it has: {known}). A schedule is stored once an App with it opens."


def cron_library() -> Any:
    try:
        from croniter import croniter
    except ImportError:
        raise ImportError(
            "Schedules read cron expressions with croniter, which is not installed. "
            "Install it with: pip install 'durable[schedules]'"
        ) from None
    return croniter


def walk(cron: str, zone: zoneinfo.ZoneInfo, start: float) -> Any:
    """croniter over `cron` in `zone`, from `start` (seconds since the epoch): get_next and get_prev step it."""
    return cron_library()(cron, dt.datetime.fromtimestamp(start, zone), second_at_beginning=True)


def slot_text(at: float) -> str:
    """A slot's time as its run_id shows it: UTC, ISO 8601, whole seconds ('2026-12-01T09:30:00Z')."""
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Schedule:
    """A cron expression in a timezone, its workflow, and how many missed slots it catches up."""

    __slots__ = ("catch_up", "cron", "name", "queue", "timezone", "workflow", "zone")

    def __init__(self, cron: str, name: str, timezone: str, catch_up: int, queue: str | None) -> None:
        croniter = cron_library()
        if not isinstance(cron, str) or not croniter.is_valid(cron, second_at_beginning=True):
            raise DefinitionError(
                f"@app.schedule({cron!r}) of {name!r} is not a cron expression croniter reads. Use five fields "
                "(minute hour day-of-month month day-of-week, as '*/5 * * * *') or six, seconds first."
            )
        try:
            self.zone = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise DefinitionError(
                f"@app.schedule(timezone={timezone!r}) of {name!r} is not a timezone this machine knows. "
                "Use an IANA name, as 'UTC' or 'Europe/Paris' (pip install tzdata where the system has none)."
            ) from None
        if isinstance(catch_up, bool) or not isinstance(catch_up, int) or catch_up < 1:
            raise DefinitionError(
                f"@app.schedule(catch_up=...) of {name!r} takes a whole number >= 1 (how many of the slots missed "
                f"while nothing ran are run, latest first), not {catch_up!r}."
            )
        self.cron, self.name, self.timezone, self.catch_up, self.queue = cron, name, timezone, catch_up, queue
        self.workflow: Workflow | None = None

    def _walk(self, start: float) -> Any:
        return walk(self.cron, self.zone, start)

    def next_after(self, t: float) -> float:
        """The first slot strictly after `t`."""
        return float(self._walk(t).get_next(float))

    def due(self, cursor: float, now: float) -> list[float]:
        """The latest `catch_up` slots after `cursor` and not after `now`, oldest first."""
        walk, found = self._walk(now + EARLY_SECONDS), []
        while len(found) < self.catch_up:
            slot = float(walk.get_prev(float))
            if slot <= cursor:
                break
            found.append(slot)
        return found[::-1]

    def run_id(self, at: float) -> str:
        return f"{self.name}@{slot_text(at)}"


class ScheduleInfo(NamedTuple):
    """A schedule as the store has it (``app.schedules()``, ``durable schedules``); times are UTC datetimes."""

    name: str
    workflow: str
    cron: str
    timezone: str
    paused: bool
    last: dt.datetime | None  # the latest slot fired
    next: dt.datetime | None  # the next slot that will fire (None: paused)

    @classmethod
    def of(cls, row: ScheduleRow, now: float) -> ScheduleInfo:
        at = lambda t: None if t is None else dt.datetime.fromtimestamp(t, dt.UTC)  # noqa: E731
        upcoming = None
        if not row.paused:
            upcoming = float(walk(row.cron, zoneinfo.ZoneInfo(row.timezone), max(row.cursor, now)).get_next(float))
        return cls(row.name, row.workflow, row.cron, row.timezone, row.paused, at(row.last_slot), at(upcoming))


def register(app: App, fn: Any, cron: str, name: str | None, timezone: str, catch_up: int, queue: str | None) -> Any:
    """App.schedule: the workflow, and its schedule; `at` reads back as a datetime even where it is not annotated."""
    schedule = Schedule(cron, name or getattr(fn, "__name__", ""), timezone, catch_up, queue)
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise DefinitionError(
            f"The scheduled workflow {schedule.name!r} is called with the slot's time: declare it as "
            "`async def name(ctx: durable.Context, at: datetime.datetime)`."
        ) from None
    if schedule.name in app._schedules:
        raise DefinitionError(f"A schedule named {schedule.name!r} is already registered on this App.")
    app.workflow(fn, name=schedule.name, queue=queue)
    workflow = schedule.workflow = app._workflows[schedule.name]
    at = next(iter(workflow.signature.parameters.values()))
    if at.annotation is at.empty:
        workflow.codecs[at.name] = Codec(dt.datetime)
    app._schedules[schedule.name] = schedule
    return fn


async def pause(app: App, name: str, paused: bool) -> ScheduleInfo:
    """App.pause_schedule / resume_schedule."""
    now = app._clock()
    row = await app.store.pause_schedule(name, paused, now)
    if row is None:
        raise ScheduleNotFound(name, [r.name for r in await app.store.schedules()])
    return ScheduleInfo.of(row, now)


class Scheduler:
    """Fires the slots of this App's schedules, from the worker loop (``tick`` each pass)."""

    def __init__(self, engine: Engine, schedules: dict[str, Schedule]) -> None:
        self.engine = engine
        self.schedules = schedules
        self._due: dict[str, float] = {}  # name -> when to look at it next (its next slot, as last seen)
        self._registered = False
        self._opened = engine.clock()  # a schedule new to the store fires the slots after the App opened

    def next_due(self) -> float | None:
        return min(self._due.values(), default=None)

    async def tick(self) -> None:
        """Register the schedules (first pass), then fire each one whose next slot has come."""
        if not self.schedules:
            return
        engine, now = self.engine, self.engine.clock()
        if not self._registered:
            for schedule in self.schedules.values():
                row = await engine.store.add_schedule(schedule.name, schedule.workflow.name, schedule.cron,  # type: ignore[union-attr]
                                                      schedule.timezone, self._opened)  # fmt: skip
                if (row.cron, row.timezone) != (schedule.cron, schedule.timezone):
                    log.warning("schedule %s: the store has it as %r (%s), this App as %r (%s); this App's fires",
                                schedule.name, row.cron, row.timezone, schedule.cron, schedule.timezone)  # fmt: skip
                self._due[schedule.name] = now
            self._registered = True
        if all(due > now + EARLY_SECONDS for due in self._due.values()):
            return
        rows = {row.name: row for row in await engine.store.schedules()}
        for name, schedule in self.schedules.items():
            if self._due[name] > now + EARLY_SECONDS:
                continue
            row = rows.get(name)
            if row is None:  # removed (durable schedules remove), or a restored backup: registered again, from now
                workflow = schedule.workflow.name  # type: ignore[union-attr]
                row = await engine.store.add_schedule(name, workflow, schedule.cron, schedule.timezone, now)
            if not row.paused and not await self._fire(schedule, row, now):
                continue  # another process moved the cursor first: read it again next pass
            self._due[name] = schedule.next_after(now)

    async def _fire(self, schedule: Schedule, row: ScheduleRow, now: float) -> bool:
        slots = schedule.due(row.cursor, now)
        if not slots:
            return True
        workflow = schedule.workflow
        assert workflow is not None
        made = [Slot(schedule.run_id(at), at, workflow.encode_args((dt.datetime.fromtimestamp(at, dt.UTC),), {})[0])
                for at in slots]  # fmt: skip
        deadline = None if workflow.timeout is None else now + workflow.timeout
        fired = await self.engine.store.fire_schedule(
            schedule.name, row.cursor, made, workflow.name, schedule.queue or workflow.queue, deadline, now
        )
        if fired:
            log.info("schedule %s: %s", schedule.name, ", ".join(slot.run_id for slot in made))
            self.engine.kick()
        else:
            self._due[schedule.name] = now
        return fired
