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
from typing import TYPE_CHECKING, Any

from . import tracing
from .calls import GRACEFUL, STOP_RANK, STORE_FAULTS, UTC, Stop, Suspend
from .codec import error_from_json, error_to_json
from .context import Context
from .errors import EncodingError, JournalError, NondeterminismError, RunTimedOut, SignatureChanged, StoreUnavailable
from .store.base import Fence, Recorded
from .races import Races
from .steps import failing_step
from .workflow import Workflow

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Execution"]

log = logging.getLogger("durable")


class Execution(Races):
    """One run being executed by this process."""

    __slots__ = (
        "engine", "store", "clock", "fence", "workflow", "run_id", "args", "decoded", "recorded", "known", "next_seq", "keys",
        "inflight", "_settled", "wake_at", "deadline", "suspending", "parking", "stop_reason", "store_error", "violation", "active",
        "status", "result", "error", "task", "loop", "going", "replay_each", "replay_end", "run_deadline", "races", "parked_at", "race_waits",
        "tracer",
    )  # fmt: skip

    def __init__(
        self,
        engine: Engine,
        workflow: Workflow,
        fence: Fence,
        args: bytes,
        records: list[Recorded],
        decoded: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
        deadline: float | None = None,
    ) -> None:
        self.engine = engine
        self.run_deadline = deadline  # past it the run is stopped and ends failed, RunTimedOut
        self.store = engine.store
        self.clock: Callable[[], float] = engine.clock
        self.fence = fence  # the claim this execution writes under
        self.workflow = workflow
        self.run_id = fence.run_id
        self.args = args
        self.decoded = decoded  # the arguments, when the caller has just decoded them from `args`
        self.recorded = {r.seq: r for r in records}
        self.replay_end = records[-1].seq + 1 if records else 0  # ctx.is_replaying: a call before it has a record
        # Records known to be committed: those loaded, and appends confirmed since (a lower
        # bound: unawaited ones are left out). Stored with the run when it parks or ends, so
        # that a journal that later holds fewer is known to have lost some.
        self.known = len(records)
        self.next_seq = 0
        self.keys: set[str] | None = None  # prompt keys asked so far (most runs ask none)
        self.inflight = 0
        self._settled: asyncio.Future[None] | None = None  # awaited by drive() while calls are in flight
        self.wake_at: float | None = None  # the earliest durable timer it waits for (unloaded 'sleeping')
        self.deadline: float | None = None  # the earliest deadline of the prompts it waits for
        self.suspending = False
        self.parking = False  # about to unload: shutdown lets it finish parking
        self.stop_reason: str | None = None  # 'cancelled', 'lost', 'shutdown' or 'store'
        self.store_error: StoreUnavailable | JournalError | None = None
        self.violation: NondeterminismError | None = None
        self.active = True
        # Whether calls may go on: False once the run is inactive, violated, stopping or suspending (the one test of
        # take() and step(); every place that sets one of those four sets it too).
        self.going = True
        self.status: str | None = None  # the status this execution left the run in
        self.result: Any = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] = None  # type: ignore[assignment]  # set by Engine.launch
        # Named to asyncio.current_task: without it, Python 3.11 looks the loop up with a getpid() system call.
        self.loop = asyncio.get_running_loop()
        self.replay_each = engine.replay_every_step
        self.races: list[Any] = []  # ctx.wait and ctx.as_completed races not decided yet
        self.parked_at: set[int] = set()  # the seqs of the waiting records its calls wait at
        self.race_waits = False  # it unloads with branches of a race waiting: woken at the first wait filled
        self.tracer = tracing.tracer()  # None unless the application configured OpenTelemetry

    def stop(self, reason: str) -> None:
        """Stop at the next ctx call: 'cancelled' or 'lost' (write nothing more), 'shutdown' or 'paused' (record what finishes)."""
        if STOP_RANK[reason] <= STOP_RANK.get(self.stop_reason or "", 99):
            self.going = False
            self.stop_reason = reason  # a run that is no longer ours outranks a graceful stop
        if not self.active:
            return
        if reason not in GRACEFUL:
            self.task.cancel()  # whatever it computes now could not be recorded
            for race in self.races:
                race.drop()  # nor what the branches of its races compute
        elif self.inflight == 0 and not self.parking:
            self.task.cancel()  # waiting in a short sleep or a non-durable await: nothing to finish

    async def ended(self) -> None:
        """Wait until its task is done, without its error and without cancelling it if this wait is cancelled.

        The engine's done callback was added first, so it has run when this returns (as after asyncio.wait,
        which costs a set, a callback closure and a hasattr that fails per call).
        """
        waiter = self.loop.create_future()
        wake = functools.partial(_wake, waiter)
        self.task.add_done_callback(wake)
        try:
            await waiter
        finally:
            self.task.remove_done_callback(wake)

    # --- driving the run -----------------------------------------------------

    async def drive(self) -> None:
        """Run the workflow to its end, or until it must wait; record the outcome."""
        started = time.perf_counter()
        outcome: str
        value: Any = None
        exiting: BaseException | None = None
        timer = self._time_limit()
        span = tracing.start_run(self.tracer, self.run_id, self.workflow.name) if self.tracer is not None else None
        try:
            try:
                if self.stop_reason == "timeout":
                    raise Stop("timeout")  # past its deadline already: nothing of it runs again
                args, kwargs = self.decoded or self.workflow.decode_args(self.args)
            except (TypeError, EncodingError) as exc:
                # The recorded arguments no longer fit: the code changed, as with a mismatch.
                self.going = False
                self.violation = SignatureChanged(self.run_id, self.workflow.name, str(exc))
                raise self.violation from None
            self.decoded = None
            value = await self.workflow.fn(Context(self), *args, **kwargs)
            outcome = "completed"
        except Suspend:
            outcome = "suspended"
        except Stop:
            outcome = "stopped"
        except asyncio.CancelledError:
            if self.stop_reason is None:
                self.going = False
                self.stop_reason = "shutdown"
            outcome = "stopped"
        except (KeyboardInterrupt, SystemExit) as exc:
            # The process is leaving (a library called sys.exit(), or Ctrl-C reached
            # a step): not the run's outcome. Hand the run back, then let it leave.
            if self.stop_reason is None:
                self.going = False
                self.stop_reason = "shutdown"
            self.engine.closing = True  # the process is leaving: its worker must not take the run back
            outcome, exiting = "stopped", exc
        except Exception as exc:
            outcome, value = "failed", exc
        if self.suspending and outcome == "completed":
            outcome = "suspended"  # a call waits, but its Suspend was caught (gather(return_exceptions=True)): replayed
        try:
            while self.inflight:
                self._settled = asyncio.get_running_loop().create_future()
                await self._settled
            self.race_waits = self.end_races()
            self.going = False
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
            self.going = False
            self.active = False
            if timer is not None:
                timer.cancel()
            if span is not None:
                tracing.end_run(*span, outcome, self.status, value if outcome == "failed" else None)
            self._log(time.perf_counter() - started)

    def _time_limit(self) -> asyncio.TimerHandle | None:
        """Stop the run at its deadline, whatever it is doing (a test clock: at its next launch, when it is due)."""
        if self.run_deadline is None:
            return None
        left = self.run_deadline - self.clock()
        if left <= 0:
            self.going = False
            self.stop_reason = "timeout"
            return None
        if not self.engine.hold_seconds:  # a virtual clock moves by itself only when told to
            return None
        return asyncio.get_running_loop().call_later(left, self.stop, "timeout")

    def _check_all_reached(self, outcome: str) -> None:
        """A run that ends before calls it once recorded has dropped them: the code changed."""
        unreached = [seq for seq, r in self.recorded.items() if seq >= self.next_seq and r.kind != "patch"]
        if unreached:
            record = self.recorded[min(unreached)]
            ended = "returned" if outcome == "completed" else "raised"
            self.going = False
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
            when = dt.datetime.fromtimestamp(self.wake_at or 0, UTC).strftime("%Y-%m-%d %H:%M:%S")
            log.info("run %s ⏸ %s sleeping until %s UTC", run, name, when)
        elif status == "pending":
            log.info("run %s ⏸ %s unloaded, ready to resume", run, name)
        elif self.stop_reason == "shutdown":
            log.info("run %s ⇠ %s released for another worker (shutdown)", run, name)
        elif self.stop_reason == "paused":
            log.info("run %s ⏯ %s paused", run, name)
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
        if self.stop_reason == "timeout":
            outcome, value = "failed", RunTimedOut(self.run_id, self.run_deadline)  # type: ignore[arg-type]
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
            waiting_at = sorted(self.parked_at)
            self.status = await store.park(fence, self.wake_at, now, self.known, self.deadline, waiting_at, self.race_waits)
            return
        if outcome == "completed":
            try:
                blob, self.result = self.workflow.result_codec.roundtrip(value, self.workflow.result_label)
            except EncodingError as exc:
                outcome, value = "failed", exc
            else:
                ok = await store.finish(fence, "completed", blob, None, now, self.known)
                self.status = "completed" if ok else None
                return
        error = error_to_json(value, failing_step(value))
        self.error = error_from_json(error, self.workflow.name)
        self.error.__cause__ = value
        ok = await store.finish(fence, "failed", None, error, now, self.known)
        self.status = "failed" if ok else None


def _wake(waiter: asyncio.Future[None], _task: asyncio.Task[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
