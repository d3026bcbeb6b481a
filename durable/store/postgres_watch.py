"""The PostgreSQL writer's watchdog: one timer for all its writes, not one per statement.

A write that gets no answer within ``COMMAND_TIMEOUT_SECONDS`` (a server
that stopped answering, a network cut without a reset) is given up: the
watchdog drops the writer's connection, the statement in flight fails, and
every caller of its batch gets StoreUnavailable ("the server did not answer
within …"). asyncpg's own per-statement timeout does the same with a timer
armed and cancelled around every statement; for a sequential run of trivial
steps that timer was 13 % of the instructions of a step.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

__all__ = ["Watchdog"]

# How often the watchdog looks, per timeout: a write is given up 1.0–1.1 timeouts after it began.
LOOKS_PER_TIMEOUT = 10


class Watchdog:
    """Times the writer's writes for PostgresStore (its attributes are the store's)."""

    _writer: Any
    _write_started: float | None  # time.monotonic() when the write in flight began
    _gave_up: bool  # the watchdog dropped the connection of the write in flight

    def _write_begins(self) -> None:
        self._gave_up = False
        self._write_started = time.monotonic()

    def _write_ends(self) -> bool:
        """Whether the write just ended was given up by the watchdog."""
        self._write_started = None
        gave_up, self._gave_up = self._gave_up, False
        return gave_up

    async def _watch(self, timeout: float) -> None:
        while True:
            await asyncio.sleep(timeout / LOOKS_PER_TIMEOUT)
            started, writer = self._write_started, self._writer
            if started is not None and writer is not None and time.monotonic() - started > timeout:
                self._gave_up = True
                writer.terminate()  # the write's statement now fails: the batch is answered StoreUnavailable
