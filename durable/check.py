"""Check a journal against code: replay runs without executing a step or writing anything.

:func:`check_runs` replays each run with a :class:`Checking`, an Execution that
stops where the run would do new work (a call with no record, a prompt still
waiting, a timer not yet due, a retry's backoff) instead of doing it. What the
replay met is the verdict: ``ok`` (it replays to its current wait point, to
where new work starts, or to its recorded end), ``blocked`` (a call does not
match its record, the recorded arguments no longer fit, a recorded value no
longer reads, or the code drops recorded calls) or ``unknown-workflow``.

A check writes nothing, so it can run against a copy of a production journal
in CI, or against the live one opened read-only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import pydantic

from .calls import Suspend
from .model import CheckResult
from .replay import Execution
from .store.base import FINAL, Fence, RunRow, Store
from .workflow import Workflow

__all__ = ["Checking", "check_runs", "retirable"]

UNFINISHED = ("pending", "running", "sleeping", "waiting", "blocked", "paused")
# A replay that reaches no ctx call for this long awaits something the journal does not know.
STALL_SECONDS = 10.0


class _Offline:
    """What a Checking needs of an engine: a store to read (never written), a clock, the workflows."""

    closing = False
    replay_every_step = False
    hold_seconds = 0.0
    poll_interval = 1.0

    def __init__(self, store: Store, clock: Callable[[], float], workflows: Mapping[str, Workflow]) -> None:
        self.store, self.clock, self.workflows = store, clock, workflows


class Checking(Execution):
    """An Execution that replays only: at the first call it would execute, it stops."""

    __slots__ = ("frontier", "waits", "patches")

    def __init__(
        self, store: Store, workflows: Mapping[str, Workflow], row: RunRow, records: list[Any], clock: Callable[[], float]
    ) -> None:
        offline = _Offline(store, clock, workflows)
        super().__init__(offline, workflows[row.workflow], Fence(row.run_id, "", -1), row.args, records)  # type: ignore[arg-type]
        self.frontier: int | None = None  # where the replay stopped: the first call with no record
        self.waits: str | None = None  # what the run waits for there, in words
        self.patches: dict[str, bool] = {}  # patch id -> whether this run takes its new path

    def _stop_at(self, seq: int, waits: str | None = None) -> NoReturn:
        if self.frontier is None or seq < self.frontier:
            self.frontier, self.waits = seq, waits
        self.going = False
        self.suspending = True
        raise Suspend

    def new_record(self, seq: int) -> None:
        self._stop_at(seq)

    def took_path(self, patch_id: str, new: bool) -> None:
        self.patches[patch_id] = new

    async def step(self, seq: int, spec: Any, fn: Any, args: Any, kwargs: Any) -> Any:
        record = self.recorded.get(seq)
        if record is None:
            self._stop_at(seq)
        if record.status == "retrying":
            self._stop_at(seq, f"a retry of step {spec.name!r}")
        return await super().step(seq, spec, fn, args, kwargs)  # recorded: decoded, never called

    async def sleep(self, seq: int, seconds: Any) -> None:
        record = self.recorded.get(seq)
        if record is None:
            self._stop_at(seq)
        if record.status == "scheduled" and seq + 1 == self.replay_end:
            self._stop_at(seq, "a timer")  # its current wait; a later record means it was done
        # A recorded sleep is passed at once: a check waits for nothing.

    async def ask(self, seq: int, question: str, tp: Any, key: str | None, *options: Any) -> Any:
        record = self.recorded.get(seq)
        if record is None:
            self._stop_at(seq)
        if record.status == "waiting":
            self._stop_at(seq, f"an answer to prompt {record.name!r}")
        return await super().ask(seq, question, tp, key, *options)

    async def receive(self, seq: int, topic: str, *options: Any) -> Any:
        record = self.recorded.get(seq)
        if record is None:
            self._stop_at(seq)
        if record.status == "waiting":
            self._stop_at(seq, f"a message on {topic!r}")
        return await super().receive(seq, topic, *options)

    async def child(self, seq: int, workflow: str, child_id: str, *options: Any) -> Any:
        record = self.recorded.get(seq)
        if record is None:
            self._stop_at(seq)
        if record.status == "waiting":
            self._stop_at(seq, f"child run {child_id!r}")
        return await super().child(seq, workflow, child_id, *options)

    async def publish(self, seq: int, topic: str, value: Any) -> None:
        if seq not in self.recorded:
            self._stop_at(seq)

    async def _reopen(self, key: str, exc: pydantic.ValidationError) -> None:
        seq = next(s for s, r in self.recorded.items() if r.kind == "ask" and r.name == key)
        self._stop_at(seq, f"an answer to prompt {key!r} (the recorded one no longer fits its type, so it is asked again)")

    def now(self, seq: int) -> Any:
        if seq not in self.recorded:
            self._stop_at(seq)
        return super().now(seq)

    async def _record_outcome(self, outcome: str, value: Any) -> None:
        self.status = outcome
        if outcome == "failed":
            self.error = value

    def _log(self, elapsed: float) -> None:
        pass

    def verdict(self, row: RunRow) -> CheckResult:
        """What this replay found, once drive() has returned."""
        common = {"run_id": self.run_id, "workflow": self.workflow.name, "patches": dict(sorted(self.patches.items()))}
        if self.violation is not None:
            return CheckResult(**common, verdict="blocked", seq=_seq(self.violation), detail=str(self.violation))
        if self.status == "suspended":
            seq = self.frontier
            if self.waits is not None:
                detail = f"replays to seq {seq}, where it waits for {self.waits}"
            else:
                detail = f"replays to seq {seq}, where new work starts"
        elif self.status == "completed":
            seq, detail = None, "replays to its end: it returns"
        else:
            seq, detail = None, f"replays to its end: it raises {type(self.error).__name__}: {self.error}"
        if row.status == "blocked":
            detail += f"; the run is blocked now: `durable retry {self.run_id}` resumes it with this code"
        return CheckResult(**common, verdict="ok", seq=seq, detail=detail)


def _seq(violation: BaseException) -> int | None:
    seq = getattr(violation, "seq", None)
    return seq if isinstance(seq, int) and seq >= 0 else None


async def check_run(store: Store, workflows: Mapping[str, Workflow], row: RunRow, clock: Callable[[], float]) -> CheckResult:
    workflow = workflows.get(row.workflow)
    if workflow is None:
        return CheckResult(
            run_id=row.run_id, workflow=row.workflow, verdict="unknown-workflow",
            detail=f"this App registers no workflow {row.workflow!r} (it has: {', '.join(sorted(workflows)) or 'none'})",
        )  # fmt: skip
    checking = Checking(store, workflows, row, await store.load_replay(row.run_id), clock)
    checking.task = asyncio.ensure_future(checking.drive())
    try:
        await asyncio.wait_for(asyncio.shield(checking.task), STALL_SECONDS)
    except TimeoutError:
        checking.task.cancel()
        await asyncio.gather(checking.task, return_exceptions=True)
        return CheckResult(
            run_id=row.run_id, workflow=row.workflow, verdict="blocked", seq=checking.next_seq,
            detail=f"its replay reached no ctx call for {STALL_SECONDS:g} s at seq {checking.next_seq}: the workflow "
            "awaits something the journal does not record (an asyncio.sleep, a lock, a network call outside a step)",
        )  # fmt: skip
    return checking.verdict(row)


async def check_runs(
    store: Store, workflows: Mapping[str, Workflow], *, all_runs: bool = False, clock: Callable[[], float] = time.time
) -> list[CheckResult]:
    """One verdict per unfinished run (every run with `all_runs`), oldest first. Reads only."""
    limit = 2**62
    if all_runs:
        rows = await store.list_runs(None, None, limit)
    else:
        rows = [row for status in UNFINISHED for row in await store.list_runs(status, None, limit)]
    rows.sort(key=lambda r: (r.created_at, r.run_id))
    return [await check_run(store, workflows, row, clock) for row in rows if all_runs or row.status not in FINAL]



def retirable(results: list[CheckResult]) -> dict[str, int]:
    """Each patch the checked runs met → how many take its old path (0: its old branch can go)."""
    counts: dict[str, int] = {}
    for result in results:
        for patch_id, new in result.patches.items():
            counts[patch_id] = counts.get(patch_id, 0) + (not new)
    return dict(sorted(counts.items()))
