"""Each ctx call, live and on replay: step (with its journaled retries), sleep, ask, now.

:class:`Calls` is the part of an :class:`~durable.replay.Execution` that a
workflow's ``ctx`` calls reach. A call takes its seq when it is made and is
matched against the record at that seq then; a recorded call returns its
record (decoded by its annotation), a new one does the work and commits its
record before it returns.

A call that must wait long (a prompt, a durable sleep, a retry's backoff)
unloads the run: :class:`Suspend`, a ``BaseException`` a user's ``except
Exception`` cannot swallow, unwinds the workflow; :class:`Stop` does the same
for a run that is cancelled, lost, shutting down or whose store failed.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from . import tracing
from .codec import Codec, encode, error_from_json, error_to_json
from .errors import (
    EncodingError,
    JournalError,
    NondeterminismError,
    NotInWorkflow,
    StoreUnavailable,
    UnreadableRecord,
    UnsafeRace,
)
from .steps import StepSpec, attempt, from_step, run_and_record, run_attempts
from .store.base import Fence, RecordRow, Recorded, step_row
from .threads import run_in_thread

if TYPE_CHECKING:
    from .engine import Engine
    from .store.base import Store

__all__ = ["BRANCH", "GRACEFUL", "HOLD_SECONDS", "STOP_RANK", "STORE_FAULTS", "Calls", "Stop", "Suspend"]

log = logging.getLogger("durable")

# A sleep this short is waited in memory; a longer one unloads the run, which a
# timer resumes by replay. Replaying is cheap, holding thousands of coroutines is not.
HOLD_SECONDS = 2.0

DATETIME = Codec(dt.datetime)
UTC = dt.timezone.utc


# Which reason to stop wins when several come: the lower, the stronger.
STOP_RANK = {"cancelled": 0, "lost": 1, "timeout": 2, "store": 3, "paused": 4, "shutdown": 5}
# Stops that let steps in flight finish and record them: the next execution must not run them again.
GRACEFUL = frozenset({"paused", "shutdown"})


# What a store raises when it cannot do its part: never an outcome of the run.
STORE_FAULTS = (StoreUnavailable, JournalError)


# The branch of a race (ctx.wait) that the current task runs, if it runs one: its waits hold it in the race.
BRANCH: contextvars.ContextVar[Any] = contextvars.ContextVar("durable_branch", default=None)
# The asyncio functions that decide by completion order, which a replay cannot know: refused over ctx calls.
ASYNCIO_RACES = {"wait": "asyncio.wait", "_wait": "asyncio.wait", "as_completed": "asyncio.as_completed",
                 "_wait_for_one": "asyncio.as_completed"}  # fmt: skip


def plain_race(task: asyncio.Task[Any]) -> str | None:
    """Which asyncio race (asyncio.wait, as_completed) the workflow's task awaits now, if any: its await chain, walked."""
    awaited: Any = task.get_coro()
    for _ in range(64):
        code = getattr(awaited, "cr_code", None) or getattr(awaited, "gi_code", None)
        if code is None:
            return None
        if code.co_filename == asyncio.tasks.__file__ and code.co_name in ASYNCIO_RACES:
            return ASYNCIO_RACES[code.co_name]
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return None


class Suspend(BaseException):
    """Unwinds a workflow that must wait for an answer or a timer."""


class Stop(BaseException):
    """Unwinds a workflow whose run was cancelled, taken over, is being shut down, or whose store failed."""


# What decoding a recorded value raises when it no longer reads as its type.
UNREADABLE = (EncodingError, msgspec.DecodeError, msgspec.ValidationError)


class Calls:
    """What a workflow's ctx calls do; the attributes are an Execution's."""

    __slots__ = ()
    engine: Engine
    store: Store
    clock: Callable[[], float]
    fence: Fence
    run_id: str
    recorded: dict[int, Recorded]
    known: int
    next_seq: int
    keys: set[str] | None
    inflight: int
    _settled: asyncio.Future[None] | None
    wake_at: float | None
    deadline: float | None
    suspending: bool
    parking: bool
    stop_reason: str | None
    store_error: StoreUnavailable | JournalError | None
    violation: NondeterminismError | None
    active: bool
    going: bool
    replay_each: bool
    replay_end: int
    task: asyncio.Task[None]
    loop: asyncio.AbstractEventLoop
    parked_at: set[int]
    tracer: Any  # an OpenTelemetry tracer, or None (durable.tracing)

    def take(self, kind: str, name: str | None = None) -> int:
        """Take the next seq for a ctx call and match it against its record now, when it is called.

        A mismatch found at the call (not when it is awaited) means no call made
        after it, in this branch or another of a gather, ever starts. `name` None
        is a prompt's default key, ``ask-<seq>``.
        """
        if not self.going:
            self._check(kind)  # raises: the common case is one test, not a call
        seq = self.next_seq
        self.next_seq = seq + 1
        record = self.recorded.get(seq)
        if record is not None:
            key = f"ask-{seq}" if name is None else name
            if record.kind != kind or record.name != key:
                if record.kind == "patch":
                    return self.take(kind, name)  # the marker of a patch the code no longer asks about: passed over
                self.going = False
                self.violation = NondeterminismError(
                    self.run_id, seq, f"{record.kind} {record.name!r}", f"{kind} {key!r}"
                )
                raise self.violation
        return seq

    def patched(self, patch_id: str) -> bool:
        """Whether this run takes the new path of a code change (see Context.patched).

        A patch takes a seq only where it says True: a run that went past this
        point before the patch existed has another record here, gets False and
        keeps its seqs. Markers of patches the code no longer asks about (retired
        ones) are passed over, here and by take().
        """
        if not self.going:
            self._check("patched")
        seq = self.next_seq
        while (record := self.recorded.get(seq)) is not None:
            if record.kind != "patch":
                self.took_path(patch_id, False)
                return False  # recorded before the patch existed: the old path, nothing taken
            seq += 1
            if record.name == patch_id:
                self.next_seq = seq
                self.took_path(patch_id, True)
                return True
        if seq < self.replay_end:
            # No record here, but later ones: a call the run made here was never recorded (in flight at a crash,
            # or set aside by a retry). Its later records were made without the patch: keep its old path.
            self.took_path(patch_id, False)
            return False
        self.next_seq = seq + 1
        self.new_record(seq)
        self.store.append_nowait(self.fence, RecordRow(seq, "patch", patch_id, "completed", None, None, 1, self.clock(), self.clock(), None, None))
        if self.replay_each:
            self._replay_from_start()
        return True

    def took_path(self, patch_id: str, new: bool) -> None:
        """A patch recorded in this run said `new` (what check() reports: runs left on an old path)."""

    def new_record(self, seq: int) -> None:
        """A call at `seq` has no record: it starts new work (check() stops here)."""

    def _check(self, call: str) -> None:
        if not self.active:
            raise NotInWorkflow(self.run_id, call)
        if self.violation is not None:
            raise self.violation
        if self.stop_reason is not None:
            raise Stop(self.stop_reason)
        if self.suspending:
            raise Suspend

    def _read(self, seq: int, record: Recorded, decode: Callable[[], Any]) -> Any:
        """Decode a recorded value; one that no longer reads blocks the run (the code changed, or the journal)."""
        try:
            return decode()
        except UNREADABLE as exc:
            self._unreadable(seq, record, exc)

    def _unreadable(self, seq: int, record: Recorded, exc: Exception) -> NoReturn:
        self.going = False
        self.violation = UnreadableRecord(self.run_id, seq, f"{record.kind} {record.name!r}", str(exc))
        raise self.violation from None

    def _lost(self) -> NoReturn:
        # The fence refused the write: the run was cancelled or taken over.
        if self.stop_reason != "cancelled":
            self.going = False
            self.stop_reason = "lost"
        raise Stop(self.stop_reason)

    def _store_failed(self, exc: StoreUnavailable | JournalError) -> NoReturn:
        # Not the workflow's business: the run stops here and stays resumable.
        if self.stop_reason is None:
            self.going = False
            self.stop_reason = "store"
            self.store_error = exc
        raise Stop(self.stop_reason) from None

    async def _write(self, pending: Any) -> Any:
        """Await a store write; a storage fault stops the execution instead of reaching the workflow."""
        try:
            return await pending
        except STORE_FAULTS as exc:
            self._store_failed(exc)

    def _begin(self) -> None:
        if asyncio.current_task(self.loop) is not self.task and self.task is not None and BRANCH.get() is None:
            self._refuse_plain_race()
        self.inflight += 1

    def _refuse_plain_race(self) -> None:
        """A ctx call runs in a task of asyncio.wait or as_completed: what finishes first is not recorded. Refused."""
        race = plain_race(self.task)
        if race is not None:
            self.going = False
            self.violation = UnsafeRace(self.run_id, race)
            raise self.violation

    def _end(self) -> None:
        self.inflight -= 1
        if not self.inflight and self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    async def _fenced(self, write: Callable[..., Any], *args: Any) -> Any:
        """Make a write of this run's own (`write(*args)`), counted in flight: a store fault stops the execution,
        a refused fence (the run cancelled or taken over) stops it as lost. Returns what the write returns."""
        self._begin()
        try:
            result = await self._write(write(*args))
        finally:
            self._end()
        if not (result[0] if isinstance(result, tuple) else result):
            self._lost()
        return result

    async def step(
        self, seq: int, spec: StepSpec, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not self.going:
            self._check("step")
        record = self.recorded.get(seq)
        if record is not None and record.status != "retrying":  # matched when the call was made
            try:  # inline, not through _read: this is the whole cost of a replayed step
                if record.status == "completed":
                    return spec.codec.decode(record.value, spec.label)  # type: ignore[arg-type]
                error = error_from_json(record.error, spec.name)  # type: ignore[arg-type]
            except UNREADABLE as exc:
                self._unreadable(seq, record, exc)
            raise from_step(error, seq)
        self._begin()
        try:
            started = self.clock()
            recorded = None  # what a plain function's thread wrote, if it did: True, False or the storage fault met
            if spec.once and record is None and self.tracer is None:  # the common case: no retries, timeout, spans
                try:
                    if spec.is_async:
                        value = await (fn(*args, **kwargs) if spec.plain else attempt(spec, fn, args, kwargs))
                    else:  # a plain function: its thread records it too, where the store can (one hand-over, not two)
                        here = functools.partial(self._record_here, seq, spec, started)
                        value, recorded = await run_in_thread(run_and_record, spec, fn, args, kwargs, here, loop=self.loop)
                        if recorded is None and inspect.isawaitable(value):
                            value = await value
                    attempts, exc = 1, None
                except Exception as failure:
                    attempts, value, exc = 1, None, failure
            else:
                attempts, value, exc = await self._attempts(seq, spec, fn, args, kwargs, record, started)
            if recorded is None:
                if self.stop_reason is not None and self.stop_reason not in GRACEFUL:
                    raise Stop(self.stop_reason)  # the run is no longer ours to write into
                if self.violation is not None:
                    raise self.violation  # another branch met a mismatch: the journal stays as it was
                # A graceful stop records what it let finish: the next owner must not run it again.
                if exc is None:
                    blob, value = spec.codec.roundtrip(value, spec.label)
                    error = None
                else:
                    blob, error = None, error_to_json(exc)
                final = step_row((
                    seq, "step", spec.name, "failed" if exc else "completed", blob, error, attempts, started,
                    self.clock(), None, None, None, None, None, None))  # fmt: skip
                try:
                    # After a journaled retry, the final record takes the place of the 'retrying' one.
                    written = await (self.store.append if attempts == 1 else self.store.replace)(self.fence, final)
                except STORE_FAULTS as fault:
                    self._store_failed(fault)
            elif isinstance(recorded, STORE_FAULTS):
                self._store_failed(recorded)
            else:
                written = recorded
            if not written:
                self._lost()
            if attempts == 1 and record is None:
                self.known += 1  # a retried step was counted when its first attempt was journaled
            if self.replay_each:
                self._replay_from_start()
            if exc is not None:
                raise from_step(error_from_json(error, spec.name), seq) from exc  # type: ignore[arg-type]
            return value
        finally:
            self._end()

    def _record_here(self, seq: int, spec: StepSpec, started: float, blob: bytes) -> Any:
        """In a plain function's thread: append its record if the store can at once (else None: the loop does);
        what append returned, or the storage fault met, goes back to step()."""
        if (self.stop_reason is not None and self.stop_reason not in GRACEFUL) or self.violation is not None:
            return None
        row = (seq, "step", spec.name, "completed", blob, None, 1, started, self.clock(), None, None, None, None, None, None)
        try:
            return self.store.append_from_thread(self.fence, step_row(row))
        except STORE_FAULTS as fault:
            return fault

    async def _attempts(
        self, seq: int, spec: StepSpec, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
        record: Recorded | None, started: float,
    ) -> tuple[int, Any, Exception | None]:
        """A step's attempts, with its retries and timeout, in a span where OpenTelemetry is configured."""
        first = 1
        if record is not None:  # attempts were journaled before a crash or an unload: go on after them
            first = record.attempts + 1
            await self._wait_until(self._read(seq, record, lambda: DATETIME.decode(record.value, "a retry time")).timestamp())  # type: ignore[arg-type]
        between = functools.partial(self._retry_later, seq, spec, started)
        if self.tracer is None:
            return await run_attempts(spec, fn, args, kwargs, first, between)
        with tracing.step_span(self.tracer, self.run_id, self.workflow.name, seq, spec.name) as span:
            attempts, value, exc = await run_attempts(spec, fn, args, kwargs, first, between)
            tracing.step_done(span, attempts, exc)
        return attempts, value, exc

    async def _retry_later(self, seq: int, spec: StepSpec, started: float, attempts: int, exc: Exception, delay: float) -> None:
        """Journal a failed attempt and when the next is due, then wait for it (unloaded if it is far)."""
        if self.stop_reason is not None and self.stop_reason not in GRACEFUL:
            raise Stop(self.stop_reason)
        wake_at = self.clock() + delay
        retrying = RecordRow(
            seq, "step", spec.name, "retrying", encode(dt.datetime.fromtimestamp(wake_at, UTC), "a retry time"),
            error_to_json(exc), attempts, started, None, None, None,
        )  # fmt: skip
        if not await self._write(self.store.replace(self.fence, retrying)):
            self._lost()
        if attempts == 1 and seq not in self.recorded:
            self.known += 1  # the step's record exists from now on
        log.info("run %s ↺ step %s failed (attempt %d of %d: %s: %s); next attempt in %.1fs", self.run_id, spec.name,
                 attempts, spec.retries + 1, type(exc).__name__, exc, delay)  # fmt: skip
        await self._wait_until(wake_at)

    async def _wait_until(self, wake_at: float) -> None:
        """Wait until `wake_at` by this App's clock: in memory if it is near, else unloaded (resumed by replay)."""
        while (remaining := wake_at - self.clock()) > 0:
            if remaining > self.engine.hold_seconds:
                self._wake_at(wake_at)
                await self._suspend()
            await asyncio.sleep(remaining)
            if self.stop_reason is not None:
                raise Stop(self.stop_reason)

    async def sleep(self, seq: int, seconds: float | dt.timedelta) -> None:
        self._check("sleep")
        if isinstance(seconds, dt.timedelta):
            seconds = seconds.total_seconds()
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"ctx.sleep takes seconds (a number) or a timedelta, not {seconds!r}.")
        record = self.recorded.get(seq)
        if record is not None:
            wake_at = self._read(seq, record, lambda: DATETIME.decode(record.value, "a recorded wake-up time")).timestamp()  # type: ignore[arg-type]
        else:
            now = self.clock()
            wake_at = now + max(0.0, float(seconds))
            await self._fenced(self.store.append, self.fence, RecordRow(
                seq, "sleep", "sleep", "scheduled", encode(dt.datetime.fromtimestamp(wake_at, UTC), "a wake-up time"),
                None, 1, now, None, None, None,
            ))  # fmt: skip
            self.known += 1
            if self.replay_each:
                self._replay_from_start()
        await self._wait_until(wake_at)
        if record is None or record.status == "scheduled":
            self.store.complete_sleep_nowait(self.fence, seq, self.clock())

    def _wake_at(self, wake_at: float) -> None:
        """A durable timer this call waits for: the run's (it wakes the run), or its race branch's."""
        branch = BRANCH.get()
        if branch is not None:
            branch.wake_at = wake_at if branch.wake_at is None else min(branch.wake_at, wake_at)
        else:
            self.wake_at = wake_at if self.wake_at is None else min(self.wake_at, wake_at)

    async def _suspend(self, seq: int | None = None) -> NoReturn:
        """Wait for the world (an answer, a message, a child run at `seq`, a timer): unload the run.

        A branch of a race waits in the race instead, which unloads the run
        only once every branch still running waits.
        """
        if seq is not None:
            self.parked_at.add(seq)
        branch = BRANCH.get()
        if branch is not None:
            await branch.race.hold(branch)  # raises: the branch is run again, or withdrawn
        if self.task is not None and asyncio.current_task(self.loop) is not self.task:
            self._refuse_plain_race()
        # Yield once first: parallel branches already started (asyncio.gather)
        # get to make their own calls, so all of a run's prompts are asked together.
        self.parking = True
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if self.stop_reason not in GRACEFUL:
                raise
        self.going = False
        self.suspending = True
        raise Suspend

    async def publish(self, seq: int, topic: str, value: Any) -> None:
        self._check("publish")
        if seq in self.recorded:
            return  # published when the run first came here: replay does not publish again
        blob = encode(value, f"the value published on {topic!r}")
        now = self.clock()
        await self._fenced(self.store.append, self.fence, RecordRow(seq, "publish", topic, "completed", blob, None, 1, now, now, None, None))
        self.known += 1
        if self.replay_each:
            self._replay_from_start()

    def now(self, seq: int) -> dt.datetime:
        record = self.recorded.get(seq)
        if record is not None:
            return self._read(seq, record, lambda: DATETIME.decode(record.value, "a recorded time"))  # type: ignore[arg-type]
        ts = self.clock()
        blob, value = DATETIME.roundtrip(dt.datetime.fromtimestamp(ts, UTC), "the current time")
        # Not awaited: the writer commits in queue order, so this record is
        # durable before anything the workflow records after using it.
        self.store.append_nowait(self.fence, RecordRow(seq, "now", "now", "completed", blob, None, 1, ts, ts, None, None))
        if self.replay_each:
            self._replay_from_start()
        return value

    def _replay_from_start(self) -> NoReturn:
        """App(replay_every_step=True): unload the run now, so that it is replayed from its start before it goes on."""
        self.going = False
        self.parking = self.suspending = True
        raise Suspend

