"""The PostgreSQL store: one journal shared by many processes on many machines.

Connections, each for one purpose:
- the *writer*: one connection that applies this process's writes in batches
  (:class:`~.batch.Batcher`), one transaction per batch, so concurrent runs
  share round trips and commits, and this process's own transactions never
  wait for each other's locks;
- the *pool*: reads (asyncpg's pool);
- the *listener*: one connection that LISTENs for the NOTIFY hints other
  processes' writes send (channel ``durable``, payload a run_id or nothing,
  never a value). It is the only part that needs a direct connection to the
  server: behind a pooler in transaction mode, LISTEN is not delivered, and
  the worker falls back to polling every `poll_interval`.
Nothing relies on session state; prepared statements are cached per connection
by asyncpg (``?statement_cache_size=0`` in the URL turns that off, for a
pooler that cannot keep them).

Durability: ``"normal"`` commits with ``synchronous_commit = off`` (a commit
survives a crash of the worker process; the server may lose its last few
hundred milliseconds if *it* crashes), ``"full"`` with the server's setting,
which by default waits for the WAL flush.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import JournalError
from . import postgres_admin, postgres_messages, postgres_schedules
from . import postgres_ops as ops
from . import redact, split_url
from .base import (
    FINAL, IN_PLACE, NO_PROMPT, SET_ASIDE, Answered, Claimed, Fence, Placement, PromptRow, RecordRow, Recorded, RunRow,
)  # fmt: skip
from .operators import OperatorWrites
from .queues import Limits, by_queue
from .prompts import SELECT_LOG, PromptLogRow
from .postgres_listen import CHANNEL, Listener
from .postgres_watch import Watchdog
from .schedules import ScheduleWrites
from .verify import LOST_RECORDS, VALUES_AFTER, damaged_values, lost_records
from .batch import Batcher, Item, Outcome, runs_of
from .postgres_schema import REPLAY, RETRY_STATES, classify, fails_batch, keep_session, rollback, warm

try:
    import asyncpg
except ModuleNotFoundError:  # pragma: no cover - the extra is missing
    asyncpg = None

__all__ = ["PostgresStore"]

_VALUES_AFTER = VALUES_AFTER.format(schema="durable.", after="($1, $2)")

log = logging.getLogger("durable")

# A statement that gets no answer within this long is given up: the connection
# is dropped and the caller gets StoreUnavailable (a cut network otherwise
# blocks for as long as TCP retransmits).
COMMAND_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 10.0
IDLE_IN_TRANSACTION_MS = 5000
# Deadlocks and serialization failures are retried this many times before the batch fails.
RETRIES = 5

_RECORD = ops.RECORD_COLUMNS.removeprefix("run_id, ")


class PostgresStore(OperatorWrites, ScheduleWrites, Listener, Watchdog):
    """Runs and records in a PostgreSQL database (schema ``durable``)."""

    admin = postgres_admin  # its operators' writes (OperatorWrites)
    schedule_ops = postgres_schedules  # ScheduleWrites

    def __init__(self, url: str, durability: str = "normal", read_only: bool = False, pool_size: int = 10) -> None:
        if asyncpg is None:
            raise JournalError(
                redact(url), "PostgreSQL support needs the postgres extra: pip install 'durable[postgres]'"
            )
        if durability not in ("normal", "full"):
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        self.target = redact(url)
        self.durability = durability
        self.read_only = read_only
        self.older_ok = False  # read-only: also a journal of the previous schema (for check())
        self._runs = ops.RUN  # the columns a run is read with
        self._dsn, options = split_url(url)
        self._pool_size = int(options.get("pool_size", pool_size))
        self._statement_cache = int(options.get("statement_cache_size", 100))
        self._pool: Any = None
        self._writer: Any = None
        self._writer_pid: int | None = None
        self._batcher = Batcher(self._apply)
        self._listener_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._write_started: float | None = None
        self._gave_up = False
        self._changed = False
        self._wake: asyncio.Event | None = None
        self._closing = False

    # --- lifecycle ---------------------------------------------------------------------

    async def _connect(self, **settings: str) -> Any:
        try:
            return await asyncpg.connect(
                self._dsn,
                timeout=CONNECT_TIMEOUT_SECONDS,
                statement_cache_size=self._statement_cache,
                server_settings={"application_name": "durable", **settings},
            )
        except Exception as exc:
            raise self._classify(exc) from None

    async def open(self) -> None:
        self._closing = False
        conn = await self._connect()
        try:
            from .postgres_schema import RUN_DEADLINE_FROM, check_readable, migrate

            if self.read_only:
                if await check_readable(conn, self.target, self.older_ok) < RUN_DEADLINE_FROM:
                    self._runs = ops.RUN_BEFORE_CHILDREN  # an older journal, read as it is
            else:
                await migrate(conn, self.target)
        except asyncpg.PostgresError as exc:
            raise self._classify(exc) from None
        finally:
            await conn.close()
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=min(2, self._pool_size),  # the worker's reads and a caller's, from the start
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=COMMAND_TIMEOUT_SECONDS,
                statement_cache_size=self._statement_cache,
                server_settings={
                    "application_name": "durable",
                    **({"default_transaction_read_only": "on"} if self.read_only else {}),
                },
                reset=keep_session,
                init=warm,
            )
        except Exception as exc:
            raise self._classify(exc) from None
        self._batcher = Batcher(self._apply)
        if not self.read_only:
            self._batcher.start()
            self._watchdog = asyncio.create_task(self._watch(COMMAND_TIMEOUT_SECONDS), name="durable watchdog")
        self._listener_task = asyncio.create_task(self._listen(), name="durable listener")

    async def close(self) -> None:
        self._closing = True
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS):
                await self._batcher.close()
        except TimeoutError:
            log.warning("closing %s: queued writes did not finish in time; the connection is dropped", self.target)
        for task in (self._listener_task, self._watchdog):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._listener_task = self._watchdog = None
        writer, pool = self._writer, self._pool
        self._writer = self._pool = None
        if writer is not None:
            writer.terminate()
        if pool is not None:
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS):
                    await pool.close()
            except (TimeoutError, Exception):
                pool.terminate()

    # --- errors ------------------------------------------------------------------------

    def _classify(self, exc: BaseException) -> Exception:
        """A driver error as durable's own: what happened and what to do."""
        return classify(exc, self.target, asyncpg, COMMAND_TIMEOUT_SECONDS)

    # --- the writer ----------------------------------------------------------------------

    async def _writer_conn(self) -> Any:
        if self._writer is None or self._writer.is_closed():
            # A writer cut off mid-transaction would hold its row locks until the
            # server noticed, and no other worker could take its runs: the server
            # ends such a session on its own (our transactions never idle).
            settings = {"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)}
            if self.durability == "normal":
                settings["synchronous_commit"] = "off"
            self._writer = await self._connect(**settings)  # its writes are timed by the watchdog
            self._writer_pid = self._writer.get_server_pid()
        return self._writer

    def _drop_writer(self) -> None:
        if self._writer is not None:
            self._writer.terminate()
            self._writer = None

    async def _apply(self, batch: list[Item]) -> list[Outcome]:
        """Apply a batch in one transaction; retry deadlocks; a lost connection fails the whole batch."""
        for attempt in range(RETRIES + 1):
            gave_up = False
            try:
                conn = self._writer
                if conn is None or conn.is_closed():
                    conn = await self._writer_conn()
                self._write_begins()
                try:
                    return await self._apply_once(conn, batch)
                finally:
                    gave_up = self._write_ends()
            except Exception as exc:
                if getattr(exc, "sqlstate", None) in RETRY_STATES and attempt < RETRIES:
                    await asyncio.sleep(0.001 * 2**attempt)
                    continue
                self._drop_writer()  # the connection, or the server, is gone (or did not answer)
                failure = self._classify(TimeoutError() if gave_up else exc)  # gave up: the watchdog dropped it
            return [(False, failure)] * len(batch)
        raise AssertionError("unreachable")

    async def _apply_once(self, conn: Any, batch: list[Item]) -> list[Outcome]:
        """Apply a batch; raise only for what fails the whole batch (connection, deadlock)."""
        if len(batch) == 1 and getattr(batch[0][1], "autocommit", False):
            _, op, args = batch[0]
            try:
                return [(True, await op(conn, *args))]
            except asyncpg.PostgresError as exc:
                if fails_batch(exc):
                    raise
                return [(False, self._classify(exc))]
        await conn.execute("BEGIN")
        try:
            results: list[Outcome] = []
            notify = False
            for op, i, j in runs_of(batch):
                if j - i > 1:
                    results += [(True, value) for value in await op.many(conn, [args for _, _, args in batch[i:j]])]  # type: ignore[attr-defined]
                else:
                    results.append((True, await op(conn, *batch[i][2])))
                notify = notify or getattr(op, "notifies", False)
            # One round trip for the wake-up hint and the commit (the simple protocol takes both).
            await conn.execute(f"SELECT pg_notify('{CHANNEL}', ''); COMMIT" if notify else "COMMIT")
            return results
        except asyncpg.PostgresError as exc:
            await rollback(conn)
            if fails_batch(exc):
                raise
            if len(batch) == 1:
                return [(False, self._classify(exc))]
        # One operation failed the shared transaction: apply each alone, so only
        # the faulty one reports an error and the others still commit.
        return [(await self._apply_once(conn, [item]))[0] for item in batch]

    def _write(self, op: Any, *args: Any) -> Any:
        if self.read_only:
            raise JournalError(self.target, "it was opened read-only; open it without read_only to change anything.")
        return self._batcher.submit(op, *args)

    # --- runs: creation and claims -----------------------------------------------------------

    def create_run(
        self, run_id: str, workflow: str, args: bytes, claimant: str | None, lease_seconds: float, now: float,
        deadline: float | None = None, placement: Placement | None = None,
    ) -> Any:
        if placement is not None:
            return self._write(ops.create_placed, (run_id, workflow, args, now, deadline, *placement))
        op = ops.create_running if claimant is not None else ops.create_pending
        return self._write(op, (run_id, workflow, args, claimant, lease_seconds, now, deadline))

    async def ended_run(self, run_id: str) -> RunRow | None:
        row = await self.load_run(run_id)
        return row if row is not None and row.status in FINAL else None

    async def claim(
        self, run_id: str, status: str, owner: str | None, claimant: str, lease_seconds: float, now: float,
        owner_dead: bool = False,
    ) -> Claimed | None:
        return await self._write(ops.claim, run_id, status, owner, claimant, lease_seconds, now, owner_dead)

    async def claim_ready(
        self, claimant: str, workflows: Sequence[str], dead_owners: Sequence[str], limit: int, lease_seconds: float,
        now: float, queues: Mapping[str, Limits] | None = None,
    ) -> list[Claimed]:
        if limit <= 0 or not workflows:
            return []
        names, dead = list(workflows), list(dead_owners)
        return await self._write(ops.claim_ready, claimant, names, dead, limit, lease_seconds, now, dict(queues or {}))

    async def renew(self, owner: str, lease_seconds: float) -> dict[str, tuple[int, bool]]:
        return await self._write(ops.renew, owner, lease_seconds)

    async def release(self, owner: str, now: float, run_id: str | None = None, records: int | None = None) -> int:
        return await self._write(ops.release, owner, run_id, now, records)

    # --- fenced writes -----------------------------------------------------------------------

    def append(self, fence: Fence, record: RecordRow) -> Any:
        if record[9:] == NO_PROMPT:  # none of a prompt's or an answer's fields: the shorter statement
            return self._batcher.run(ops.append_bare, (fence.run_id, *record[:9], fence.owner, fence.epoch))
        return self._batcher.run(ops.append, (fence.run_id, *record, fence.owner, fence.epoch))

    async def replace(self, fence: Fence, record: RecordRow) -> bool:
        return await self._write(ops.replace, (fence.run_id, *record, fence.owner, fence.epoch))

    def append_from_thread(self, fence: Fence, record: RecordRow) -> bool | None:
        return None  # a write here is a round trip on the event loop's pool: from another thread, never at once

    def append_nowait(self, fence: Fence, record: RecordRow) -> None:
        self._batcher.submit_nowait(ops.append, (fence.run_id, *record, fence.owner, fence.epoch))

    async def park(
        self, fence: Fence, wake_at: float | None, now: float, records: int, deadline: float | None = None,
        waiting_at: Sequence[int] | None = None, race: bool = False,
    ) -> str | None:
        seqs = None if waiting_at is None else list(waiting_at)
        return await self._write(ops.park, *fence, wake_at, now, records, deadline, seqs, race)

    async def settle(self, fence: Fence, decision: RecordRow, losers: Sequence[int]) -> bool:
        return await self._write(postgres_messages.settle, fence, decision, list(losers))

    async def finish(
        self, fence: Fence, status: str, result: bytes | None, error: bytes | None, now: float, records: int
    ) -> bool:
        return await self._write(ops.finish, (status, result, error, now, *fence, records))

    async def reopen_prompt(self, fence: Fence, key: str, now: float) -> bool:
        return await self._write(ops.reopen_prompt, *fence, key, now)

    async def expire(self, fence: Fence, seq: int, now: float) -> bool:
        return await self._write(ops.expire, *fence, seq, now)

    def complete_sleep_nowait(self, fence: Fence, seq: int, now: float) -> None:
        self._batcher.submit_nowait(ops.complete_sleep, *fence, seq, now)

    # --- outside writes ------------------------------------------------------------------------

    async def answer(
        self, run_id: str, key: str, value: bytes, now: float, claimant: str | None = None, lease_seconds: float = 0.0,
        by: str | None = None, via: str = "python",
    ) -> Answered:
        return await self._write(ops.answer, run_id, key, value, now, claimant, lease_seconds, by, via)

    async def reassign(
        self, run_id: str, key: str, assignee: str | None, now: float, by: str | None, via: str
    ) -> str | None:
        return await self._write(ops.reassign, run_id, key, assignee, now, by, via)

    async def send(
        self, run_id: str, topic: str, value: bytes, now: float, claimant: str | None = None, lease_seconds: float = 0.0
    ) -> Answered | None:
        return await self._write(postgres_messages.send, run_id, topic, value, now, claimant, lease_seconds)

    async def receive(self, fence: Fence, seq: int, topic: str, now: float, deadline: float | None) -> tuple[bool, bytes | None]:
        return await self._write(postgres_messages.receive, *fence, seq, topic, now, deadline)

    async def start_child(
        self, fence: Fence, seq: int, child_id: str, workflow: str, args: bytes, now: float, deadline: float | None,
        queue: str | None = None,
    ) -> tuple[bool, str, bytes | None, bytes | None]:
        return await self._write(postgres_messages.start_child, *fence, seq, child_id, workflow, args, now, deadline, queue)

    async def cancel(self, run_id: str, now: float) -> tuple[str, str | None] | None:
        return await self._write(ops.cancel, run_id, now)

    async def flush(self) -> None:
        await self._write(ops.flush)

    # --- operators' writes (retry, fork, pause, resume, prune: OperatorWrites) -----------------

    # --- reads -----------------------------------------------------------------------------------

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        if self._pool is None:
            raise RuntimeError("the store is closed")
        try:
            return await self._pool.fetch(sql, *args)
        except Exception as exc:
            raise self._classify(exc) from None

    async def load_run(self, run_id: str) -> RunRow | None:
        rows = await self._fetch(f"SELECT {self._runs} FROM durable.runs WHERE run_id = $1", run_id)
        return RunRow(*rows[0]) if rows else None

    async def load_records(self, run_id: str) -> list[RecordRow]:
        rows = await self._fetch(f"SELECT {_RECORD} FROM durable.records WHERE run_id = $1 ORDER BY seq", run_id)
        return [RecordRow(*r) for r in rows]

    async def load_set_aside(self, run_id: str) -> list[RecordRow]:
        rows = await self._fetch(f"SELECT {SET_ASIDE} FROM durable.set_aside WHERE run_id = $1 ORDER BY id", run_id)
        return [RecordRow(*r) for r in rows]

    async def load_replay(self, run_id: str) -> list[Recorded]:
        rows = await self._fetch(REPLAY, run_id)
        return [Recorded(*r) for r in rows]

    async def changes(self, run_id: str, from_seq: int, changed_after: tuple[float, int]) -> list[RecordRow]:
        rows = await self._fetch(
            f"SELECT {_RECORD} FROM durable.records WHERE run_id = $1 AND ((seq >= $2 AND status <> 'retrying')"
            f" OR (kind IN {IN_PLACE}"
            " AND finished_at IS NOT NULL AND (finished_at > $3 OR (finished_at = $3 AND seq > $4))))",
            run_id, from_seq, *changed_after,
        )  # fmt: skip
        return [RecordRow(*r) for r in rows]

    async def list_runs(
        self, status: str | Sequence[str] | None, workflow: str | None, limit: int, queue: str | None = None,
        since: float | None = None, until: float | None = None,
    ) -> list[RunRow]:
        statuses = [status] if isinstance(status, str) else list(status or ())
        rows = await self._fetch(
            f"SELECT {self._runs} FROM durable.runs WHERE (cardinality($1::text[]) = 0 OR status = ANY($1))"
            " AND ($2::text IS NULL OR workflow = $2) AND ($4::text IS NULL OR queue = $4)"
            " AND ($5::float8 IS NULL OR created_at >= $5) AND ($6::float8 IS NULL OR created_at < $6)"
            " ORDER BY created_at DESC, run_id DESC LIMIT $3",
            statuses, workflow, limit, queue, since, until,
        )  # fmt: skip
        return [RunRow(*r) for r in rows]

    async def queue_counts(self) -> dict[str, dict[str, int]]:
        rows = await self._fetch(
            "SELECT queue, status, count(*) FROM durable.runs WHERE queue IS NOT NULL"
            " AND status NOT IN ('completed', 'failed', 'cancelled') GROUP BY 1, 2"
        )
        return by_queue(rows)

    async def published(self, run_id: str, topic: str, after: int) -> list[tuple[int, bytes]]:
        rows = await self._fetch(
            "SELECT seq, value FROM durable.records WHERE run_id = $1 AND kind = 'publish' AND name = $2 AND seq > $3"
            " ORDER BY seq",
            run_id, topic, after,
        )  # fmt: skip
        return [(r[0], r[1]) for r in rows]

    async def pending_prompts(self, run_id: str | None, assignee: str | None = None) -> list[PromptRow]:
        rows = await self._fetch(
            "SELECT r.run_id, runs.workflow, r.seq, r.name, r.question, r.schema, r.started_at, r.deadline, r.assignee"
            " FROM durable.records AS r JOIN durable.runs AS runs ON runs.run_id = r.run_id"
            " WHERE r.status = 'waiting' AND r.kind = 'ask' AND runs.status NOT IN ('completed', 'failed', 'cancelled')"
            " AND ($1::text IS NULL OR r.run_id = $1) AND ($2::text IS NULL OR r.assignee = $2)"
            " ORDER BY r.started_at, r.run_id",
            run_id, assignee,
        )  # fmt: skip
        return [PromptRow(*r) for r in rows]

    async def prompt_log(self, run_id: str) -> list[PromptLogRow]:
        rows = await self._fetch(SELECT_LOG.format(table="durable.prompt_log", run="$1"), run_id)
        return [PromptLogRow(*r) for r in rows]

    async def prompt(self, run_id: str, key: str) -> tuple[str, str, str, float | None] | None:
        rows = await self._fetch(
            "SELECT r.status, r.schema, runs.workflow, r.deadline FROM durable.records AS r"
            " JOIN durable.runs AS runs ON runs.run_id = r.run_id WHERE r.run_id = $1 AND r.kind = 'ask' AND r.name = $2",
            run_id, key,
        )  # fmt: skip
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    async def deadline(self, run_id: str, seq: int) -> float | None:
        rows = await self._fetch("SELECT deadline FROM durable.records WHERE run_id = $1 AND seq = $2", run_id, seq)
        return rows[0][0] if rows else None

    async def held(self, owner: str) -> dict[str, tuple[int, bool]]:
        rows = await self._fetch(
            "SELECT run_id, epoch, status = 'paused' FROM durable.runs WHERE owner = $1 AND status IN ('running', 'paused')",
            owner,
        )  # fmt: skip
        return {r[0]: (r[1], r[2]) for r in rows}

    async def running_owners(self) -> list[str]:
        rows = await self._fetch("SELECT DISTINCT owner FROM durable.runs WHERE status = 'running' AND owner IS NOT NULL")
        return [r[0] for r in rows]

    async def pending_workflows(self) -> dict[str, int]:
        rows = await self._fetch("SELECT workflow, count(*) FROM durable.runs WHERE status = 'pending' GROUP BY workflow")
        return {r[0]: r[1] for r in rows}

    async def verify(self) -> list[str]:
        # The server checks its own pages (data checksums, when the cluster has them); this is durable's part.
        lost = lost_records([tuple(r) for r in await self._fetch(LOST_RECORDS.format(schema="durable."))])
        return lost + await damaged_values(lambda run_id, seq: self._fetch(_VALUES_AFTER, run_id, seq))

    async def next_wake(self) -> float | None:
        rows = await self._fetch(
            "SELECT LEAST((SELECT MIN(wake_at) FROM durable.runs WHERE status IN ('sleeping', 'waiting')),"
            " (SELECT MIN(not_before) FROM durable.runs WHERE status = 'pending'))"
        )
        return rows[0][0]
