"""Drive one run against its journal: replay what is recorded, execute the rest.

An :class:`Execution` loads a run's records once, then calls the workflow. Each
ctx call takes the next seq; if a record exists there it must match the call's
kind and name (else :class:`NondeterminismError`, and the run is blocked with its
journal untouched) and its value is returned at once; otherwise the work is done
and its record committed before the call returns.

A run that must wait for an answer or a long timer is unloaded: a private
``BaseException`` unwinds the workflow (a user's ``except Exception`` cannot
swallow it), steps still in flight in parallel branches are let finish, and the
run is parked in the journal to be resumed later by replay.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec
import pydantic

from .codec import Codec, encode, error_from_json, error_to_json
from .context import Context
from .errors import (
    DuplicatePromptKey,
    EncodingError,
    JournalError,
    NondeterminismError,
    NotInWorkflow,
    SignatureChanged,
    StoreUnavailable,
    UnreadableRecord,
)
from .steps import StepSpec, run_attempts
from .store.base import Fence, RecordRow, Recorded
from .workflow import Workflow

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["HOLD_SECONDS", "Execution"]

log = logging.getLogger("durable")

# A sleep this short is waited in memory; a longer one unloads the run, which a
# timer resumes by replay. Replaying is cheap, holding thousands of coroutines is not.
HOLD_SECONDS = 2.0

_DATETIME = Codec(dt.datetime)
_UTC = dt.timezone.utc


# Which reason to stop wins when several come: the lower, the stronger.
_STOP_RANK = {"cancelled": 0, "lost": 1, "store": 2, "shutdown": 3}


# What a store raises when it cannot do its part: never an outcome of the run.
STORE_FAULTS = (StoreUnavailable, JournalError)


class _Suspended(BaseException):
    """Unwinds a workflow that must wait for an answer or a timer."""


class _Stopped(BaseException):
    """Unwinds a workflow whose run was cancelled, taken over, is being shut down, or whose store failed."""


@functools.lru_cache(maxsize=512)
def _adapter(tp: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(tp)


@functools.lru_cache(maxsize=512)
def _schema(tp: Any) -> str:
    """The JSON schema of an answer type, as stored with its prompt (pydantic rebuilds it at every call)."""
    return encode(_adapter(tp).json_schema(), f"the JSON schema of {tp!r}").decode()


class Execution:
    """One run being executed by this process."""

    __slots__ = (
        "engine", "store", "clock", "fence", "workflow", "run_id", "args", "decoded", "recorded", "known", "next_seq", "keys",
        "inflight", "_settled", "wake_at", "suspending", "parking", "stop_reason", "store_error", "violation", "active",
        "status", "result", "error", "task",
    )  # fmt: skip

    def __init__(
        self,
        engine: Engine,
        workflow: Workflow,
        fence: Fence,
        args: bytes,
        records: list[Recorded],
        decoded: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.clock: Callable[[], float] = engine.clock
        self.fence = fence  # the claim this execution writes under
        self.workflow = workflow
        self.run_id = fence.run_id
        self.args = args
        self.decoded = decoded  # the arguments, when the caller has just decoded them from `args`
        self.recorded = {r.seq: r for r in records}
        # Records known to be committed: those loaded, and appends confirmed since (a lower
        # bound: unawaited ones are left out). Stored with the run when it parks or ends, so
        # that a journal that later holds fewer is known to have lost some.
        self.known = len(records)
        self.next_seq = 0
        self.keys: set[str] | None = None  # prompt keys asked so far (most runs ask none)
        self.inflight = 0
        self._settled: asyncio.Future[None] | None = None  # awaited by drive() while calls are in flight
        self.wake_at: float | None = None
        self.suspending = False
        self.parking = False  # about to unload: shutdown lets it finish parking
        self.stop_reason: str | None = None  # 'cancelled', 'lost', 'shutdown' or 'store'
        self.store_error: StoreUnavailable | JournalError | None = None
        self.violation: NondeterminismError | None = None
        self.active = True
        self.status: str | None = None  # the status this execution left the run in
        self.result: Any = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] = None  # type: ignore[assignment]  # set by Engine.launch

    def stop(self, reason: str) -> None:
        """Stop at the next ctx call: 'cancelled' or 'lost' (write nothing more), 'shutdown' (record what finishes)."""
        if _STOP_RANK[reason] <= _STOP_RANK.get(self.stop_reason or "", 99):
            self.stop_reason = reason  # a run that is no longer ours outranks a graceful stop
        if not self.active:
            return
        if reason != "shutdown":
            self.task.cancel()  # whatever it computes now could not be recorded
        elif self.inflight == 0 and not self.parking:
            self.task.cancel()  # waiting in a short sleep or a non-durable await: nothing to finish

    # --- ctx calls ---------------------------------------------------------

    def take(self, kind: str, name: str | None = None) -> int:
        """Take the next seq for a ctx call and match it against its record now, when it is called.

        A mismatch found at the call (not when it is awaited) means no call made
        after it, in this branch or another of a gather, ever starts. `name` None
        is a prompt's default key, ``ask-<seq>``.
        """
        self._check(kind)
        seq = self.next_seq
        self.next_seq = seq + 1
        record = self.recorded.get(seq)
        if record is not None:
            if name is None:
                name = f"ask-{seq}"
            if record.kind != kind or record.name != name:
                self.violation = NondeterminismError(
                    self.run_id, seq, f"{record.kind} {record.name!r}", f"{kind} {name!r}"
                )
                raise self.violation
        return seq

    def _check(self, call: str) -> None:
        if not self.active:
            raise NotInWorkflow(self.run_id, call)
        if self.violation is not None:
            raise self.violation
        if self.stop_reason is not None:
            raise _Stopped(self.stop_reason)
        if self.suspending:
            raise _Suspended

    def _read(self, seq: int, record: Recorded, decode: Callable[[], Any]) -> Any:
        """Decode a recorded value; one that no longer reads blocks the run (the code changed, or the journal)."""
        try:
            return decode()
        except (EncodingError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.violation = UnreadableRecord(self.run_id, seq, f"{record.kind} {record.name!r}", str(exc))
            raise self.violation from None

    def _lost(self) -> NoReturn:
        # The fence refused the write: the run was cancelled or taken over.
        if self.stop_reason != "cancelled":
            self.stop_reason = "lost"
        raise _Stopped(self.stop_reason)

    def _store_failed(self, exc: StoreUnavailable | JournalError) -> NoReturn:
        # Not the workflow's business: the run stops here and stays resumable.
        if self.stop_reason is None:
            self.stop_reason = "store"
            self.store_error = exc
        raise _Stopped(self.stop_reason) from None

    async def _write(self, pending: Any) -> Any:
        """Await a store write; a storage fault stops the execution instead of reaching the workflow."""
        try:
            return await pending
        except STORE_FAULTS as exc:
            self._store_failed(exc)

    def _begin(self) -> None:
        self.inflight += 1

    def _end(self) -> None:
        self.inflight -= 1
        if not self.inflight and self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    async def step(
        self, seq: int, spec: StepSpec, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        self._check("step")
        record = self.recorded.get(seq)
        if record is not None:  # matched when the call was made
            if record.status == "completed":
                return self._read(seq, record, lambda: spec.codec.decode(record.value, spec.label))  # type: ignore[arg-type]
            raise self._read(seq, record, lambda: error_from_json(record.error, spec.name))  # type: ignore[arg-type]
        self._begin()
        try:
            started = self.clock()
            if spec.plain:  # the common case, without the machinery of retries and timeouts
                try:
                    attempts, value, exc = 1, await fn(*args, **kwargs), None
                except Exception as failure:
                    attempts, value, exc = 1, None, failure
            else:
                attempts, value, exc = await run_attempts(spec, fn, args, kwargs)
            if self.stop_reason is not None and self.stop_reason != "shutdown":
                raise _Stopped(self.stop_reason)  # the run is no longer ours to write into
            if self.violation is not None:
                raise self.violation  # another branch met a mismatch: the journal stays as it was
            # A graceful stop records what it let finish: the next owner must not run it again.
            if exc is None:
                blob, value = spec.codec.roundtrip(value, spec.label)
                error = None
            else:
                blob, error = None, error_to_json(exc)
            record = RecordRow(
                seq, "step", spec.name, "failed" if exc else "completed", blob, error, attempts, started, self.clock(), None, None
            )  # fmt: skip
            try:
                written = await self.store.append(self.fence, record)
            except STORE_FAULTS as fault:
                self._store_failed(fault)
            if not written:
                self._lost()
            self.known += 1
            if exc is not None:
                raise error_from_json(error, spec.name) from exc  # type: ignore[arg-type]
            return value
        finally:
            self._end()

    async def sleep(self, seq: int, seconds: float | dt.timedelta) -> None:
        self._check("sleep")
        if isinstance(seconds, dt.timedelta):
            seconds = seconds.total_seconds()
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"ctx.sleep takes seconds (a number) or a timedelta, not {seconds!r}.")
        record = self.recorded.get(seq)
        if record is not None:
            wake_at = self._read(seq, record, lambda: _DATETIME.decode(record.value, "a recorded wake-up time")).timestamp()  # type: ignore[arg-type]
        else:
            now = self.clock()
            wake_at = now + max(0.0, float(seconds))
            self._begin()
            try:
                ok = await self._write(self.store.append(self.fence, RecordRow(
                    seq, "sleep", "sleep", "scheduled", encode(dt.datetime.fromtimestamp(wake_at, _UTC), "a wake-up time"),
                    None, 1, now, None, None, None,
                )))  # fmt: skip
            finally:
                self._end()
            if not ok:
                self._lost()
            self.known += 1
        while (remaining := wake_at - self.clock()) > 0:
            if remaining > HOLD_SECONDS:
                self.wake_at = wake_at if self.wake_at is None else min(self.wake_at, wake_at)
                await self._suspend()
            await asyncio.sleep(remaining)
            if self.stop_reason is not None:
                raise _Stopped(self.stop_reason)
        if record is None or record.status == "scheduled":
            self.store.complete_sleep_nowait(self.fence, seq, self.clock())

    async def ask(self, seq: int, question: str, tp: Any, key: str | None) -> Any:
        self._check("ask")
        if key is None:
            key = f"ask-{seq}"
        if not isinstance(question, str):
            raise TypeError(f"ctx.ask takes the question as a string, not {question!r}.")
        if self.keys is None:
            self.keys = set()
        elif key in self.keys:
            raise DuplicatePromptKey(self.run_id, key)
        self.keys.add(key)
        adapter = _adapter(tp)
        record = self.recorded.get(seq)
        if record is not None:
            if record.status == "answered":
                try:
                    return adapter.validate_json(record.value)  # type: ignore[arg-type]
                except pydantic.ValidationError as exc:
                    await self._reopen(key, exc)
        else:
            schema = _schema(tp)
            self._begin()
            try:
                ok = await self._write(self.store.append(
                    self.fence, RecordRow(seq, "ask", key, "waiting", None, None, 1, self.clock(), None, question, schema)
                ))  # fmt: skip
            finally:
                self._end()
            if not ok:
                self._lost()
            self.known += 1
        await self._suspend()

    async def _suspend(self) -> NoReturn:
        # Yield once first: parallel branches already started (asyncio.gather)
        # get to make their own calls, so all of a run's prompts are asked together.
        self.parking = True
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if self.stop_reason != "shutdown":
                raise
        self.suspending = True
        raise _Suspended

    async def _reopen(self, key: str, exc: pydantic.ValidationError) -> None:
        # The answer matched the stored JSON schema but not the Python type (a
        # constraint JSON schema cannot express): put the prompt back to waiting.
        log.warning("run %s ✎ answer to %r does not fit its type; asking again: %s", self.run_id, key, exc)
        if not await self._write(self.store.reopen_prompt(self.fence, key, self.clock())):
            self._lost()

    def now(self, seq: int) -> dt.datetime:
        record = self.recorded.get(seq)
        if record is not None:
            return self._read(seq, record, lambda: _DATETIME.decode(record.value, "a recorded time"))  # type: ignore[arg-type]
        ts = self.clock()
        blob, value = _DATETIME.roundtrip(dt.datetime.fromtimestamp(ts, _UTC), "the current time")
        # Not awaited: the writer commits in queue order, so this record is
        # durable before anything the workflow records after using it.
        self.store.append_nowait(self.fence, RecordRow(seq, "now", "now", "completed", blob, None, 1, ts, ts, None, None))
        return value

    # --- driving the run -----------------------------------------------------

    async def drive(self) -> None:
        """Run the workflow to its end, or until it must wait; record the outcome."""
        started = time.perf_counter()
        outcome: str
        value: Any = None
        exiting: BaseException | None = None
        try:
            try:
                args, kwargs = self.decoded or self.workflow.decode_args(self.args)
            except (TypeError, EncodingError) as exc:
                # The recorded arguments no longer fit: the code changed, as with a mismatch.
                self.violation = SignatureChanged(self.run_id, self.workflow.name, str(exc))
                raise self.violation from None
            self.decoded = None
            value = await self.workflow.fn(Context(self), *args, **kwargs)
            outcome = "completed"
        except _Suspended:
            outcome = "suspended"
        except _Stopped:
            outcome = "stopped"
        except asyncio.CancelledError:
            if self.stop_reason is None:
                self.stop_reason = "shutdown"
            outcome = "stopped"
        except (KeyboardInterrupt, SystemExit) as exc:
            # The process is leaving (a library called sys.exit(), or Ctrl-C reached
            # a step): not the run's outcome. Hand the run back, then let it leave.
            if self.stop_reason is None:
                self.stop_reason = "shutdown"
            self.engine.closing = True  # the process is leaving: its worker must not take the run back
            outcome, exiting = "stopped", exc
        except Exception as exc:
            outcome, value = "failed", exc
        try:
            while self.inflight:
                self._settled = asyncio.get_running_loop().create_future()
                await self._settled
            self.active = False
            if outcome in ("completed", "failed") and self.violation is None:
                self._check_all_reached(outcome)
            await self._record_outcome(outcome, value)
            if exiting is not None:
                raise exiting
        except BaseException as exc:
            self.error = self.error or exc
            raise
        finally:
            self.active = False
            self._log(time.perf_counter() - started)

    def _check_all_reached(self, outcome: str) -> None:
        """A run that ends before calls it once recorded has dropped them: the code changed."""
        unreached = [seq for seq in self.recorded if seq >= self.next_seq]
        if unreached:
            record = self.recorded[min(unreached)]
            ended = "returned" if outcome == "completed" else "raised"
            self.violation = NondeterminismError(
                self.run_id, record.seq, f"{record.kind} {record.name!r}", f"nothing: the workflow {ended} before it"
            )

    def _log(self, elapsed: float) -> None:
        run, name, status = self.run_id, self.workflow.name, self.status
        if status == "completed":
            log.info("run %s ● %s completed in %.3fs", run, name, elapsed)
        elif status == "failed":
            log.info("run %s ✖ %s failed in %.3fs: %s: %s", run, name, elapsed, type(self.error).__name__, self.error)
        elif status == "blocked":
            log.warning("run %s ⚠ %s blocked: %s", run, name, self.violation)
        elif status == "waiting":
            log.info("run %s ⏸ %s waiting for an answer", run, name)
        elif status == "sleeping":
            when = dt.datetime.fromtimestamp(self.wake_at or 0, _UTC).strftime("%Y-%m-%d %H:%M:%S")
            log.info("run %s ⏸ %s sleeping until %s UTC", run, name, when)
        elif status == "pending":
            log.info("run %s ⏸ %s unloaded, ready to resume", run, name)
        elif self.stop_reason == "shutdown":
            log.info("run %s ⇠ %s released for another worker (shutdown)", run, name)
        elif self.stop_reason == "cancelled":
            log.info("run %s ■ %s cancelled", run, name)
        elif self.stop_reason == "store":
            reason = self.store_error.reason if self.store_error is not None else "unknown"
            log.warning("run %s ⚡ %s stopped: the store failed (%s); it resumes once the store works", run, name, reason)
        else:
            log.info("run %s ✋ %s stopped: cancelled or taken over by another process", run, name)

    async def _record_outcome(self, outcome: str, value: Any) -> None:
        if self.stop_reason in ("cancelled", "lost"):
            self.status = None  # someone else decided the run's fate: write nothing
            return
        try:
            if self.stop_reason != "store":
                await self._write_outcome(outcome, value)
                return
        except STORE_FAULTS as exc:
            self.stop_reason, self.store_error = "store", exc
        self.status = None
        await self.engine.release(self.run_id, self.known)  # resumable by any worker; retried if this fails too

    async def _write_outcome(self, outcome: str, value: Any) -> None:
        now = self.clock()
        store, fence = self.store, self.fence
        if self.violation is not None:
            self.error = self.violation
            ok = await store.finish(fence, "blocked", None, error_to_json(self.violation), now, self.known)
            self.status = "blocked" if ok else None
            return
        if outcome == "stopped":  # shut down before it ended: hand it to another worker
            await self.engine.release(self.run_id, self.known)
            self.status = None
            return
        if outcome == "suspended":
            self.status = await store.park(fence, self.wake_at, now, self.known)
            return
        if outcome == "completed":
            try:
                blob, self.result = self.workflow.result_codec.roundtrip(value, f"the result of workflow {self.workflow.name!r}")
            except EncodingError as exc:
                outcome, value = "failed", exc
            else:
                ok = await store.finish(fence, "completed", blob, None, now, self.known)
                self.status = "completed" if ok else None
                return
        error = error_to_json(value)
        self.error = error_from_json(error, self.workflow.name)
        self.error.__cause__ = value
        ok = await store.finish(fence, "failed", None, error, now, self.known)
        self.status = "failed" if ok else None
