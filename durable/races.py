"""ctx.wait and ctx.as_completed: races over ctx calls, decided once and recorded, so a replay takes the same branch.

A race runs each of its ctx calls (its *branches*) as a task. A branch that
must wait for the world (an answer, a message, a child run, a long timer) does
not unload the run as it would alone: it waits in the race, and the run is
unloaded only when no branch is still working (a step, a short sleep). The
store then wakes the run at the first of its waits filled, not the last. While
steps work, the race reads the waiting branches' records every poll interval
(and at every timer), so a message can win against a long step.

When the race is decided, which branches finished, in which order (and whether
its timeout fired) is recorded under the race's own seq; a replay reads that
and returns the same branches, whatever the timings are then. ``ctx.wait``
withdraws the branches that had not finished, in the commit of its decision:
a waiting record becomes 'withdrawn' (a prompt leaves the inbox, a message it
took meanwhile goes back to the queue, a child run is cancelled) and a step
still running is cancelled, its result never recorded. ``ctx.as_completed``
leaves them running for its next iterations; what is left when the run ends
ends with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from .branches import Branch, Branches
from .calls import BRANCH, DATETIME, UNREADABLE, UTC
from .codec import encode
from .store.base import RecordRow
from .waits import Waits

if TYPE_CHECKING:
    from .replay import Execution

__all__ = ["Branch", "Branches", "Completions", "Race", "Races"]

KINDS = ("step", "sleep", "ask", "receive", "child")
# The statuses of a record whose call has finished (a sleep has finished once its wake-up time passed).
FINISHED = frozenset({"completed", "failed", "received", "answered", "expired", "cancelled"})


class Decision(msgspec.Struct, omit_defaults=True):
    """How a race ended, as recorded: the seqs of the branches that finished, in order; whether it timed out; the
    seqs of those it withdrew (a fork before the decision does not copy their records)."""

    done: list[int]
    timed_out: bool = False
    withdrawn: list[int] = []


DECISION = msgspec.json.Decoder(Decision)


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _due(branch: Branch, now: float) -> bool:
    """Whether a waiting branch's timer, or its prompt's or receive's deadline, has come."""
    return any(t is not None and t <= now for t in (branch.wake_at, branch.deadline))


class Recheck(BaseException):
    """A waiting branch's record may have been filled: its call runs again, to read it."""


class Race:
    """The branches of one ctx.wait (or one ctx.as_completed) and what decides it."""

    __slots__ = ("ex", "branches", "deadline", "changed", "fatal", "finished", "stale")

    def __init__(self, ex: Execution, branches: list[Branch], deadline: float | None = None) -> None:
        self.ex, self.branches, self.deadline = ex, branches, deadline
        self.changed: asyncio.Future[bool] | None = None
        self.fatal: BaseException | None = None  # a branch met Suspend or Stop: the run unloads or stops
        self.finished = 0
        self.stale = False  # something was delivered to the run here: its waiting branches' records are read again

    def _poke(self) -> None:
        if self.changed is not None:
            _settle(self.changed, True)

    def _done(self, branch: Branch) -> None:
        self.finished += 1
        branch.state, branch.order = "done", self.finished
        self._poke()

    async def _run(self, branch: Branch) -> None:
        BRANCH.set(branch)  # this task's context only
        while True:
            branch.state = "running"
            try:
                branch.value = await branch.call(self.ex)
            except Recheck:
                continue
            except asyncio.CancelledError as exc:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise  # withdrawn, or the execution ends
                self.fatal = self.fatal or exc  # the step's own code was cancelled: as outside a race, the run is released
                self._poke()
                return
            except Exception as exc:
                branch.error = exc
            except BaseException as exc:  # Suspend or Stop, from the run itself
                self.fatal = self.fatal or exc
                self._poke()
                return
            self._done(branch)
            return

    async def start(self) -> None:
        """Start the branches: first, in seq order, those whose records say they finished, then the rest as tasks.

        So a race that resumes decides by what its journal holds, before any timing of this execution counts.
        """
        fresh = [b for b in self.branches if b.state == "new"]
        for branch in fresh:
            if self._finished(branch):
                await self.replay([branch.seq])
        for branch in fresh:
            if branch.state == "new":
                branch.state = "running"
                branch.task = asyncio.ensure_future(self._run(branch))

    def _finished(self, branch: Branch) -> bool:
        record = self.ex.recorded.get(branch.seq)
        if record is None:
            return False
        if record.kind == "sleep" and record.value is not None:
            try:
                return DATETIME.decode(record.value, "a wake-up time").timestamp() <= self.ex.clock()
            except UNREADABLE:
                return False  # the branch reports it when it runs
        return record.status in FINISHED

    async def hold(self, branch: Branch) -> NoReturn:
        """A branch waits for the world: it waits here until the race runs its call again (or withdraws it)."""
        branch.state = "waiting"
        branch.resume = asyncio.get_running_loop().create_future()
        self._poke()
        if branch.kind == "step":
            self.ex._end()  # a step waiting for its next attempt works at nothing: the run may unload
        try:
            await branch.resume  # cancelled if it is withdrawn, or the execution ends
        finally:
            if branch.kind == "step":
                self.ex._begin()
        branch.resume = None
        self.ex.parked_at.discard(branch.seq)
        raise Recheck

    async def replay(self, done: list[int]) -> None:
        """Run again the branches a recorded decision says finished (each returns its record), in their order."""
        by_seq = {b.seq: b for b in self.branches}
        for seq in done:
            branch = by_seq[seq]
            if branch.state == "done":
                continue
            try:
                branch.value = await branch.call(self.ex)
            except Exception as exc:
                branch.error = exc
            self._done(branch)

    async def until(self, decided: Callable[[], bool]) -> bool:
        """Run the branches until `decided()` or the timeout (True); unload the run when all that is left waits."""
        ex = self.ex
        await self.start()
        poll = ex.engine.poll_interval
        while True:
            if self.fatal is not None:
                raise self.fatal
            ex._check("wait")
            if decided() or all(b.done() for b in self.branches):
                return False
            now = ex.clock()
            if self.deadline is not None and now >= self.deadline:
                return True
            waiting = [b for b in self.branches if b.state == "waiting"]
            due = [b for b in waiting if _due(b, now)]
            if due:
                await self._rerun(due)
                continue
            working = any(b.state == "running" for b in self.branches)
            hold = ex.engine.hold_seconds
            if not working and (self.deadline is None or self.deadline - now > hold):
                await ex._suspend()  # every branch left waits for the world: the run unloads
            timers = [t - now for b in waiting for t in (b.wake_at, b.deadline) if t is not None]
            if self.deadline is not None and hold:
                timers.append(self.deadline - now)
            if waiting:
                timers.append(poll)
            if await self._changed(min(timers) if timers else None) is False or self.stale:
                self.stale = False
                await self._rerun([b for b in waiting if b.state == "waiting"])

    async def _changed(self, timeout: float | None) -> bool:
        """Wait until a branch changes (True) or `timeout` passes (False)."""
        loop = asyncio.get_running_loop()
        self.changed = changed = loop.create_future()
        timer = None if timeout is None else loop.call_later(max(0.0, timeout), _settle, changed, False)
        try:
            return await changed
        finally:
            if timer is not None:
                timer.cancel()

    async def _rerun(self, branches: list[Branch]) -> None:
        """Read the records of waiting branches; run again those that changed (filled, or a timer now due)."""
        ex = self.ex
        records = {r.seq: r for r in await ex._write(ex.store.load_replay(ex.run_id))}
        now = ex.clock()
        for branch in branches:
            record = records.get(branch.seq)
            if branch.resume is None or record is None or (record.status == "waiting" and not _due(branch, now)):
                continue
            ex.recorded[branch.seq] = record
            if branch.kind == "ask" and ex.keys is not None:
                ex.keys.discard(branch.key or f"ask-{branch.seq}")
            branch.state = "running"
            branch.resume.set_result(None)
        await asyncio.sleep(0)

    def withdraw(self, losers: list[Branch]) -> None:
        for branch in losers:
            branch.state = "withdrawn"
            self.ex.parked_at.discard(branch.seq)
            if branch.task is not None and not branch.task.done():
                branch.task.cancel()

    def drop(self) -> None:
        """The execution ends: stop every branch task left (a waiting one's record stays, for the next execution)."""
        for branch in self.branches:
            if branch.task is not None and not branch.task.done():
                branch.task.cancel()


class Completions(Iterator[Any]):
    """What ``ctx.as_completed`` returns: each ``next`` is an awaitable of the next branch to finish, in recorded order."""

    def __init__(self, ex: Execution, race: Race) -> None:
        self._ex, self._race, self._left = ex, race, len(race.branches)

    def __iter__(self) -> Completions:
        return self

    def __next__(self) -> Any:
        if self._left == 0:
            raise StopIteration
        ex = self._ex
        seq = ex.take("wait", "next")
        self._left -= 1
        return ex.next_completed(seq, self._race)


class Races(Waits):
    """ctx.wait and ctx.as_completed: the part of an Execution that races ctx calls."""

    __slots__ = ()
    races: list[Race]

    def branches(self, aws: Iterable[Any], call: str) -> list[Branch]:
        """The branches for the awaitables given to ctx.wait or ctx.as_completed: ctx calls of this run, not yet awaited."""
        if inspect.isawaitable(aws) or isinstance(aws, (str, bytes)):
            raise TypeError(f"{call} takes an iterable of ctx calls (like asyncio.wait), not {aws!r}.")
        items = list(aws)
        if not items:
            raise ValueError(f"{call} needs at least one ctx call to wait for.")
        try:
            return self._branches(items, call)
        except BaseException:
            for aw in items:  # none of them will be awaited: no warning for them on top of the error
                if inspect.iscoroutine(aw) and inspect.getcoroutinestate(aw) == inspect.CORO_CREATED:
                    aw.close()
            raise

    def _branches(self, items: list[Any], call: str) -> list[Branch]:
        codes = {getattr(type(self), kind).__code__: kind for kind in KINDS}
        race = Race(self, [])  # type: ignore[arg-type]
        seen: set[int] = set()
        for aw in items:
            if id(aw) in seen:
                raise ValueError(f"{call} was given the same awaitable twice: {aw!r}.")
            seen.add(id(aw))
            kind = codes.get(getattr(aw, "cr_code", None))  # type: ignore[arg-type]
            if kind is None or not inspect.iscoroutine(aw):
                raise TypeError(
                    f"{call} races ctx calls (ctx.step, ctx.sleep, ctx.ask, ctx.receive, ctx.child), not {aw!r}: "
                    "the completion of anything else is not journaled. Make the work a step: ctx.step(fn, ...)."
                )
            if inspect.getcoroutinestate(aw) != inspect.CORO_CREATED:
                raise RuntimeError(f"{call} was given a ctx call that was already awaited ({aw!r}): pass it unawaited.")
            given = inspect.getcoroutinelocals(aw)  # not started: its locals are its arguments
            if given.get("self") is not self:
                raise ValueError(f"{call} was given a ctx call of another run: each run races its own calls.")
            code = aw.cr_code
            args = [given[name] for name in code.co_varnames[1 : code.co_argcount]]
            if code.co_flags & inspect.CO_VARARGS:
                args.extend(given[code.co_varnames[code.co_argcount + code.co_kwonlyargcount]])
            aw.close()  # the race makes the call itself, as often as it needs to
            race.branches.append(Branch(race, given["seq"], kind, (tuple(args), given.get("key")), aw))
        return race.branches

    async def wait(self, seq: int, branches: list[Branch], return_when: str, timeout: float | None) -> tuple[Branches, Branches]:
        self._check("wait")
        race = branches[0].race
        record = self.recorded.get(seq)
        if record is not None and record.status == "completed":
            decision = self._read(seq, record, lambda: DECISION.decode(record.value))  # type: ignore[arg-type]
            await race.replay(decision.done)
            race.withdraw([b for b in branches if b.state != "done"])
            done = sorted((b for b in branches if b.state == "done"), key=lambda b: b.order)
            return Branches(done), Branches(b for b in branches if b.state != "done")
        if timeout is not None:
            race.deadline = await self._race_deadline(seq, record, return_when, timeout)
        if return_when == asyncio.FIRST_COMPLETED:
            decided = lambda: any(b.state == "done" for b in branches)  # noqa: E731
        elif return_when == asyncio.FIRST_EXCEPTION:
            decided = lambda: any(b.state == "done" and b.error is not None for b in branches)  # noqa: E731
        else:
            decided = lambda: False  # noqa: E731  # all of them: until() ends when every branch is done
        self.races.append(race)
        timed_out = await race.until(decided)
        self.races.remove(race)
        done = sorted((b for b in branches if b.state == "done"), key=lambda b: b.order)
        losers = [b for b in branches if b.state != "done"]
        withdrawn = [b.seq for b in losers]
        await self._decide(seq, return_when, record, Decision([b.seq for b in done], timed_out, withdrawn), withdrawn)
        race.withdraw(losers)
        if self.replay_each:
            self._replay_from_start()
        return Branches(done), Branches(losers)

    async def _race_deadline(self, seq: int, record: Any, name: str, timeout: float) -> float:
        """When the race at `seq` times out: recorded at its first run ('scheduled'), so a replay keeps it."""
        if record is not None:
            return self._read(seq, record, lambda: DATETIME.decode(record.value, "a race's deadline")).timestamp()  # type: ignore[arg-type]
        now = self.clock()
        self.new_record(seq)
        blob = encode(dt.datetime.fromtimestamp(now + timeout, UTC), "a race's deadline")
        await self._fenced(self.store.append, self.fence, RecordRow(seq, "wait", name, "scheduled", blob, None, 1, now, None, None, None))
        self.known += 1
        return now + timeout

    async def _decide(self, seq: int, name: str, record: Any, decision: Decision, losers: list[int]) -> None:
        """Record the race's decision and withdraw its losers (one commit); a replay returns the same branches."""
        self.new_record(seq)
        now = self.clock()
        row = RecordRow(seq, "wait", name, "completed", encode(decision, "a race's decision"), None, 1, now, now, None, None)
        await self._fenced(self.store.settle, self.fence, row, losers)
        if record is None:
            self.known += 1

    def as_completed(self, seq: int, branches: list[Branch], timeout: float | None) -> Completions:
        race = branches[0].race
        if timeout is not None:
            record = self.recorded.get(seq)
            if record is not None:
                race.deadline = self._read(seq, record, lambda: DATETIME.decode(record.value, "a race's deadline")).timestamp()  # type: ignore[arg-type]
            else:
                now = self.clock()
                race.deadline = now + timeout
                self.new_record(seq)
                blob = encode(dt.datetime.fromtimestamp(race.deadline, UTC), "a race's deadline")
                self.store.append_nowait(self.fence, RecordRow(seq, "wait", "as_completed", "scheduled", blob, None, 1, now, None, None, None))
        return Completions(self, race)  # type: ignore[arg-type]

    async def next_completed(self, seq: int, race: Race) -> Any:
        self._check("wait")
        record = self.recorded.get(seq)
        if record is not None:
            decision = self._read(seq, record, lambda: DECISION.decode(record.value))  # type: ignore[arg-type]
            if decision.timed_out:
                raise TimeoutError(f"ctx.as_completed: its timeout passed with {sum(not b.taken for b in race.branches)} left")
            await race.replay(decision.done)
            branch = next(b for b in race.branches if b.seq == decision.done[0])
        else:
            if race not in self.races:
                self.races.append(race)
            timed_out = await race.until(lambda: any(b.state == "done" and not b.taken for b in race.branches))
            left = [b for b in race.branches if b.state == "done" and not b.taken]
            branch = min(left, key=lambda b: b.order) if left and not timed_out else None
            decision = Decision([] if branch is None else [branch.seq], branch is None)
            await self._decide(seq, "next", None, decision, [])
            if branch is None:
                raise TimeoutError(f"ctx.as_completed: its timeout passed with {sum(not b.taken for b in race.branches)} left")
        branch.taken = True
        if all(b.taken for b in race.branches) and race in self.races:
            self.races.remove(race)
        if self.replay_each and record is None:
            self._replay_from_start()
        return branch.result()

    def recheck_races(self) -> None:
        """An answer or a message was delivered to this run: its races read their waiting branches' records again."""
        for race in self.races:
            race.stale = True
            race._poke()

    def end_races(self) -> bool:
        """The execution is over: stop the races' tasks; whether branches of a race wait (their timers are the run's)."""
        waits = False
        for race in self.races:
            for branch in race.branches:
                if branch.state == "waiting":
                    waits = True
                    if branch.wake_at is not None:
                        self._wake_at(branch.wake_at)
                    if branch.deadline is not None:
                        self.deadline = branch.deadline if self.deadline is None else min(self.deadline, branch.deadline)
            if race.deadline is not None:
                self._wake_at(race.deadline)
            race.drop()
        self.races = []
        return waits
