"""The background loop of an open App: it moves runs on without anyone rerunning a script.

Each pass takes, for the workflows registered on this App:
- runs that are ready ('pending': a prompt was answered, or the run was created
  by a process without the workflow, or released by one shutting down);
- runs whose durable timer is due;
- runs 'running' under an owner that is dead (see :mod:`durable.owner`).
Each is claimed atomically (compare-and-set on status and owner) and resumed by
replay. A pass also notices writes by other processes through SQLite's
``PRAGMA data_version`` and stops local runs that were cancelled or taken over.

The loop checks for outside writes every 50 ms (one PRAGMA, no table read) and
scans when something changed, when kicked from this process (an answer, a run
parking), when a timer is due, and at least every `poll_interval` seconds (dead
owners change nothing in the file, so they are looked for on that schedule).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .owner import describe_owner, is_alive

if TYPE_CHECKING:
    from .app import App

__all__ = ["Worker"]

log = logging.getLogger("durable")

# How often the loop asks SQLite whether another process wrote (PRAGMA
# data_version: no table is read). An answer given elsewhere is noticed within it.
CHANGE_CHECK_SECONDS = 0.05


class Worker:
    """Resumes due, answered and orphaned runs of one App."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._kick = asyncio.Event()
        self._stopping = False
        self._data_version: int | None = None
        self._next_wake: float | None = None
        self._last_heartbeat = 0.0
        self._task: asyncio.Task[None] | None = None
        self.saturated = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="durable worker")

    def kick(self) -> None:
        """Make the loop look at the journal now."""
        self._kick.set()

    async def stop(self) -> None:
        self._stopping = True
        self._kick.set()
        if self._task is not None:
            await self._task

    async def _loop(self) -> None:
        app = self.app
        last_scan = -1e9
        while not self._stopping:
            kicked = self._kick.is_set()
            self._kick.clear()
            try:
                now = app._clock()
                changed = await self._changed()
                due = self._next_wake is not None and self._next_wake <= now
                if kicked or changed or due or time.monotonic() - last_scan >= app.poll_interval:
                    last_scan = time.monotonic()
                    await self.scan()
            except Exception:
                log.exception("worker pass failed; retrying in %.2fs", app.poll_interval)
            timeout = min(CHANGE_CHECK_SECONDS, app.poll_interval)
            if self._next_wake is not None:
                timeout = max(0.0, min(timeout, self._next_wake - app._clock()))
            try:
                await asyncio.wait_for(self._kick.wait(), timeout)
            except TimeoutError:
                pass

    async def _changed(self) -> bool:
        """Whether another connection committed since the last look (one cheap PRAGMA)."""
        version = await self.app._journal.data_version()
        if version == self._data_version:
            return False
        self._data_version = version
        self.app._notify()
        await self._check_local_runs()
        return True

    async def scan(self) -> None:
        """One pass: claim and resume what is runnable; note the next timer; renew leases."""
        app = self.app
        journal = app._journal
        now = app._clock()
        self.saturated = False
        candidates = list(await journal.ready(now))
        # Dead owners are found per owner, not per run: a live worker may hold thousands of runs.
        for owner, lease_until in await journal.running_owners():
            if owner != app._owner.id and not is_alive(owner, lease_until, now):
                candidates += [(run_id, workflow, "running", owner, None) for run_id, workflow in await journal.runs_of(owner)]
        for run_id, workflow, status, owner, ready in candidates:
            if self._stopping:
                return
            if workflow not in app._workflows or run_id in app._executions or run_id in app._starting:
                continue
            if not app._has_room():
                self.saturated = True  # App._ended kicks the loop when a slot frees up
                break
            app._starting.add(run_id)
            try:
                await app._take(run_id, status, owner, _reason(status, owner, ready))
            finally:
                app._starting.discard(run_id)
        self._next_wake = await journal.next_wake()
        if app._executions and now - self._last_heartbeat >= app.lease_seconds / 3:
            self._last_heartbeat = now
            await journal.heartbeat(app._owner.id, now + app.lease_seconds)

    async def _check_local_runs(self) -> None:
        """Stop local runs another process cancelled or took over; they write nothing more."""
        app = self.app
        if not app._executions:
            return
        # Only runs launched before the read: their claims are committed, so visible to it.
        launched = list(app._executions.items())
        owned = await app._journal.owned(app._owner.id)
        for run_id, execution in launched:
            if run_id not in owned and execution.active and execution.stop_reason is None:
                # Whatever it computes now could not be recorded: interrupt it at once.
                execution.stop_reason = "lost"
                execution.task.cancel()


def _reason(status: str, owner: str | None, ready: str | None) -> str:
    """Why a run is being resumed, in words for the log."""
    if status == "sleeping":
        return "timer due"
    if status == "running":
        return f"recovered from {describe_owner(owner)}, which died" if owner else "recovered"
    return {"answered": "prompt answered", "released": "released by a stopped worker", "submitted": "submitted"}.get(
        ready or "", "ready"
    )
