"""This process's executions of runs: claim → launch → release, room, and who waits for which run.

The engine alone decides which runs this process executes. A run is executed
only under a claim (an owner and an epoch written by the store), and every
path that claims a run either launches it or releases it at once, so a run is
never left claimed and idle while this process lives. The worker, the App's
calls and answers all claim through the engine's methods.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .calls import HOLD_SECONDS
from .codec import error_to_json
from .errors import AppNotOpen, JournalError, RunIdInUse, RunNotFound, StoreUnavailable
from .owner import Owner, is_dead_here, resume_reason as _reason
from .replay import Execution
from .store.base import FINAL, Answered, Claimed, Fence, Recorded, RunRow, Store
from .workflow import Workflow, ended_outcome

__all__ = ["Engine"]

log = logging.getLogger("durable")

# An answer or a message, as the store writes it: (claimant or None, lease seconds) -> its outcome.
Deliver = Callable[[str | None, float], Awaitable[Answered | None]]

# How long a waiter sleeps after a store fault before it looks again.
RETRY_SECONDS = 0.5


class Engine:
    """The runs this process executes, and the claims that let it."""

    def __init__(
        self,
        store: Store,
        workflows: Mapping[str, Workflow],
        *,
        clock: Callable[[], float],
        lease_seconds: float,
        max_concurrent_runs: int,
        poll_interval: float,
        replay_every_step: bool = False,
        queues: Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.workflows = workflows  # the App's registry, read here
        self.queues = queues if queues is not None else {}  # the App's queues (durable.Queue), read at each claim
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.max_concurrent_runs = max_concurrent_runs
        self.poll_interval = poll_interval
        self.replay_every_step = replay_every_step  # tests: unload and replay after every new record
        # A test clock moves only when told to: every durable wait unloads the run, and moving the clock fires it.
        self.hold_seconds = 0.0 if getattr(clock, "virtual", False) else HOLD_SECONDS
        self.owner = Owner().id  # taken when the App opens: never shared with a parent before fork()
        self.closing = False  # take on no more runs
        self.closed = False  # shut down: waiting for an outcome here is over
        self.kick: Callable[[], None] = lambda: None  # wakes the worker (set by the App)
        self.saturated = False  # the worker found no room on its last pass
        self._executions: dict[str, Execution] = {}
        # Runs being created or claimed here, with a future for whoever waits for that to end (made on demand).
        self._starting: dict[str, asyncio.Future[None] | None] = {}
        self._claims: dict[asyncio.Task[Any], str] = {}  # answers claiming their run, adoptions after a cancelled start
        self._cancelled: set[str] = set()  # cancelled while this engine was claiming them: never launch
        self._stranded: dict[str, int | None] = {}  # held, executed nowhere: release failed (records to write)
        self._changed = asyncio.Event()

    # --- what this process executes -------------------------------------------------

    def executing(self, run_id: str) -> Execution | None:
        return self._executions.get(run_id)

    def busy(self, run_id: str) -> bool:
        """Whether this process executes the run or is claiming it right now."""
        return run_id in self._executions or run_id in self._starting

    @property
    def in_flight(self) -> int:
        """Runs executing or being claimed here: what counts against max_concurrent_runs."""
        executions = self._executions
        return len(executions) + sum(1 for run_id in self._claims.values() if run_id not in executions)

    def room(self) -> int:
        return max(0, self.max_concurrent_runs - self.in_flight)

    def notify(self) -> None:
        """Wake everyone waiting for a run to change."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def subscribe(self) -> asyncio.Event:
        """An event set at the next change of any run (here, or seen by the worker elsewhere)."""
        return self._changed

    @staticmethod
    async def wait_changed(changed: asyncio.Event, timeout: float) -> None:
        """Wait until `changed` (from subscribe) is set, at most `timeout` seconds."""
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            pass

    def _mark(self, run_id: str) -> bool:
        if run_id in self._starting:
            return False
        self._starting[run_id] = None
        return True

    def _unmark(self, run_id: str) -> None:
        done = self._starting.pop(run_id, None)
        if done is not None and not done.done():
            done.set_result(None)

    async def _settled(self, run_id: str) -> None:
        """Wait until a start or claim of `run_id` in progress here has written what it writes."""
        while run_id in self._starting:
            pending = self._starting[run_id]
            if pending is None:
                pending = self._starting[run_id] = asyncio.get_running_loop().create_future()
            await asyncio.shield(pending)

    # --- starting and claiming ------------------------------------------------------

    async def start(
        self, workflow: Workflow, run_id: str, blob: bytes, decoded: Any, rerun: bool, deadline: float | None = None
    ) -> tuple[bool, RunRow | None]:
        """Create and launch a run, or resume the one stored under run_id: (created, the row if it had ended)."""
        running = self._executions.get(run_id)
        if running is not None and running.workflow is not workflow:
            raise RunIdInUse(run_id, running.workflow.name, workflow.name)
        if running is not None or run_id in self._starting:
            return False, None  # executing, or being created or claimed here: reads wait for it (load)
        if rerun:
            ended = await self.store.ended_run(run_id)
            if ended is not None and ended.workflow == workflow.name:
                return False, ended  # rerunning a finished script: nothing to write
        self._mark(run_id)
        try:
            existing = await self.store.create_run(
                run_id, workflow.name, blob, self.owner, self.lease_seconds, self.clock(), deadline
            )
            if existing is None:
                log.info("run %s ▶ %s started", run_id, workflow.name)
                self.launch(workflow, Fence(run_id, self.owner, 1), blob, [], decoded, deadline)
                return True, None
            if existing.workflow != workflow.name:
                raise RunIdInUse(run_id, existing.workflow, workflow.name)
            if existing.status in FINAL:
                return False, existing
            if existing.status != "paused" and existing.owner != self.owner:  # paused: wait for its resume  # else claimed by this engine's worker while we looked: wait for it
                await self._take(existing, "rerun")  # None: another live process executes it
        except asyncio.CancelledError:
            # A queued create or claim commits even though our caller gave up on it.
            self._adopt_later(run_id)
            raise
        finally:
            self._unmark(run_id)
        return False, None

    async def _take(self, row: RunRow, reason: str) -> bool:
        """Claim a stored run (compare and set) and resume it; False if another process holds or took it."""
        dead = row.owner is not None and is_dead_here(row.owner)
        claimed = await self.store.claim(
            row.run_id, row.status, row.owner, self.owner, self.lease_seconds, self.clock(), owner_dead=dead
        )
        if claimed is None:
            return False
        await self.resume(claimed, reason)
        return True

    def _adopt_later(self, run_id: str) -> None:
        self._claim_later(run_id, self._adopt(run_id))

    def _claim_later(self, run_id: str, claim: Any) -> None:
        task = asyncio.ensure_future(claim)
        self._claims[task] = run_id  # close() waits for it; it counts against max_concurrent_runs
        task.add_done_callback(self._claim_done)

    async def _adopt(self, run_id: str) -> None:
        """Resume a run a cancelled start() may have claimed for this process, once its writes have committed."""
        try:
            await self.store.flush()
            row = await self.store.load_run(run_id)
        except Exception as exc:
            log.error("run %s: could not check it after its start was cancelled: %s", run_id, exc)
            return
        if row is None or row.status != "running" or row.owner != self.owner or run_id in self._executions:
            return
        marked = self._mark(run_id)
        try:
            claimed = Claimed(run_id, row.workflow, row.args, row.epoch, "running", self.owner, None, row.records, row.deadline)
            await self.resume(claimed, "its start was cancelled")
        finally:
            if marked:
                self._unmark(run_id)

    async def claim_ready(self, dead_owners: list[str]) -> int:
        """Claim what this process may execute now (orphans first) and resume it; return how many."""
        room = self.room()
        if self.closing or room == 0:
            return 0  # saturated stays as the last claim found it: only then are runs known to wait
        self.saturated = False
        limits = {name: queue.limits for name, queue in self.queues.items()}
        claimed = await self.store.claim_ready(self.owner, list(self.workflows), dead_owners, room, self.lease_seconds, self.clock(), limits)
        marked = {c.run_id for c in claimed if self._mark(c.run_id)}
        fresh, contested = [c for c in claimed if c.run_id in marked], [c for c in claimed if c.run_id not in marked]
        try:
            await asyncio.gather(
                *(self.resume(c, _reason(c, dead_owners)) for c in fresh),
                *(self._resume_when_settled(c, _reason(c, dead_owners)) for c in contested),
            )
        finally:
            for c in fresh:
                self._unmark(c.run_id)
        if len(claimed) == room:
            self.saturated = True  # more may wait: a run ending here kicks the worker
        return len(claimed)

    async def _resume_when_settled(self, claimed: Claimed, reason: str) -> None:
        # Another path of this engine (a start, an answer) was at this run when the
        # claim took it: the claim that succeeded launches it, and this one did.
        await self._settled(claimed.run_id)
        if self._mark(claimed.run_id):
            try:
                await self.resume(claimed, reason)
            finally:
                self._unmark(claimed.run_id)

    async def resume(self, claimed: Claimed, reason: str) -> None:
        """Launch a run just claimed; if that cannot be done, release it for any worker.

        A claimed run is never left idle: another worker could not take it while
        this process lives. A closing engine releases it at once.
        """
        if self.closing:
            await self.release(claimed.run_id)
            return
        try:
            try:
                records = await self.store.load_replay(claimed.run_id)
            except JournalError as damage:  # the file is damaged: retrying would only repeat it
                await self._block(claimed, damage)
                return
            if len(records) < claimed.records:
                await self._refuse_damaged(claimed, len(records))
                return
            n = len(records)
            log.info(
                "run %s ↻ %s resumed: %s (%d record%s to replay)",
                claimed.run_id, claimed.workflow, reason, n, "" if n == 1 else "s",
            )  # fmt: skip
            workflow = self.workflows[claimed.workflow]
            self.launch(workflow, Fence(claimed.run_id, self.owner, claimed.epoch), claimed.args, records, None, claimed.deadline)
        except BaseException as exc:
            await self.release(claimed.run_id)
            if not isinstance(exc, Exception):
                raise
            log.error("run %s: not resumed (%s: %s); released for any worker", claimed.run_id, type(exc).__name__, exc)

    async def _refuse_damaged(self, claimed: Claimed, found: int) -> None:
        """A run whose journal holds fewer records than it once committed: blocked, never run on."""
        damage = JournalError(
            self.store.target,
            f"run {claimed.run_id!r} committed {claimed.records} records but only {found} are left: records were "
            "lost (damaged pages, or a deleted -wal file). Its completed steps would run again, so it is blocked. "
            "Restore the journal from a backup, then run it again.",
        )
        await self._block(claimed, damage)

    async def _block(self, claimed: Claimed, damage: JournalError) -> None:
        """Block a run whose journal cannot be trusted, with the damage as its error; release it if even that fails."""
        log.error("run %s ⚠ %s blocked: %s", claimed.run_id, claimed.workflow, damage)
        fence = Fence(claimed.run_id, self.owner, claimed.epoch)
        try:
            await self.store.finish(fence, "blocked", None, error_to_json(damage), self.clock(), claimed.records)
        except (StoreUnavailable, JournalError):
            await self.release(claimed.run_id)
        self.notify()

    def launch(
        self,
        workflow: Workflow,
        fence: Fence,
        args: bytes,
        records: list[Recorded],
        decoded: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
        deadline: float | None = None,
    ) -> None:
        run_id = fence.run_id
        if run_id in self._executions:
            return  # two paths of this engine claimed it at once (a cancelled start and a worker pass)
        if run_id in self._cancelled:
            self._cancelled.discard(run_id)
            return  # cancelled while it was being claimed
        execution = Execution(self, workflow, fence, args, records, decoded, deadline)
        self._executions[run_id] = execution
        self._stranded.pop(run_id, None)  # executed here again: its next end releases it
        # The loop's own create_task takes the name (asyncio.create_task formats a default name first).
        execution.task = execution.loop.create_task(execution.drive(), name=f"durable run {run_id}")
        execution.task.add_done_callback(functools.partial(self._ended, execution))

    def _ended(self, execution: Execution, task: asyncio.Task[None]) -> None:
        if self._executions.get(execution.run_id) is execution:
            del self._executions[execution.run_id]
        if not task.cancelled() and task.exception() is not None and execution.stop_reason is None:
            log.error("run %s: recording its outcome failed", execution.run_id, exc_info=task.exception())
        if execution.status in ("sleeping", "pending") or self.saturated or execution.stop_reason == "store":
            self.kick()
        if self.replay_every_step and execution.status in ("waiting", "sleeping") and execution.known > len(execution.recorded):
            # Its new records are replayed now, not at the next answer or timer.
            self._claim_later(execution.run_id, self._replay_parked(execution.run_id))
        self.notify()

    async def _replay_parked(self, run_id: str) -> None:
        row = await self.store.load_run(run_id)
        if row is not None and row.status in ("waiting", "sleeping") and self._mark(run_id):
            try:
                await self._take(row, "replay_every_step")
            finally:
                self._unmark(run_id)

    async def release(self, run_id: str, records: int | None = None) -> None:
        """Hand a run this process holds back to any worker; if the store fails, the worker retries."""
        try:
            await self.store.release(self.owner, self.clock(), run_id, records)
        except (StoreUnavailable, JournalError) as exc:
            if run_id not in self._stranded:
                log.warning("run %s: could not be released (%s); retrying until the store works", run_id, exc.reason)
            self._stranded[run_id] = records
        else:
            self._stranded.pop(run_id, None)
        self.kick()

    async def release_stranded(self) -> None:
        """Retry releasing the runs this process holds but no longer executes (their release met a store fault).
        One still busy here waits for a later pass, never dropped: no claim takes a live owner's run."""
        for run_id, records in list(self._stranded.items()):
            if not self.busy(run_id):
                await self.release(run_id, records)

    # --- leases and lost runs --------------------------------------------------------

    async def renew(self) -> None:
        """Extend the lease of every run executing here; stop those this process no longer holds."""
        launched = list(self._executions.values())
        self._stop_lost(launched, await self.store.renew(self.owner, self.lease_seconds))

    async def check_held(self) -> None:
        """Stop local executions of runs another process cancelled or took over."""
        if self._executions:
            launched = list(self._executions.values())
            self._stop_lost(launched, await self.store.held(self.owner))

    @staticmethod
    def _stop_lost(launched: list[Execution], held: dict[str, tuple[int, bool]]) -> None:
        # Only runs launched before the read: their claims are committed, so visible to it.
        for execution in launched:
            epoch, paused = held.get(execution.run_id, (None, False))
            if not execution.active or execution.stop_reason not in (None, "shutdown", "paused"):
                continue
            if epoch != execution.fence.epoch:
                execution.stop("lost")  # whatever it computes now could not be recorded: interrupt it at once
            elif paused:
                execution.stop("paused")  # paused from another process: unload it at its next ctx call

    # --- answers and cancels --------------------------------------------------------------

    async def deliver(self, run_id: str, workflow_name: str, write: Deliver, why: str) -> Answered | None:
        """Apply an answer or a message (`write(claimant, lease_seconds)`); if it makes the run ready and this
        process can execute it, the same commit claims it, and it is resumed here at once.
        """
        take = not self.closing and workflow_name in self.workflows and self.room() > 0 and not self.busy(run_id)
        if not take:
            delivered = await write(None, 0.0)
            if delivered is not None and delivered.ready:
                self.kick()
            if (execution := self._executions.get(run_id)) is not None:
                execution.recheck_races()  # a branch of a race it runs here may wait for this
            return delivered
        self._mark(run_id)
        claim = asyncio.ensure_future(self._deliver_and_resume(run_id, write, why))
        self._claims[claim] = run_id
        claim.add_done_callback(self._claim_done)
        # Once queued, the write commits whether or not our caller waits for it:
        # the claim then runs to its end, so a claimed run is always resumed or released.
        return await asyncio.shield(claim)

    async def _deliver_and_resume(self, run_id: str, write: Deliver, why: str) -> Answered | None:
        try:
            delivered = await write(self.owner, self.lease_seconds)
            if delivered is not None and delivered.claimed is not None:  # the run is ready, and now ours
                await self.resume(delivered.claimed, why)
            return delivered
        finally:
            self._unmark(run_id)

    def _claim_done(self, claim: asyncio.Task[Any]) -> None:
        self._claims.pop(claim, None)
        if not claim.cancelled():
            claim.exception()  # retrieved: answer() raises it to its caller; _adopt logs its own
        if self.saturated:
            self.kick()  # room again

    async def cancel(self, run_id: str) -> str:
        """Cancel a run; return its status before (RunNotFound if there is none)."""
        before = await self.store.cancel(run_id, self.clock())
        if before is None:
            raise RunNotFound(run_id)
        status = before[0]
        if status in FINAL:
            return status
        execution = self._executions.get(run_id)
        if execution is not None and execution.active:
            execution.stop("cancelled")
        elif run_id in self._starting:
            self._cancelled.add(run_id)  # its claim may have committed before the cancel: don't launch it
        log.info("run %s ■ cancelled (was %s)", run_id, status)
        self.notify()
        return status

    # --- waiting for outcomes ----------------------------------------------------------

    async def load(self, run_id: str) -> RunRow:
        """The run as stored; RunNotFound if there is none (nor one being created here)."""
        starting = run_id in self._starting  # looked at before the read: its create may commit meanwhile
        row = await self.store.load_run(run_id)
        if row is None and (starting or run_id in self._starting):
            await self._settled(run_id)  # another call here is creating it
            row = await self.store.load_run(run_id)
        if row is None:
            raise RunNotFound(run_id)
        return row

    async def outcome(self, run_id: str) -> Any:
        """Wait until the run ends (or is blocked); return its result or raise its error.

        A store fault does not end the wait: the run is still resumable, and the
        wait goes on once the store answers again.
        """
        while True:
            if self.closed:
                raise AppNotOpen(self.store.target)
            changed = self._changed
            execution = self._executions.get(run_id)
            if execution is not None:
                await execution.ended()  # _ended has run once it returns
                if execution.status == "completed":
                    return execution.result
                if execution.status in ("failed", "blocked") and execution.error is not None:
                    raise execution.error
                continue
            try:
                row = await self.load(run_id)
            except StoreUnavailable as exc:
                log.warning("run %s: waiting for its outcome, the store failed (%s)", run_id, exc.reason)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if row.status in FINAL or row.status == "blocked":
                return self.ending(row)
            if self.busy(run_id):
                continue
            await self.wait_changed(changed, self.poll_interval)

    def ending(self, row: RunRow) -> Any:
        """The result of an ended (or blocked) run, or its error raised."""
        return ended_outcome(row, self.workflows.get(row.workflow))

    # --- shutting down -------------------------------------------------------------------------

    async def shutdown(self, grace_seconds: float) -> None:
        """Take on nothing more; let steps in flight finish and record them (within the grace); release the rest."""
        self.closing = True
        if self._claims:  # each either launches its run, stopped below, or releases it
            await asyncio.gather(*self._claims, return_exceptions=True)
        executions = list(self._executions.values())
        for execution in executions:
            execution.stop("shutdown")
        tasks = [e.task for e in executions]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.store.release(self.owner, self.clock())
        except (StoreUnavailable, JournalError) as exc:
            log.warning("could not release this process's runs (%s); their lease lets others take them", exc.reason)
        self.closed = True
        self.notify()

