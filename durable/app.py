"""App: the workflow registry and every operation on runs and prompts."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from .codec import decode_any, encode, error_from_json, schema_violation
from .errors import (
    AppNotOpen,
    DefinitionError,
    EncodingError,
    InvalidAnswer,
    PromptAlreadyAnswered,
    PromptNotFound,
    RunAlreadyFinished,
    RunCancelled,
    RunIdInUse,
    RunNotFound,
    WorkflowNotFound,
)
from .journal import FINAL, Journal, Recorded, RunRow
from .model import Cursor, Prompt, Record, Run
from .owner import Owner, is_alive
from .replay import Execution
from .worker import Worker
from .workflow import Workflow

__all__ = ["App", "RunHandle"]

log = logging.getLogger("durable")

F = TypeVar("F", bound=Callable[..., Any])

STATUSES = ("pending", "running", "sleeping", "waiting", "blocked", "completed", "failed", "cancelled")


class RunHandle:
    """A started run: wait for its result or look at its status."""

    __slots__ = ("_app", "_ended", "created", "run_id")

    def __init__(self, app: App, run_id: str, ended: RunRow | None = None, created: bool = False) -> None:
        self._app, self.run_id = app, run_id
        self.created = created  # whether the call that made this handle created the run
        self._ended = ended  # the run's row when start() found it already ended

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to end; return its result or raise its error (TimeoutError after `timeout` s)."""
        if self._ended is not None:
            return self._app._ending(self._ended)
        if timeout is None:
            return await self._app._outcome(self.run_id)
        async with asyncio.timeout(timeout):
            return await self._app._outcome(self.run_id)

    async def status(self) -> str:
        """The run's current status."""
        return await self._app.status(self.run_id)

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id!r}>"


class App:
    """Workflows and their journal in one SQLite file.

    Args:
        path: the journal file; default ``$DURABLE_DB``, else ``durable.db``.
        durability: ``"normal"`` (default) survives a crash of the process;
            ``"full"`` also survives power loss, at the cost of an fsync per commit.
        clock: returns the current time in seconds since the epoch (for tests).
        poll_interval: how often, at most, the worker looks for work done by
            other processes (answers, due timers, dead owners).
        lease_seconds: how long a run stays claimed by an owner on another
            machine that stopped heart-beating.
        shutdown_grace_seconds: how long leaving ``async with app`` lets steps
            in flight finish before their runs are released.
        max_concurrent_runs: how many runs this App's worker resumes at once
            (runs started with `run`/`start` in this process are not held back).

    Example:
        app = durable.App("shop.db")

        @app.workflow
        async def checkout(ctx: durable.Context, order_id: str) -> dict: ...

        async with app:
            print(await app.run(checkout, "o-42", run_id="order-o-42"))
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        durability: str = "normal",
        clock: Callable[[], float] | None = None,
        poll_interval: float = 0.25,
        lease_seconds: float = 30.0,
        shutdown_grace_seconds: float = 10.0,
        max_concurrent_runs: int = 100,
    ) -> None:
        self.path = os.fspath(path) if path is not None else os.environ.get("DURABLE_DB") or "durable.db"
        self._journal = Journal(self.path, durability)
        self._clock: Callable[[], float] = clock or time.time
        self.poll_interval = poll_interval
        # Long enough that a busy process's heartbeat (every third of it) is never
        # late; short enough that a run of a machine that died resumes in ~30 s.
        self.lease_seconds = lease_seconds
        self.shutdown_grace_seconds = shutdown_grace_seconds
        if isinstance(max_concurrent_runs, bool) or not isinstance(max_concurrent_runs, int) or max_concurrent_runs < 1:
            raise ValueError(f"max_concurrent_runs must be a whole number >= 1, not {max_concurrent_runs!r}")
        self.max_concurrent_runs = max_concurrent_runs
        self._owner = Owner()
        self._workflows: dict[str, Workflow] = {}
        self._by_fn: dict[Any, Workflow] = {}
        self._executions: dict[str, Execution] = {}
        self._starting: set[str] = set()
        self._claims: set[asyncio.Task[str | None]] = set()  # answers claiming their run (App.answer)
        self._cancelled: set[str] = set()  # cancelled while this App was claiming them: never launch
        self._worker: Worker | None = None
        self._changed: asyncio.Event | None = None
        self._open = False
        self._closing = False  # leaving: take on no more runs

    # --- registry --------------------------------------------------------

    def workflow(self, fn: F | None = None, *, name: str | None = None) -> Any:
        """Register an ``async def`` workflow, under its function name or `name`."""

        def register(fn: F) -> F:
            wf_name = name if name is not None else getattr(fn, "__name__", None)
            if not isinstance(wf_name, str) or not wf_name:
                raise DefinitionError(f"@app.workflow(name=...) takes a non-empty string, not {wf_name!r}.")
            if wf_name in self._workflows:
                raise DefinitionError(
                    f"A workflow named {wf_name!r} is already registered on this App. "
                    "Give one of them another name with @app.workflow(name=...)."
                )
            workflow = Workflow(fn, wf_name)
            self._workflows[wf_name] = workflow
            self._by_fn[fn] = workflow
            return fn

        return register if fn is None else register(fn)

    @property
    def workflows(self) -> dict[str, Workflow]:
        return dict(self._workflows)

    def _resolve(self, wf: Any) -> Workflow:
        if isinstance(wf, str):
            found = self._workflows.get(wf)
            name = wf
        else:
            try:
                found = self._by_fn.get(wf)
            except TypeError:
                found = None
            name = getattr(wf, "__name__", repr(wf))
        if found is None:
            raise WorkflowNotFound(name, list(self._workflows))
        return found

    # --- lifecycle -------------------------------------------------------

    async def open(self) -> None:
        """Open the journal and start the background worker."""
        if self._open:
            return
        await self._journal.open()
        self._changed = asyncio.Event()
        self._open = True
        self._worker = Worker(self)
        self._worker.start()

    async def close(self) -> None:
        """Stop the worker, let steps in flight finish (within the grace period), release runs, close."""
        if not self._open:
            return
        assert self._worker is not None
        self._closing = True
        await self._worker.stop()
        if self._claims:  # each either launches its run, seen below, or releases it
            await asyncio.gather(*self._claims, return_exceptions=True)
        executions = list(self._executions.values())
        for execution in executions:
            if execution.stop_reason is None:
                execution.stop_reason = "shutdown"
            if execution.inflight == 0 and execution.active and not execution.parking:
                execution.task.cancel()  # waiting in a short sleep or a non-durable await
        tasks = [e.task for e in executions]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.shutdown_grace_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._journal.release(self._owner.id, self._clock())
        self._open = self._closing = False
        self._notify()
        await self._journal.close()

    async def __aenter__(self) -> App:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _has_room(self) -> bool:
        """Whether this App may take on another run (its worker and answers it claims)."""
        return len(self._executions) + len(self._claims) < self.max_concurrent_runs

    def _require_open(self) -> None:
        if not self._open:
            raise AppNotOpen(self.path)

    def _notify(self) -> None:
        """Wake everyone waiting for a run to change."""
        if self._changed is not None:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    # --- runs ------------------------------------------------------------

    async def run(self, wf: Any, /, *args: Any, run_id: str | None = None, **kwargs: Any) -> Any:
        """Start or resume a run and wait for its result (see `start` for what a known run_id does)."""
        handle = await self.start(wf, *args, run_id=run_id, **kwargs)
        return await handle.result()

    async def start(self, wf: Any, /, *args: Any, run_id: str | None = None, **kwargs: Any) -> RunHandle:
        """Start a run, or resume the run already stored under `run_id`; return its handle at once.

        A completed, failed or cancelled run is left as it is; a blocked, waiting,
        sleeping or interrupted run is replayed now; a run executing in another
        live process is left to it.
        """
        self._require_open()
        if self._closing:
            raise AppNotOpen(self.path)  # a run launched now would outlive close()
        workflow = self._resolve(wf)
        blob, decoded = workflow.encode_args(args, kwargs)
        rerun = run_id is not None
        run_id = _check_run_id(run_id)
        running = self._executions.get(run_id)
        if running is not None and running.workflow is not workflow:
            raise RunIdInUse(run_id, running.workflow.name, workflow.name)
        if running is not None or run_id in self._starting:
            return RunHandle(self, run_id)  # this App is already starting or executing it
        ended = self._journal.ended_run_now(run_id) if rerun else None
        if ended is not None and ended.workflow == workflow.name:
            return RunHandle(self, run_id, ended=ended)  # rerunning a finished script: nothing to write
        now = self._clock()
        self._starting.add(run_id)
        try:
            existing = await self._journal.create_run(
                run_id, workflow.name, blob, "running", self._owner.id, now + self.lease_seconds, now
            )
            if existing is None:
                log.info("run %s ▶ %s started", run_id, workflow.name)
                self._launch(workflow, run_id, blob, [], decoded)
                return RunHandle(self, run_id, created=True)
            elif existing.workflow != workflow.name:
                raise RunIdInUse(run_id, existing.workflow, workflow.name)
            elif existing.status in FINAL:
                return RunHandle(self, run_id, ended=existing)
            elif existing.owner == self._owner.id:
                pass  # claimed by this App's worker while we looked: wait for it
            elif existing.status == "running" and existing.owner is not None and is_alive(
                existing.owner, existing.lease_until, now
            ):
                pass  # another live process executes it: wait for it
            else:
                await self._take(run_id, existing.status, existing.owner, "rerun")
        except asyncio.CancelledError:
            # A queued create or claim commits even though our caller gave up on it.
            self._adopt_later(run_id)
            raise
        finally:
            self._starting.discard(run_id)
        return RunHandle(self, run_id)

    def _adopt_later(self, run_id: str) -> None:
        task = asyncio.ensure_future(self._adopt(run_id))
        self._claims.add(task)  # close() waits for it; it counts against max_concurrent_runs
        task.add_done_callback(self._claim_done)

    async def _adopt(self, run_id: str) -> None:
        """Resume a run a cancelled start() may have claimed for this App, once its writes have committed."""
        try:
            row = await self._journal.run_after_writes(run_id)
        except Exception as exc:
            log.error("run %s: could not check it after its start was cancelled: %s", run_id, exc)
            return
        if row is None or row.status != "running" or row.owner != self._owner.id:
            return
        if run_id in self._executions:
            return
        marked = run_id not in self._starting
        self._starting.add(run_id)
        try:
            await self._resume_or_release(run_id, row.workflow, row.args, "its start was cancelled")
        finally:
            if marked:
                self._starting.discard(run_id)

    async def submit(self, wf: Any, /, *args: Any, run_id: str | None = None, **kwargs: Any) -> RunHandle:
        """Record a run as 'pending' for any worker that has its workflow; return its handle at once.

        `wf` may be a workflow name this App does not have (a producer process
        need not import the workflow code); its arguments are then checked only
        when a worker runs it. A known run_id is left as it is.
        """
        self._require_open()
        workflow = self._workflows.get(wf) if isinstance(wf, str) else self._resolve(wf)
        if workflow is not None:
            name, blob = workflow.name, workflow.encode_args(args, kwargs)[0]
        elif isinstance(wf, str) and wf:
            name, blob = wf, encode({"args": list(args), "kwargs": kwargs}, f"the arguments of workflow {wf!r}")
        else:
            raise WorkflowNotFound(repr(wf), list(self._workflows))
        run_id = _check_run_id(run_id)
        existing = await self._journal.create_run(run_id, name, blob, "pending", None, None, self._clock())
        if existing is not None and existing.workflow != name:
            raise RunIdInUse(run_id, existing.workflow, name)
        if existing is None and self._worker is not None and name in self._workflows:
            self._worker.kick()
        return RunHandle(self, run_id, created=existing is None)

    async def _take(self, run_id: str, status: str, owner: str | None, reason: str) -> bool:
        """Claim a run (compare-and-set) and resume it by replay; False if another process was first.

        The caller has put run_id in `_starting`, so nothing else in this App takes it meanwhile.
        """
        now = self._clock()
        claimed = await self._journal.claim(run_id, status, owner, self._owner.id, now + self.lease_seconds, now)
        if claimed is None:
            return False
        workflow_name, args = claimed
        await self._resume_or_release(run_id, workflow_name, args, reason)
        return True

    async def _resume_or_release(self, run_id: str, workflow_name: str, args: bytes, reason: str) -> None:
        """Resume a run this App has just claimed; if that fails, release it for any worker.

        A claimed run is never left idle: another worker could not take it while
        this App lives. A closing App releases it at once.
        """
        if self._closing:
            await self._release(run_id)
            return
        try:
            await self._resume(run_id, workflow_name, args, reason)
        except BaseException as exc:
            await self._release(run_id)
            if not isinstance(exc, Exception):
                raise
            log.error("run %s: not resumed (%s: %s); released for any worker", run_id, type(exc).__name__, exc)

    async def _resume(self, run_id: str, workflow_name: str, args: bytes, reason: str) -> None:
        """Replay a run this App has just claimed."""
        records = await self._journal.load_replay(run_id)
        n = len(records)
        log.info("run %s ↻ %s resumed: %s (%d record%s to replay)", run_id, workflow_name, reason, n, "" if n == 1 else "s")
        self._launch(self._workflows[workflow_name], run_id, args, records)

    def _launch(
        self,
        workflow: Workflow,
        run_id: str,
        args: bytes,
        records: list[Recorded],
        decoded: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    ) -> None:
        if run_id in self._executions:
            return  # two paths of this App claimed it at once (a cancelled start and a worker pass)
        if run_id in self._cancelled:
            self._cancelled.discard(run_id)
            return  # cancelled while it was being claimed
        execution = Execution(self, workflow, run_id, args, records, decoded)
        self._executions[run_id] = execution
        execution.task = asyncio.create_task(execution.drive(), name=f"durable run {run_id}")
        execution.task.add_done_callback(functools.partial(self._ended, execution))

    def _ended(self, execution: Execution, task: asyncio.Task[None]) -> None:
        if self._executions.get(execution.run_id) is execution:
            del self._executions[execution.run_id]
        if not task.cancelled() and task.exception() is not None and execution.stop_reason is None:
            log.error("run %s: recording its outcome failed", execution.run_id, exc_info=task.exception())
        worker = self._worker
        if worker is not None and (execution.status in ("sleeping", "pending") or worker.saturated):
            worker.kick()
        self._notify()

    async def _row(self, run_id: str) -> RunRow:
        self._require_open()
        row = await self._journal.load_run(run_id)
        if row is None:
            raise RunNotFound(run_id)
        return row

    async def _outcome(self, run_id: str) -> Any:
        """Wait until the run ends; return its result or raise its error."""
        while True:
            self._require_open()
            changed = self._changed
            execution = self._executions.get(run_id)
            if execution is not None:
                # asyncio.wait neither raises the task's error nor cancels the task
                # when this waiter is cancelled; App._ended has run once it returns.
                await asyncio.wait([execution.task])
                if execution.status == "completed":
                    return execution.result
                if execution.status in ("failed", "blocked") and execution.error is not None:
                    raise execution.error
                continue
            row = await self._row(run_id)
            if row.status in FINAL or row.status == "blocked":
                return self._ending(row)
            if run_id in self._executions or run_id in self._starting:
                continue
            assert changed is not None
            try:
                await asyncio.wait_for(changed.wait(), self.poll_interval)
            except TimeoutError:
                pass

    async def watch(self, run_id: str, after: str | None = None) -> AsyncIterator[tuple[str, Record]]:
        """Yield a run's journal as (cursor, record): recorded ones first, then live ones, until it ends.

        Records come in seq order (one waits for those before it, as gathered
        steps finish in any order). A prompt or sleep that changes later (answered,
        cancelled, done) comes again in its new state. Give the last cursor as
        `after` to resume exactly there: nothing is skipped or repeated.
        """
        cursor = Cursor.parse(after)
        await self._row(run_id)
        while True:
            changed = self._changed
            row = await self._row(run_id)
            ended = row.status in FINAL or row.status == "blocked"
            rows = await self._journal.changes(run_id, cursor.seq, (cursor.changed_at, cursor.changed_seq))
            for record in sorted((r for r in rows if r.seq < cursor.seq), key=lambda r: (r.finished_at, r.seq)):
                cursor = cursor.changed(record)
                yield str(cursor), Record.from_row(record)
            later = {r.seq: r for r in rows if r.seq >= cursor.seq}
            while later:
                record = later.pop(cursor.seq, None)
                if record is None and not ended:
                    break  # an earlier call is still in flight: keep the order
                cursor = cursor.passed(record)
                if record is not None:
                    yield str(cursor), Record.from_row(record)
            if ended:
                return
            assert changed is not None
            try:
                await asyncio.wait_for(changed.wait(), self.poll_interval)
            except TimeoutError:
                pass

    def _ending(self, row: RunRow) -> Any:
        """The result of an ended (or blocked) run, or its error raised."""
        if row.status == "completed":
            workflow = self._workflows.get(row.workflow)
            if workflow is None:
                return decode_any(row.result)
            return workflow.result_codec.decode(row.result, f"the result of workflow {row.workflow!r}")  # type: ignore[arg-type]
        if row.status == "cancelled":
            raise RunCancelled(row.run_id)
        raise error_from_json(row.error, row.workflow)  # type: ignore[arg-type]

    async def status(self, run_id: str) -> str:
        """A run's status (one small read); raise RunNotFound if there is none."""
        return (await self._row(run_id)).status

    async def get_run(self, run_id: str) -> Run:
        """The run with its journal records; raise RunNotFound if there is none."""
        row = await self._row(run_id)
        return Run.from_row(row, await self._journal.load_records(run_id))

    async def list_runs(self, status: str | None = None, workflow: str | None = None, limit: int = 100) -> list[Run]:
        """Runs, newest first, optionally of one status or workflow (without their records)."""
        self._require_open()
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}.")
        rows = await self._journal.list_runs(status, workflow, limit)
        return [Run.from_row(row, []) for row in rows]

    async def cancel(self, run_id: str) -> None:
        """Stop a run for good (status 'cancelled'); raise RunAlreadyFinished if it ended otherwise."""
        self._require_open()
        before = await self._journal.cancel(run_id, self._clock())
        if before is None:
            raise RunNotFound(run_id)
        status, _ = before
        if status in FINAL:
            if status != "cancelled":
                raise RunAlreadyFinished(run_id, status)
            return
        execution = self._executions.get(run_id)
        if execution is not None and execution.active:
            execution.stop_reason = "cancelled"
            execution.task.cancel()
        elif run_id in self._starting:
            self._cancelled.add(run_id)  # its claim may have committed before the cancel: don't launch it
        log.info("run %s ■ cancelled (was %s)", run_id, status)
        self._notify()

    # --- prompts ---------------------------------------------------------

    async def prompts(self, run_id: str | None = None) -> list[Prompt]:
        """Pending prompts, oldest first, of all runs or of one."""
        self._require_open()
        return [Prompt.from_row(row) for row in await self._journal.pending_prompts(run_id)]

    async def answer(self, run_id: str, key: str, value: Any) -> None:
        """Record an answer once, validated against the prompt's schema; the run moves on.

        Raises PromptNotFound, PromptAlreadyAnswered, or InvalidAnswer (nothing written).
        """
        self._require_open()
        found = await self._journal.prompt_schema(run_id, key)
        if found is None:
            raise PromptNotFound(run_id, key)
        status, schema, workflow_name = found
        if status == "answered":
            raise PromptAlreadyAnswered(run_id, key)
        if status != "waiting":
            raise PromptNotFound(run_id, key)
        try:
            blob = encode(value, f"the answer to prompt {key!r}")
        except EncodingError as exc:
            raise InvalidAnswer(run_id, key, exc.reason) from None
        problem = schema_violation(schema, decode_any(blob))
        if problem is not None:
            raise InvalidAnswer(run_id, key, problem)
        # If the answer makes the run ready and this App can execute it, it claims
        # the run in the same commit and resumes it here, rather than leaving it to
        # a worker's next pass (a second commit, and a wait for the pass).
        take = (
            not self._closing
            and workflow_name in self._workflows
            and self._has_room()
            and run_id not in self._executions
            and run_id not in self._starting
        )
        if take:
            self._starting.add(run_id)
            claim = asyncio.ensure_future(self._answer_and_resume(run_id, key, blob, workflow_name))
            self._claims.add(claim)
            claim.add_done_callback(self._claim_done)
            # Once queued, the write commits whether or not our caller waits for it:
            # the claim then runs to its end, so a claimed run is always resumed or released.
            before = await asyncio.shield(claim)
        else:
            before, resumed, _ = await self._journal.answer(run_id, key, blob, self._clock())
            if before == "waiting":
                log.info("run %s ✎ prompt %s answered", run_id, key)
            if resumed and self._worker is not None:
                self._worker.kick()
        if before == "answered":
            raise PromptAlreadyAnswered(run_id, key)
        if before != "waiting":
            raise PromptNotFound(run_id, key)
        self._notify()

    async def _answer_and_resume(self, run_id: str, key: str, blob: bytes, workflow_name: str) -> str | None:
        """Record an answer, claiming the run in the same commit if it is then ready; resume it here.

        Returns the prompt's status before. The answer stands once recorded: if
        the App is closing by then, or the run cannot be resumed here, the claimed
        run is released for any worker instead.
        """
        try:
            now = self._clock()
            before, _, args = await self._journal.answer(run_id, key, blob, now, (self._owner.id, now + self.lease_seconds))
            if before == "waiting":
                log.info("run %s ✎ prompt %s answered", run_id, key)
            if args is not None:  # claimed: the run is ready
                await self._resume_or_release(run_id, workflow_name, args, "prompt answered")
            return before
        finally:
            self._starting.discard(run_id)

    async def _release(self, run_id: str) -> None:
        await self._journal.release(self._owner.id, self._clock(), run_id)
        if self._worker is not None:
            self._worker.kick()

    def _claim_done(self, claim: asyncio.Task[str | None]) -> None:
        self._claims.discard(claim)
        if not claim.cancelled():
            claim.exception()  # retrieved: answer() raises it to its caller; _adopt logs its own
        if self._worker is not None and self._worker.saturated:
            self._worker.kick()  # room again


def _check_run_id(run_id: str | None) -> str:
    if run_id is None:
        return uuid.uuid4().hex
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"run_id must be a non-empty string, not {run_id!r}.")
    return run_id
