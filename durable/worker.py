"""The background loop of an open App: it moves runs on without anyone rerunning a script.

Each pass claims, through the engine, for the workflows registered on the App
(orphans first, then the rest in the order they became ready):
- runs 'running' under an owner that died (its pid is gone, on this machine)
  or whose lease expired (anywhere);
- runs that are ready ('pending': a prompt was answered, the run was created
  by a process without the workflow, or released by one shutting down);
- runs whose durable timer is due;
- the slots of the App's schedules that have come (their runs are made, then claimed).
Each claim bumps the run's epoch, so the previous owner can never write into
it again. The loop also renews the leases of the runs executing here, and
stops local runs another process cancelled or took over.

It wakes when the store reports another process's commit (``PRAGMA
data_version`` on SQLite, LISTEN/NOTIFY on PostgreSQL), when kicked from this
process (an answer, a run parking), when a timer is due, and at least every
`poll_interval` seconds (dead owners change nothing in the store, so they are
looked for on that schedule). A store fault makes it log once and retry with
backoff; it never ends the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .errors import JournalError, StoreUnavailable
from .owner import is_dead_here

if TYPE_CHECKING:
    from .engine import Engine
    from .schedules import Scheduler

__all__ = ["Worker"]

log = logging.getLogger("durable")

MAX_BACKOFF_SECONDS = 5.0
# How often, at most, the worker says which pending runs it cannot take (no process may have their workflow).
UNKNOWN_EVERY_SECONDS = 60.0


class Worker:
    """Resumes due, answered and orphaned runs through one engine."""

    def __init__(self, engine: Engine, scheduler: Scheduler | None = None) -> None:
        self.engine = engine
        self.scheduler = scheduler
        self._kick = asyncio.Event()
        self._stopping = False
        self._next_wake: float | None = None
        self._last_renewal = time.monotonic()
        self._failing: str | None = None  # the store fault of the last pass, while it lasts
        self._unknown_told: dict[str, float] = {}  # workflow name -> when the log last said its runs wait
        self._task: asyncio.Task[None] | None = None
        self._started = self._done = 0  # passes started, passes finished
        self._settling: list[tuple[int, asyncio.Future[None]]] = []  # (pass number, who waits for it)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="durable worker")

    def kick(self) -> None:
        """Make the loop look at the store now."""
        self._kick.set()

    async def settle(self) -> None:
        """Wake the loop and return once a pass that started after this call has finished (a test clock moved)."""
        if self._task is None or self._task.done():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._settling.append((self._started + 1, waiter))
        self.kick()
        await waiter

    def _settled(self) -> None:
        for entry in list(self._settling):
            if self._done >= entry[0] or self._stopping:
                self._settling.remove(entry)
                if not entry[1].done():
                    entry[1].set_result(None)

    async def stop(self) -> None:
        self._stopping = True
        self._kick.set()
        if self._task is not None:
            await self._task
        self._settled()  # nobody waits for a pass that will not come

    async def _loop(self) -> None:
        engine = self.engine
        last_scan = -1e9
        changed = False
        backoff = 0.0
        while not self._stopping:
            kicked = self._kick.is_set()
            self._kick.clear()
            try:
                if changed:
                    engine.notify()
                    await engine.check_held()
                due = self._next_wake is not None and self._next_wake <= engine.clock()
                if kicked or changed or due or backoff or time.monotonic() - last_scan >= engine.poll_interval:
                    last_scan = time.monotonic()
                    await self.scan()
                if self._failing is not None:
                    log.info("the store works again: %s", engine.store.target)
                    self._failing = None
                backoff = 0.0
            except (StoreUnavailable, JournalError) as exc:
                if exc.reason != self._failing:
                    log.warning("worker: %s; retrying with backoff", exc)
                    self._failing = exc.reason
                backoff = min(MAX_BACKOFF_SECONDS, max(engine.poll_interval, backoff * 2))
            except Exception:
                log.exception("worker pass failed; retrying in %.2fs", engine.poll_interval)
            if self._stopping:
                break
            timeout = backoff or engine.poll_interval
            if self._next_wake is not None:
                timeout = max(0.0, min(timeout, self._next_wake - engine.clock()))
            try:
                changed = await engine.store.wait_for_change(timeout, self._kick)
            except (StoreUnavailable, JournalError):
                changed = False
                await _sleep_or_kick(self._kick, timeout)

    async def scan(self) -> None:
        """One pass: release stranded runs, claim and resume what is runnable, note the next timer, renew leases."""
        self._started += 1
        try:
            await self._scan()
        finally:
            self._done += 1
            self._settled()

    async def _scan(self) -> None:
        engine = self.engine
        await engine.release_stranded()
        if self.scheduler is not None:
            await self.scheduler.tick()  # a slot's runs, made now, are claimed in this same pass
        dead = [o for o in await engine.store.running_owners() if o != engine.owner and is_dead_here(o)]
        await engine.claim_ready(dead)
        await self._tell_unknown()
        wakes = [await engine.store.next_wake(), self.scheduler and self.scheduler.next_due()]
        self._next_wake = min((t for t in wakes if t is not None), default=None)
        # A third of the lease: a busy process renews two more times before any other may take its runs.
        if engine.in_flight and time.monotonic() - self._last_renewal >= engine.lease_seconds / 3:
            self._last_renewal = time.monotonic()
            await engine.renew()


    async def _tell_unknown(self) -> None:
        """Say, now and then, that runs wait for a workflow this worker does not have (else they wait silently)."""
        now = time.monotonic()
        if self._unknown_told and now - min(self._unknown_told.values()) < UNKNOWN_EVERY_SECONDS:
            return
        known = self.engine.workflows
        if not known:
            return  # an App that registers no workflow is a client (a script that starts or answers runs)
        for name, count in (await self.engine.store.pending_workflows()).items():
            if name in known or now - self._unknown_told.get(name, -1e9) < UNKNOWN_EVERY_SECONDS:
                continue
            self._unknown_told[name] = now
            log.warning(
                "worker: %d run%s of workflow %r %s pending, and this worker does not have that workflow "
                "(it has: %s). A worker whose App registers it will take %s.",
                count, "" if count == 1 else "s", name, "is" if count == 1 else "are",
                ", ".join(sorted(known)) or "none", "it" if count == 1 else "them",
            )  # fmt: skip


async def _sleep_or_kick(kick: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(kick.wait(), timeout)
    except TimeoutError:
        pass
