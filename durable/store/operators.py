"""The operators' writes of a store (retry, fork, pause, resume, prune), each one operation of its `admin` module."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["OperatorWrites"]


class OperatorWrites:
    """The operators' writes of a store, each one operation of the store's `admin` module, applied by its `_write`."""

    admin: Any  # the module: sqlite_admin or postgres_admin
    _write: Callable[..., Any]

    async def retry(self, run_id: str, now: float) -> tuple[str, int] | None:
        return await self._write(self.admin.retry, run_id, now)

    async def fork(self, run_id: str, new_run_id: str, at_seq: int, now: float) -> str:
        return await self._write(self.admin.fork, run_id, new_run_id, at_seq, now)

    async def pause(self, run_id: str, now: float) -> tuple[str, str | None] | None:
        return await self._write(self.admin.pause, run_id, now)

    async def resume(self, run_id: str, now: float) -> tuple[str, str] | None:
        return await self._write(self.admin.resume, run_id, now)

    async def prune(self, before: float, statuses: Sequence[str], limit: int) -> int:
        return await self._write(self.admin.prune, before, list(statuses), limit)

    async def reclaim(self) -> None:
        """Nothing to do where the database gives deleted rows' space back itself (PostgreSQL's autovacuum)."""
