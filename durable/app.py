"""App: the public façade: the workflow registry, open/close, and every call on runs and prompts.

The App checks arguments and turns rows into the public `Run`, `Record` and
`Prompt`; the engine (:mod:`durable.engine`) executes runs, and the store
(:mod:`durable.store`) keeps them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from . import follow, inbox, operate, queues, schedules
from .check import check_runs
from .engine import Engine
from .errors import (
    AppNotOpen,
    DefinitionError,
    RunAlreadyFinished,
    WorkflowNotFound,
)
from .model import CheckResult, Record, Run
from .queues import Queue
from .schedules import Schedule, ScheduleInfo, ScheduleNotFound, Scheduler
from .store import make_store, redact
from .store.base import FINAL, STATUSES, RunRow, Store
from .worker import Worker
from .workflow import Workflow, check_timeout

__all__ = ["App", "RunHandle"]

log = logging.getLogger("durable")

F = TypeVar("F", bound=Callable[..., Any])

class RunHandle:
    """A started run: wait for its result or look at its status."""

    __slots__ = ("_app", "_ended", "created", "run_id")

    def __init__(self, app: App, run_id: str, ended: RunRow | None = None, created: bool = False) -> None:
        self._app, self.run_id = app, run_id
        self.created = created  # whether the call that made this handle created the run
        self._ended = ended  # the run's row when start() found it already ended

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to end; return its result or raise its error (TimeoutError after `timeout` s)."""
        engine = self._app.engine
        if self._ended is not None:
            return engine.ending(self._ended)
        if timeout is None:
            return await engine.outcome(self.run_id)
        async with asyncio.timeout(timeout):
            return await engine.outcome(self.run_id)

    async def status(self) -> str:
        """The run's current status."""
        return await self._app.status(self.run_id)

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id!r}>"


class App(inbox.PromptCalls):
    """Workflows and their journal, in an SQLite file or a PostgreSQL database.

    Args:
        path: where the journal is: a file path (SQLite, embedded), or a
            ``postgresql://user:password@host:port/dbname`` URL (PostgreSQL,
            shared by many processes on many machines; needs ``durable[postgres]``).
            Default ``$DURABLE_DB``, else ``durable.db``.
        durability: ``"normal"`` (default) survives a crash of the process;
            ``"full"`` also survives power loss, at the cost of an fsync per commit.
        clock: returns the current time in seconds since the epoch (for tests).
        poll_interval: how often, at most, the worker looks for work done by
            other processes (answers, due timers, dead owners).
        lease_seconds: how long a run stays claimed by an owner that stopped
            renewing it (timed by the store's clock).
        shutdown_grace_seconds: how long leaving ``async with app`` lets steps
            in flight finish (and be recorded) before their runs are released.
        max_concurrent_runs: how many runs this App's worker resumes at once
            (runs started with `run`/`start` in this process are not held back).
        read_only: only look: the journal is opened without writing anything to
            it (a read-only file or mount works), and no worker runs. Calls that
            would write raise JournalError.
        replay_every_step: for tests: after each new record the run is unloaded
            and replayed from its start before it goes on, so nondeterministic
            code (a random branch, a key made from the time) fails at once with
            NondeterminismError instead of after a crash in production.

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
        read_only: bool = False,
        replay_every_step: bool = False,
    ) -> None:
        self.path = os.fspath(path) if path is not None else os.environ.get("DURABLE_DB") or "durable.db"
        self.read_only = read_only
        self.replay_every_step = replay_every_step
        self._store: Store = make_store(self.path, durability, read_only)
        self._clock: Callable[[], float] = clock or time.time
        self.poll_interval = poll_interval
        # Long enough that a busy process's renewal (every third of it) is never
        # late; short enough that a run of a machine that died resumes in ~30 s.
        self.lease_seconds = lease_seconds
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.max_concurrent_runs = max_concurrent_runs
        self._workflows: dict[str, Workflow] = {}
        self._by_fn: dict[Any, Workflow] = {}
        self._queues: dict[str, Queue] = {}
        self._schedules: dict[str, Schedule] = {}
        self._engine: Engine | None = None
        self._worker: Worker | None = None

    @property
    def max_concurrent_runs(self) -> int:
        return self._max_concurrent_runs

    @max_concurrent_runs.setter
    def max_concurrent_runs(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_concurrent_runs must be a whole number >= 1, not {value!r}")
        self._max_concurrent_runs = value
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.max_concurrent_runs = value

    @property
    def store(self) -> Store:
        """Where this App keeps its runs."""
        return self._store

    @property
    def engine(self) -> Engine:
        """This process's executions (while the App is open)."""
        return self._engine_now()

    # --- registry --------------------------------------------------------

    def workflow(
        self, fn: F | None = None, *, name: str | None = None, timeout: float | dt.timedelta | None = None,
        queue: str | None = None,
    ) -> Any:
        """Register an ``async def`` workflow, under its function name or `name`.

        `timeout`: seconds (or a timedelta) each run may take from its start;
        past it the run is stopped, whatever it is doing, and ends failed with RunTimedOut.
        `queue`: the name of the queue its runs go on (``app.add_queue``), unless a submit names another.
        """

        def register(fn: F) -> F:
            wf_name = name if name is not None else getattr(fn, "__name__", None)
            if not isinstance(wf_name, str) or not wf_name:
                raise DefinitionError(f"@app.workflow(name=...) takes a non-empty string, not {wf_name!r}.")
            if wf_name in self._workflows:
                raise DefinitionError(
                    f"A workflow named {wf_name!r} is already registered on this App. "
                    "Give one of them another name with @app.workflow(name=...)."
                )
            if queue is not None and (not isinstance(queue, str) or not queue):
                raise DefinitionError(f"@app.workflow(queue=...) takes a queue's name, not {queue!r}.")
            workflow = Workflow(fn, wf_name, timeout)
            workflow.queue = queue
            self._workflows[wf_name] = workflow
            self._by_fn[fn] = workflow
            return fn

        return register if fn is None else register(fn)

    def add_queue(self, queue: Queue) -> Queue:
        """Register a queue: this App's worker claims the runs on it, within its limits (see durable.Queue)."""
        if not isinstance(queue, Queue):
            raise TypeError(f"add_queue takes a durable.Queue, not {queue!r}.")
        if queue.name in self._queues:
            raise DefinitionError(f"A queue named {queue.name!r} is already registered on this App.")
        self._queues[queue.name] = queue
        return queue

    def schedule(
        self, cron: str, *, name: str | None = None, timezone: str = "UTC", catch_up: int = 1, queue: str | None = None
    ) -> Callable[[F], F]:
        """Register an ``async def (ctx, at)`` workflow and run it once per slot of `cron`, across all processes.

        `at` is the slot's time (a UTC datetime); the slot's run_id is ``"<name>@<slot ISO 8601>"``. `cron` has five
        fields, or six with seconds first, read in `timezone`. Of the slots missed while no process with this App
        ran, the latest `catch_up` run. `queue`: the queue its runs go on. Needs ``durable[schedules]``.
        """
        return lambda fn: schedules.register(self, fn, cron, name, timezone, catch_up, queue)

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule in the store (of any App that opened it), with its latest and next slot."""
        now = self._clock()
        return [ScheduleInfo.of(row, now) for row in await self._store.schedules()]

    async def pause_schedule(self, name: str) -> ScheduleInfo:
        """Fire none of its slots until resumed (in every process); runs already made go on. ScheduleNotFound."""
        return await schedules.pause(self, name, True)

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """Fire its slots again, from the next one: the slots that passed while it was paused are skipped."""
        return await schedules.pause(self, name, False)

    async def remove_schedule(self, name: str) -> None:
        """Forget a schedule the code no longer has (its runs stay); an App that still has it registers it again."""
        if not await self._store.remove_schedule(name):
            raise ScheduleNotFound(name, [row.name for row in await self._store.schedules()])

    @property
    def workflows(self) -> dict[str, Workflow]:
        return dict(self._workflows)

    @property
    def queues(self) -> dict[str, Queue]:
        return dict(self._queues)

    def _resolve(self, wf: Any) -> Workflow:
        if isinstance(wf, str):
            found = self._workflows.get(wf)
            name = wf
        else:
            try:
                found = self._by_fn.get(wf)
            except TypeError:
                found = None
            if found is not None:
                return found
            name = getattr(wf, "__name__", None) or repr(wf)
        if found is None:
            raise WorkflowNotFound(name, list(self._workflows))
        return found

    def reader(self, path: str | os.PathLike[str] | None = None) -> App:
        """An App with this App's workflows that opens `path` (default: this App's journal) read-only.

        For `check()` against a live journal, or a copy of a production one, without writing to it; a
        journal the previous durable wrote (one schema version older) is read as it is, not migrated.
        """
        reader = App(self.path if path is None else path, clock=self._clock, read_only=True)
        reader._workflows, reader._by_fn = self._workflows, self._by_fn
        reader._store.older_ok = True  # type: ignore[attr-defined]  # a journal of the durable before this one, too
        return reader

    # --- lifecycle -------------------------------------------------------

    async def open(self) -> None:
        """Open the journal and start the background worker."""
        if self._engine is not None:
            return
        await self._store.open()
        engine = Engine(
            self._store,
            self._workflows,
            clock=self._clock,
            lease_seconds=self.lease_seconds,
            max_concurrent_runs=self.max_concurrent_runs,
            poll_interval=self.poll_interval,
            replay_every_step=self.replay_every_step,
            queues=self._queues,
        )
        worker = Worker(engine, Scheduler(engine, self._schedules))
        engine.kick = worker.kick
        self._engine, self._worker = engine, worker
        if not self.read_only:
            worker.start()
            if hasattr(self._clock, "attach"):  # a test clock: moving it wakes this worker (durable.testing)
                self._clock.attach(worker)

    async def close(self) -> None:
        """Stop the worker, let steps in flight finish and record them (within the grace period), release runs, close."""
        engine, worker = self._engine, self._worker
        if engine is None or worker is None:
            return
        engine.closing = True  # from now on start() is refused: a run launched now would outlive close()
        try:
            if not self.read_only:  # a read-only App executes nothing and holds nothing
                await worker.stop()
                await engine.shutdown(self.shutdown_grace_seconds)
            engine.closed = True
        finally:
            if hasattr(self._clock, "detach"):
                self._clock.detach(worker)
            self._engine = self._worker = None
            await self._store.close()

    async def __aenter__(self) -> App:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _engine_now(self) -> Engine:
        if self._engine is None:
            raise AppNotOpen(redact(self.path))
        return self._engine

    def _require_open(self) -> None:
        self._engine_now()

    # --- runs ------------------------------------------------------------

    async def run(
        self, wf: Any, /, *args: Any, run_id: str | None = None, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Start or resume a run and wait for its result (see `start` for what a known run_id does)."""
        handle = await self.start(wf, *args, run_id=run_id, timeout=timeout, **kwargs)
        return await handle.result()

    async def start(
        self, wf: Any, /, *args: Any, run_id: str | None = None, timeout: float | None = None, **kwargs: Any
    ) -> RunHandle:
        """Start a run, or resume the run already stored under `run_id`; return its handle at once.

        A completed, failed or cancelled run is left as it is; a blocked, waiting,
        sleeping or interrupted run is replayed now; a run executing in another
        live process is left to it. `timeout` (seconds, for a new run; default the
        workflow's): past it the run is stopped and ends failed with RunTimedOut.
        """
        engine = self._engine_now()
        if engine.closing:
            raise AppNotOpen(redact(self.path))
        workflow = self._resolve(wf)
        if workflow.queue is not None:  # it starts when its queue lets it
            return await self.submit(workflow.fn, *args, run_id=run_id, timeout=timeout, **kwargs)
        blob, decoded = workflow.encode_args(args, kwargs)
        rerun = run_id is not None
        run_id = _check_run_id(run_id)
        created, ended = await engine.start(workflow, run_id, blob, decoded, rerun, self._deadline(workflow, timeout))
        return RunHandle(self, run_id, ended=ended, created=created)

    def _deadline(self, workflow: Workflow | None, timeout: float | None) -> float | None:
        seconds = check_timeout("timeout=", timeout)
        if seconds is None and workflow is not None:
            seconds = workflow.timeout
        return None if seconds is None else self._clock() + seconds

    async def submit(
        self, wf: Any, /, *args: Any, run_id: str | None = None, timeout: float | None = None, queue: str | None = None,
        key: str | None = None, delay: float | dt.timedelta | None = None, priority: int = 0,
        debounce: float | dt.timedelta | None = None, **kwargs: Any,
    ) -> RunHandle:
        """Record a run as 'pending' for any worker that has its workflow; return its handle at once.

        `wf` may be a workflow name this App does not have (a producer process
        need not import the workflow code); its arguments are then checked only
        when a worker runs it. A known run_id is left as it is. `queue` (default:
        the workflow's) puts it on a queue, `key` gives it a key there (see
        durable.Queue), `delay` seconds pass before it may start, and runs of
        higher `priority` start first. With `debounce` (seconds, and a `key`),
        the run starts once no other submit of its key came for that long: a
        submit while it waits gives it the new arguments and restarts the wait.
        """
        return await queues.submit(self, wf, args, kwargs, run_id, timeout, queue, key, delay, priority, debounce)

    async def status(self, run_id: str) -> str:
        """A run's status (one small read); raise RunNotFound if there is none."""
        return (await self._engine_now().load(run_id)).status

    async def get_run(self, run_id: str) -> Run:
        """The run with its journal records; raise RunNotFound if there is none."""
        row = await self._engine_now().load(run_id)
        return Run.from_row(row, await self._store.load_records(run_id), await self._store.load_set_aside(run_id))

    async def list_runs(
        self, status: str | Sequence[str] | None = None, workflow: str | None = None, limit: int = 100,
        queue: str | None = None, since: dt.datetime | float | None = None, until: dt.datetime | float | None = None,
    ) -> list[Run]:
        """Runs, newest first (without their records): of a status (or any of several), workflow or queue,
        created at or after `since` and before `until` (datetimes, or seconds since the epoch)."""
        self._require_open()
        for one in [status] if isinstance(status, str) or status is None else status:
            if one is not None and one not in STATUSES:
                raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {one!r}.")
        when = [t.timestamp() if isinstance(t, dt.datetime) else t for t in (since, until)]
        rows = await self._store.list_runs(status, workflow, limit, queue, *when)
        return [Run.from_row(row, []) for row in rows]

    async def verify(self) -> list[str]:
        """What is wrong with the journal, one finding per line; empty when nothing is.

        The store's own check (on SQLite, ``PRAGMA quick_check`` over every page),
        every run holding fewer records than it committed, and every recorded
        value and error decoded. Reads only: a damaged journal is never changed
        by it. Restore from a backup on findings.
        """
        self._require_open()
        return await self._store.verify()

    async def check(self, *, include_ended: bool = False) -> list[CheckResult]:
        """Replay every unfinished run (every run with `include_ended`) against this App's code; one verdict each.

        Nothing is executed and nothing is written: each replay stops where the
        run would do new work. Verdicts: ``ok``, ``blocked`` (at a seq, with the
        recorded and the new call) or ``unknown-workflow``. Open the App with
        ``read_only=True`` to check a live journal or a copy of one.
        """
        self._require_open()
        return await check_runs(self._store, self._workflows, all_runs=include_ended, clock=self._clock)

    async def retry(self, run_id: str) -> RunHandle:
        """Resume a 'failed' or 'blocked' run (after fixing its code) from where it stopped.

        The recorded failure (the run's error, and the records of the step whose
        failure it was) is set aside, kept but no longer replayed; earlier records
        replay and execution goes on. Raises WrongRunStatus for another status.
        """
        await operate.retry(self._engine_now(), run_id)
        return RunHandle(self, run_id)

    async def fork(self, run_id: str, *, at_seq: int, new_run_id: str | None = None) -> RunHandle:
        """A new run of the same workflow and arguments whose journal is a copy of the records before `at_seq`.

        The fork replays those and executes from `at_seq` on (with the code of
        the worker that takes it): to debug a run, or re-run its tail.
        """
        new_run_id = _check_run_id(new_run_id)
        await operate.fork(self._engine_now(), run_id, new_run_id, at_seq)
        return RunHandle(self, new_run_id, created=True)

    async def pause(self, run_id: str) -> None:
        """Stop a run at its next ctx call and keep it 'paused' (unloaded, claimed by no worker) until resume().

        Steps in flight finish and are recorded. Answers to its prompts are
        recorded and wait for it. Its timers keep their times: one that falls due
        while the run is paused fires when it is resumed.
        """
        await operate.pause(self._engine_now(), run_id)

    async def resume(self, run_id: str) -> None:
        """Let a paused run go on where it was (waiting, sleeping, or resumed by a worker)."""
        await operate.resume(self._engine_now(), run_id)

    async def prune(
        self, *, older_than: float | dt.timedelta, status: tuple[str, ...] = ("completed", "failed", "cancelled")
    ) -> int:
        """Delete ended runs (of `status`) last updated more than `older_than` seconds ago, with their records.

        Never an unfinished run. Deletes in small batches, each its own short
        commit; on SQLite the space goes back to the file system. Returns the count.
        """
        return await operate.prune(self._engine_now(), older_than, status)

    async def cancel(self, run_id: str) -> None:
        """Stop a run for good (status 'cancelled'); raise RunAlreadyFinished if it ended otherwise."""
        status = await self._engine_now().cancel(run_id)
        if status in FINAL and status != "cancelled":
            raise RunAlreadyFinished(run_id, status)

    def watch(self, run_id: str, after: str | None = None) -> AsyncIterator[tuple[str, Record]]:
        """Yield a run's journal as (cursor, record): recorded ones first, then live ones, until it ends.

        Records come in seq order (one waits for those before it, as gathered
        steps finish in any order). A prompt or sleep that changes later (answered,
        cancelled, done) comes again in its new state. Give the last cursor as
        `after` to resume exactly there: nothing is skipped or repeated.
        """
        return follow.watch(self._engine_now(), run_id, after, self.poll_interval)

    def stream(self, run_id: str, topic: str, *, after: int | None = None) -> AsyncIterator[tuple[int, Any]]:
        """Yield what the run published on `topic` as (offset, value): what exists, then live items until it ends.

        Give the last offset seen as `after` to resume exactly after it. Values
        come as JSON types (the stream has no Python types to decode them by).
        """
        return follow.stream(self._engine_now(), run_id, topic, after, self.poll_interval)


def _check_run_id(run_id: str | None) -> str:
    if run_id is None:
        return uuid.uuid4().hex
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"run_id must be a non-empty string, not {run_id!r}.")
    return run_id
