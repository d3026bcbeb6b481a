"""The branches of a race (ctx.wait, ctx.as_completed): each ctx call raced, and the sets ctx.wait returns."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, MutableSet
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .races import Race
    from .replay import Execution

__all__ = ["Branch", "Branches"]


class Branch:
    """One ctx call of a race: what ``ctx.wait`` returns in its sets, like an asyncio task that has finished.

    A branch compares equal to the awaitable it was made from, so
    ``payment in done`` works with the ``ctx.receive(...)`` you passed.
    """

    __slots__ = ("race", "seq", "kind", "args", "key", "source", "task", "state", "value", "error", "wake_at", "deadline",
                 "order", "resume", "taken")  # fmt: skip

    def __init__(self, race: Race, seq: int, kind: str, call: tuple[tuple[Any, ...], str | None], source: Any) -> None:
        self.race, self.seq, self.kind, self.source = race, seq, kind, source
        self.args, self.key = call  # the call's arguments after self; a prompt's key
        self.task: asyncio.Task[None] | None = None
        self.state = "new"  # running, waiting (for the world), done, withdrawn
        self.value: Any = None
        self.error: BaseException | None = None
        self.wake_at: float | None = None  # a durable timer it waits for
        self.deadline: float | None = None  # its prompt's or receive's deadline
        self.order = 0  # when it finished, among the race's branches (1 is first)
        self.resume: asyncio.Future[None] | None = None  # while it waits: set to run its call again
        self.taken = False  # given out by ctx.as_completed

    def done(self) -> bool:
        return self.state in ("done", "withdrawn")

    def cancelled(self) -> bool:
        """True for a branch ``ctx.wait`` withdrew because the race was decided without it."""
        return self.state == "withdrawn"

    def result(self) -> Any:
        """The call's result, or its error raised (as with ``asyncio.Task.result``)."""
        if self.state == "done":
            if self.error is not None:
                raise self.error
            return self.value
        if self.state == "withdrawn":
            raise asyncio.CancelledError(f"{self!r} was withdrawn: its race was decided without it")
        raise asyncio.InvalidStateError(f"{self!r} has not finished: take it with ctx.wait or ctx.as_completed")

    def exception(self) -> BaseException | None:
        if self.state != "done":
            self.result()  # raises: withdrawn, or not finished
        return self.error

    def __await__(self) -> Any:
        return self._result().__await__()

    async def _result(self) -> Any:
        return self.result()

    def __eq__(self, other: object) -> bool:
        return other is self or other is self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"<Branch {self.kind} at seq {self.seq}: {self.state}>"

    async def call(self, ex: Execution) -> Any:
        """Make the ctx call (again: a replay, or after its record was filled)."""
        self.wake_at = self.deadline = None
        return await getattr(type(ex), self.kind)(ex, *self.args)


class Branches(MutableSet[Branch]):
    """The branches ctx.wait returns: a set in recorded order (the order they finished), which also finds a call's
    branch: ``done[payment].result()``."""

    def __init__(self, branches: Iterable[Branch] = ()) -> None:
        self._items: list[Branch] = []
        for branch in branches:
            self.add(branch)

    def __contains__(self, item: object) -> bool:
        return any(branch == item for branch in self._items)

    def __iter__(self) -> Iterator[Branch]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def add(self, value: Branch) -> None:
        if value not in self:
            self._items.append(value)

    def discard(self, value: object) -> None:
        self._items = [branch for branch in self._items if not branch == value]

    def __getitem__(self, aw: Any) -> Branch:
        for branch in self._items:
            if branch == aw:
                return branch
        raise KeyError(f"{aw!r} is not among these branches")

    def __repr__(self) -> str:
        return f"Branches({self._items!r})"
