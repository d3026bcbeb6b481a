"""The storage interface: everything the engine asks of a journal, on any store.

A store keeps two things. *Runs*: one row per run, with its workflow, status,
arguments, outcome, and who executes it (``owner``, ``epoch`` and a lease).
*Records*: the journal proper, one row per ctx call, keyed by ``(run_id, seq)``.

Ownership is enforced by the store, in SQL. Every claim sets the claimant as
owner and bumps the run's ``epoch``; every write of an executing run carries a
:class:`Fence` and is one statement whose condition checks owner and epoch, so
a writer that lost its claim (cancelled, taken over after its lease expired,
cut off from the network) matches no row and learns it from the answer.
Leases are timed by the store's own clock (the database server's, for
PostgreSQL), never by a worker's.

A store raises :class:`~durable.errors.StoreUnavailable` when it cannot reach
its data for a reason that may pass (disk full, I/O error, lock held too long,
connection lost): the engine then stops the execution and keeps the run
resumable; it is never a run's outcome.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from .queues import Limits
from .prompts import PromptStore
from .schedules import ScheduleStore

__all__ = [
    "FINAL",
    "IN_PLACE",
    "IN_PLACE_BEFORE_RACES",
    "STATUSES",
    "Answered",
    "Claimed",
    "Fence",
    "Placement",
    "PromptRow",
    "RecordRow",
    "Recorded",
    "RunRow",
    "Store",
]


# The failed step (or child run) records retry() sets aside, given the seq of the step whose failure failed the run
# ({seq}): that step's, and those of steps that failed as late or later (no code could handle them,
# the run was already failing: other branches of a gather). Earlier failures stay: the code may have
# caught them and gone on.
UNHANDLED = (
    "kind IN ('step', 'child') AND status = 'failed' AND (seq = {seq} OR (finished_at, seq) > ("
    "SELECT finished_at, seq FROM {records} WHERE run_id = {run_id} AND seq = {seq}))"
)

# fork(): the columns status, value, error, attempts, started_at, finished_at of a copied record. A prompt or
# receive that waits, or was cancelled with its run, waits anew from {now}; every other record is copied as it is.
# (Its deadline moves with its start: `deadline - started_at + {now}`.)
ASKED_AGAIN = (
    "CASE WHEN kind IN ('ask', 'receive') AND status IN ('waiting', 'cancelled') THEN 'waiting' ELSE status END,"
    " value, error, attempts,"
    " CASE WHEN kind IN ('ask', 'receive') AND status IN ('waiting', 'cancelled') THEN {now} ELSE started_at END,"
    " CASE WHEN kind IN ('ask', 'receive') AND status IN ('waiting', 'cancelled') THEN NULL ELSE finished_at END"
)

# fork(): the records not copied: a child run the source still waited for (its end is the source's, not the fork's);
# and a loser of a race whose decision is not copied: the fork runs that race anew. {decided} says whether a
# race decision before the fork's seq (a 'wait' record) lists this record's seq among those it withdrew.
NOT_COPIED = "((kind = 'child' AND status IN ('waiting', 'cancelled')) OR (status = 'withdrawn' AND NOT {decided}))"

# A set-aside record read in the shape of a RecordRow (it has no question or schema).
SET_ASIDE = "seq, kind, name, status, value, error, attempts, started_at, finished_at, NULL, NULL, NULL, NULL, NULL, NULL"

# The kinds of record changed in place once written (answered, received, done, withdrawn): a watcher follows
# them by finished_at, which every such change sets strictly later than the run's earlier ones.
IN_PLACE = "('ask', 'sleep', 'receive', 'child', 'wait')"
IN_PLACE_BEFORE_RACES = "('ask', 'sleep', 'receive', 'child')"  # as the migrations before ctx.wait wrote it

STATUSES = ("pending", "running", "sleeping", "waiting", "paused", "blocked", "completed", "failed", "cancelled")
FINAL = frozenset({"completed", "failed", "cancelled"})


class RunRow(NamedTuple):
    run_id: str
    workflow: str
    status: str
    args: bytes
    result: bytes | None
    error: bytes | None
    owner: str | None
    epoch: int
    lease_until: float | None  # the store's clock
    wake_at: float | None
    created_at: float
    updated_at: float
    records: int  # how many records the run had when it last parked or ended: a lower bound, to find lost ones
    deadline: float | None = None  # past it the run ends failed, RunTimedOut (the App's clock)
    parent: str | None = None  # the run whose ctx.child started this one


class Placement(NamedTuple):
    """Where a submitted run waits to start: its queue (None: none), key, priority (higher first), earliest start.

    With `debounce` (seconds), a pending run of the same workflow and key that
    has not started yet takes the new arguments and waits `debounce` seconds
    more, instead of a new run being created.
    """

    queue: str | None = None
    key: str | None = None
    priority: int = 0
    not_before: float | None = None
    debounce: float | None = None


class RecordRow(NamedTuple):
    """One journal record as stored (a new one is appended in this shape)."""

    seq: int
    kind: str
    name: str
    status: str
    value: bytes | None
    error: bytes | None
    attempts: int
    started_at: float
    finished_at: float | None
    question: str | None
    schema: str | None
    deadline: float | None = None  # a prompt's: when it expires unanswered (the App's clock)
    assignee: str | None = None  # a prompt's: whom it is for (ctx.ask(assignee=...))
    by: str | None = None  # an answered prompt's: who answered (see store/prompts.py)
    via: str | None = None  # ... and through which channel


# A step's record, made at every step, from all fifteen fields at once: RecordRow(...) would run the named tuple's
# __new__, a Python function (about 0.3 µs); this builds the same tuple in C.
step_row: Callable[[tuple[Any, ...]], RecordRow] = functools.partial(tuple.__new__, RecordRow)
NO_PROMPT = (None,) * 6  # a record's fields past its finish time when it has none of a prompt's or an answer's


class Recorded(NamedTuple):
    """What replay needs of a record."""

    seq: int
    kind: str
    name: str
    status: str
    value: bytes | None
    error: bytes | None
    attempts: int


class PromptRow(NamedTuple):
    run_id: str
    workflow: str
    seq: int
    key: str
    question: str
    schema: str
    created_at: float
    deadline: float | None = None
    assignee: str | None = None


class Fence(NamedTuple):
    """Who may write into a run: the owner and epoch of the claim an execution holds."""

    run_id: str
    owner: str
    epoch: int


class Claimed(NamedTuple):
    """A run just claimed: what is needed to resume it, and what it was before (for the log)."""

    run_id: str
    workflow: str
    args: bytes
    epoch: int
    status: str  # before the claim
    owner: str | None  # before the claim
    ready: str | None  # why a pending run was ready: 'submitted', 'answered', 'released'
    records: int = 0  # the run's committed record count (RunRow.records)
    deadline: float | None = None  # the run's own (RunRow.deadline)


class Answered(NamedTuple):
    """The outcome of recording an answer."""

    before: str | None  # the prompt's status before: 'waiting' means this answer was recorded
    ready: bool  # the run has no pending prompt left and may be resumed
    claimed: Claimed | None  # the run, when the answer also claimed it for the answering owner


class Store(PromptStore, ScheduleStore, Protocol):
    """A journal of runs and records. Every method may raise StoreUnavailable."""

    target: str  # the path or URL, as people should read it (no password)
    read_only: bool
    older_ok: bool  # read-only: also read a journal at the previous schema, unmigrated (check() replays it)

    async def open(self) -> None: ...

    async def close(self) -> None:
        """Release connections and threads; finish even when the store no longer answers."""

    # --- runs: creation and claims ---------------------------------------------------

    def create_run(
        self, run_id: str, workflow: str, args: bytes, claimant: str | None, lease_seconds: float, now: float,
        deadline: float | None = None, placement: Placement | None = None,
    ) -> Awaitable[RunRow | None]:
        """Insert a run, 'running' under `claimant` (epoch 1) or 'pending' without; None if inserted, else the run stored under run_id.

        `deadline`: when the run times out; a parked run is woken at it at the latest.
        `placement` (with no claimant): its queue, key, priority and earliest start.
        """
        ...

    async def ended_run(self, run_id: str) -> RunRow | None:
        """The run if it has ended (it never changes again); None if not, or not known without a write."""
        ...

    async def claim(
        self,
        run_id: str,
        status: str,
        owner: str | None,
        claimant: str,
        lease_seconds: float,
        now: float,
        owner_dead: bool = False,
    ) -> Claimed | None:
        """Take a run still in `status` under `owner` (compare and set), bumping its epoch; None if it changed.

        A 'running' run is taken only if its lease has expired or `owner_dead`
        (its process is known to have exited).
        """
        ...

    async def claim_ready(
        self,
        claimant: str,
        workflows: Sequence[str],
        dead_owners: Sequence[str],
        limit: int,
        lease_seconds: float,
        now: float,
        queues: Mapping[str, Limits] | None = None,
    ) -> list[Claimed]:
        """Claim up to `limit` runs of `workflows` that no live process executes, orphans first.

        Orphans are runs 'running' under another owner whose lease has expired
        or who is in `dead_owners`; then runs 'pending' (whose earliest start has
        come), and 'sleeping' runs due at `now`. Racing claimants never take the
        same run. Runs on a queue are claimed only for `queues` (name → limits),
        higher priority first, and only while the queue's limits hold (see queues.py).
        """
        ...

    async def renew(self, owner: str, lease_seconds: float) -> dict[str, tuple[int, bool]]:
        """Extend the lease of every run `owner` executes, in one statement; return run_id → (epoch held, paused)."""
        ...

    async def release(self, owner: str, now: float, run_id: str | None = None, records: int | None = None) -> int:
        """Hand the running runs of `owner` (or one of them, with its record count) back as 'pending', for any worker.

        A run paused while `owner` executed it stays 'paused', now without an owner.
        """
        ...

    # --- fenced writes of an executing run ----------------------------------------------

    def append(self, fence: Fence, record: RecordRow) -> Awaitable[bool]:
        """Add a record; False if the fence no longer holds (nothing written)."""
        ...

    def append_nowait(self, fence: Fence, record: RecordRow) -> None:
        """Add a record without waiting; writes made later commit after it."""
        ...

    def append_from_thread(self, fence: Fence, record: RecordRow) -> bool | None:
        """Add a record from a thread other than the event loop's, if the store can at once; else None.

        True or False as `append`; None when nothing was written (the caller
        then appends as usual, from the event loop). A plain-function step's
        thread records the step itself: one hand-over to the event loop, not two.
        Storage failures are raised, as durable's own errors.
        """
        ...

    async def replace(self, fence: Fence, record: RecordRow) -> bool:
        """Add a record, or replace the run's record at its seq if that one is still 'retrying'; False if fenced out.

        A step whose attempt failed with retries left records 'retrying' (its
        attempt count, its last error, when the next attempt is due), and its
        final record takes that one's place.
        """
        ...

    async def park(
        self, fence: Fence, wake_at: float | None, now: float, records: int, deadline: float | None = None,
        waiting_at: Sequence[int] | None = None, race: bool = False,
    ) -> str | None:
        """Unload a run: 'paused' (if it was paused), 'waiting' (a prompt waits), 'sleeping' (until wake_at) or 'pending'; None if fenced out.

        `records`: how many of the run's records are known committed (kept as RunRow.records).
        `deadline`: the earliest deadline of its prompts; a 'waiting' run is woken
        at it (or at `wake_at`, if sooner), as a 'sleeping' one at `wake_at`.
        `waiting_at`: the seqs of the records its calls wait at now. A waiting run
        is ready when none of its records waits any more, except when `race`
        (branches of a ctx.wait wait among them) or when records wait that it no
        longer waits at (left by an abandoned ctx.as_completed): then at the
        first of `waiting_at` filled (at once, if one already is).
        """
        ...

    async def settle(self, fence: Fence, decision: RecordRow, losers: Sequence[int]) -> bool:
        """Record how a race ended (`decision`, in place of its 'scheduled' record) and withdraw its losers, in one commit.

        A loser's waiting record becomes 'withdrawn': a prompt leaves the inbox, a
        message a receive took meanwhile goes back to the queue, a child run that
        has not ended is cancelled. A step's record stays. False if fenced out.
        """
        ...

    async def finish(
        self, fence: Fence, status: str, result: bytes | None, error: bytes | None, now: float, records: int
    ) -> bool:
        """End a run ('completed', 'failed' or 'blocked'), with its record count; False if fenced out."""
        ...

    async def reopen_prompt(self, fence: Fence, key: str, now: float) -> bool:
        """Discard an answer the workflow could not use, so the prompt waits again."""
        ...

    async def expire(self, fence: Fence, seq: int, now: float) -> bool:
        """Close a prompt or receive whose deadline passed ('expired'); False if answered or delivered first, or fenced out."""
        ...

    def complete_sleep_nowait(self, fence: Fence, seq: int, now: float) -> None:
        """Mark a sleep done, without waiting (replay needs only its wake-up time)."""
        ...

    # --- writes from outside the run ---------------------------------------------------

    async def answer(
        self, run_id: str, key: str, value: bytes, now: float, claimant: str | None = None, lease_seconds: float = 0.0,
        by: str | None = None, via: str = "python",
    ) -> Answered:
        """Record an answer once, with who gave it and how (logged); with `claimant`, a run it readies is claimed too.

        A prompt whose deadline is at or before `now` takes no answer: its status is then reported as 'expired'.
        """
        ...

    async def send(
        self, run_id: str, topic: str, value: bytes, now: float, claimant: str | None = None, lease_seconds: float = 0.0
    ) -> Answered | None:
        """Deliver a message: into the run's earliest waiting receive of `topic`, else queued for the next one.

        Returns (the run's status before, whether the run is now ready, its claim
        when `claimant` took it); None if there is no such run. A run that ended
        gets nothing (its status says why).
        """
        ...

    async def receive(self, fence: Fence, seq: int, topic: str, now: float, deadline: float | None) -> tuple[bool, bytes | None]:
        """Record a receive: (False, None) if fenced out; else (True, the oldest queued message of `topic` or None: it waits)."""
        ...

    async def start_child(
        self, fence: Fence, seq: int, child_id: str, workflow: str, args: bytes, now: float, deadline: float | None,
        queue: str | None = None,
    ) -> tuple[bool, str, bytes | None, bytes | None]:
        """Create a child run (pending, on `queue`) and the parent's record at `seq` of it, in one commit; fenced.

        Returns (False, ...) if fenced out, else the record's (status, value,
        error): 'waiting', or the outcome of a `child_id` that had already ended;
        ('taken', the other workflow's name) when `child_id` is a run of another
        workflow. When the child ends, the store fills that record with its
        outcome and makes the parent ready, in the child's commit.
        """
        ...

    async def cancel(self, run_id: str, now: float) -> tuple[str, str | None] | None:
        """Cancel a run that has not ended, and its unfinished child runs; its (status, owner) before, None if none."""
        ...

    async def flush(self) -> None:
        """Return once every write submitted before this call has been applied."""
        ...

    # --- operators' writes -----------------------------------------------------------------

    async def retry(self, run_id: str, now: float) -> tuple[str, int] | None:
        """Make a 'failed' or 'blocked' run 'pending' again; (status before, records set aside), None if no such run.

        The run's error, and the records of the step whose failure it was, move
        to the set-aside records (kept, never replayed): that step runs again. A
        run in another status is left as it is.
        """
        ...

    async def fork(self, run_id: str, new_run_id: str, at_seq: int, now: float) -> str:
        """A new 'pending' run of the same workflow and arguments, with the records before `at_seq` copied.

        Returns 'forked', 'missing' (no run `run_id`) or 'exists' (`new_run_id` is taken; nothing written).
        """
        ...

    async def pause(self, run_id: str, now: float) -> tuple[str, str | None] | None:
        """Make a run that has not ended 'paused' (no claim takes it); its (status, owner) before, None if no such run.

        An executing run keeps its owner and epoch: steps in flight are still
        recorded, and the owner unloads it at its next ctx call (park, release).
        """
        ...

    async def resume(self, run_id: str, now: float) -> tuple[str, str] | None:
        """Let a 'paused' run go on: (status before, status after), None if no such run."""
        ...

    async def prune(self, before: float, statuses: Sequence[str], limit: int) -> int:
        """Delete up to `limit` runs of `statuses` (ended ones) updated before `before`, with all they own; how many."""
        ...

    async def reclaim(self) -> None:
        """Give the space of deleted rows back, a bounded batch per commit (SQLite: incremental vacuum)."""
        ...

    # --- reads ---------------------------------------------------------------------------

    async def load_run(self, run_id: str) -> RunRow | None: ...

    async def load_records(self, run_id: str) -> list[RecordRow]: ...

    async def load_set_aside(self, run_id: str) -> list[RecordRow]:
        """What retry() set aside for a run, oldest first: its errors (kind 'run', seq -1) and failed step records."""
        ...

    async def load_replay(self, run_id: str) -> list[Recorded]:
        """A run's records as replay reads them, in seq order."""
        ...

    async def changes(self, run_id: str, from_seq: int, changed_after: tuple[float, int]) -> list[RecordRow]:
        """Records at `from_seq` or later, and prompts/sleeps before it changed after (time, seq)."""
        ...

    async def list_runs(
        self, status: str | Sequence[str] | None, workflow: str | None, limit: int, queue: str | None = None,
        since: float | None = None, until: float | None = None,
    ) -> list[RunRow]:
        """Newest first: of these statuses (any if none), workflow, queue, created in [since, until)."""

    async def queue_counts(self) -> dict[str, dict[str, int]]:
        """Queue name → status → how many of its runs have it (ended runs left out)."""
        ...

    async def published(self, run_id: str, topic: str, after: int) -> list[tuple[int, bytes]]:
        """A run's values published on `topic` after seq `after`, as (seq, value), in seq order."""
        ...

    async def pending_prompts(self, run_id: str | None, assignee: str | None = None) -> list[PromptRow]: ...

    async def prompt(self, run_id: str, key: str) -> tuple[str, str, str, float | None] | None:
        """A prompt's (status, schema, workflow, deadline), or None if the run never asked it."""
        ...

    async def deadline(self, run_id: str, seq: int) -> float | None:
        """The deadline of a run's waiting prompt or receive at `seq` (read where replay reaches one, not with every record)."""
        ...

    async def held(self, owner: str) -> dict[str, tuple[int, bool]]:
        """The runs `owner` executes now: run_id → (epoch, whether it was paused and must stop)."""
        ...

    async def running_owners(self) -> list[str]:
        """Every owner that has runs 'running'."""
        ...

    async def pending_workflows(self) -> dict[str, int]:
        """Workflow name → how many of its runs are 'pending' (waiting for a worker that has it)."""
        ...

    async def verify(self) -> list[str]:
        """What is wrong with what is stored (empty when nothing): the store's own check, runs that lost records."""
        ...

    async def next_wake(self) -> float | None:
        """The earliest wake-up time of a sleeping run, or start of a run submitted with a delay."""
        ...

    async def wait_for_change(self, timeout: float, wake: object) -> bool:
        """Wait until another process commits (True), `wake` (an asyncio.Event) is set, or `timeout` passes."""
        ...
