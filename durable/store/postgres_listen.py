"""The PostgreSQL store's wake-up hints: one connection that LISTENs, and how a worker waits for a change.

A commit that changes a run's status sends a NOTIFY on the ``durable`` channel
(with no payload: a hint, never data). The listener marks that something
changed and wakes the waiting worker; its own process's NOTIFYs are ignored.
A lost connection is reconnected with backoff, and a reconnect counts as a
change (polling covers the gap).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["CHANNEL", "Listener"]

log = logging.getLogger("durable")

CHANNEL = "durable"


class Listener:
    """wait_for_change for PostgresStore (its attributes are the store's)."""

    target: str
    _changed: bool
    _wake: asyncio.Event | None
    _writer_pid: int | None
    _closing: bool
    _connect: Any

    async def wait_for_change(self, timeout: float, wake: asyncio.Event) -> bool:
        self._wake = wake
        if not self._changed and not wake.is_set():
            try:
                await asyncio.wait_for(wake.wait(), timeout)
            except TimeoutError:
                pass
        changed, self._changed = self._changed, False
        return changed

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if pid == self._writer_pid:
            return  # this process's own write
        self._changed = True
        if self._wake is not None:
            self._wake.set()

    async def _listen(self) -> None:
        """Keep one connection LISTENing; reconnect with backoff when it is lost (polling covers the gap)."""
        pause = 0.1
        while not self._closing:
            conn = None
            try:
                conn = await self._connect()
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _: lost.set())
                await conn.add_listener(CHANNEL, self._notified)
                pause = 0.1
                self._notified(conn, -1, CHANNEL, "")  # something may have changed while not listening
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("listener for %s: %s; reconnecting in %.1fs", self.target, exc, pause)
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
