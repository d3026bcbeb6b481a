"""The PostgreSQL journal's schema and connections: its own ``durable`` schema, versioned, migrated on open.

durable keeps its tables in a schema of their own, so a database shared with
an application is never touched outside it. Every statement names its table
with the schema (``durable.runs``): no ``search_path``, no session state, so
the store works behind a pooler in transaction mode. Migrations run under a
transaction-scoped advisory lock, so any number of processes may open the
store at once; a database migrated by a newer durable is refused.
"""

from __future__ import annotations

from typing import Any

from ..errors import JournalError, StoreUnavailable
from .base import IN_PLACE, IN_PLACE_BEFORE_RACES
from .postgres_ops import RUN

# What replay reads of a run's records (prepared on every new connection, by warm()).
REPLAY = "SELECT seq, kind, name, status, value, error, attempts FROM durable.records WHERE run_id = $1 ORDER BY seq"

UNAVAILABLE_CLASSES = ("08", "53", "57", "58")  # connection, resources (disk full), operator, system (I/O)
RETRY_STATES = ("40001", "40P01")  # serialization failure, deadlock detected

__all__ = [
    "MIGRATIONS", "REPLAY", "RETRY_STATES", "SCHEMA_VERSION", "UNAVAILABLE_CLASSES", "check_readable", "fails_batch",
    "keep_session", "migrate", "rollback", "warm",
]  # fmt: skip

# pg_advisory_xact_lock key: "durable" in ASCII, as one bigint.
MIGRATION_LOCK = 0x64757261626C65

# When a child ends, its outcome fills the parent's record and the parent, if waiting, becomes ready: when nothing
# else it waits for is left ({wakes}). Its time is later than the run's in-place changes before ({kinds}).
CHILD_ENDED = (
    """{create} FUNCTION durable.child_ended() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- The parent's row first, as every write that decides a run's status: what commits meanwhile
            -- (the parent parking, another child, a message) is seen by the statements below.
            PERFORM 1 FROM durable.runs WHERE run_id = NEW.parent FOR UPDATE;
            UPDATE durable.records SET status = NEW.status, value = NEW.result, error = NEW.error,
                finished_at = GREATEST(NEW.updated_at, COALESCE((SELECT MAX(e.finished_at) FROM durable.records AS e
                    WHERE e.run_id = NEW.parent AND e.kind IN {kinds}), 0) + 0.000001)
                WHERE run_id = NEW.parent AND seq = NEW.parent_seq AND kind = 'child' AND status = 'waiting';
            UPDATE durable.runs SET status = 'pending', ready = 'answered', wake_at = NULL, updated_at = NEW.updated_at
                WHERE run_id = NEW.parent AND status = 'waiting'
                AND {wakes};
            RETURN NULL;
        END $$"""
)
ALL_FILLED = "NOT EXISTS (SELECT 1 FROM durable.records WHERE run_id = NEW.parent AND status = 'waiting')"

MIGRATIONS: list[list[str]] = [
    [  # version 1
        """CREATE TABLE durable.runs (
            run_id      text PRIMARY KEY,
            workflow    text NOT NULL,
            status      text NOT NULL,
            args        bytea NOT NULL,
            result      bytea,
            error       bytea,
            owner       text,
            epoch       bigint NOT NULL DEFAULT 0,
            lease_until double precision,
            wake_at     double precision,
            ready       text,
            created_at  double precision NOT NULL,
            updated_at  double precision NOT NULL,
            records     integer NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX runs_by_status ON durable.runs (status, wake_at)",
        "CREATE INDEX runs_by_created ON durable.runs (created_at)",
        "CREATE INDEX runs_by_owner ON durable.runs (owner) WHERE owner IS NOT NULL",
        """CREATE TABLE durable.records (
            run_id      text NOT NULL,
            seq         integer NOT NULL,
            kind        text NOT NULL,
            name        text NOT NULL,
            status      text NOT NULL,
            value       bytea,
            error       bytea,
            attempts    integer NOT NULL,
            started_at  double precision NOT NULL,
            finished_at double precision,
            question    text,
            schema      text,
            PRIMARY KEY (run_id, seq)
        )""",
        "CREATE INDEX records_waiting ON durable.records (run_id) WHERE status = 'waiting'",
        "CREATE UNIQUE INDEX records_prompt_key ON durable.records (run_id, name) WHERE kind = 'ask'",
    ],
    [  # version 2: what retry() sets aside (a run's error, the records of the step that failed it), kept for audit
        """CREATE TABLE durable.set_aside (
            id           bigserial PRIMARY KEY,
            run_id       text NOT NULL,
            seq          integer NOT NULL,
            kind         text NOT NULL,
            name         text NOT NULL,
            status       text NOT NULL,
            value        bytea,
            error        bytea,
            attempts     integer NOT NULL,
            started_at   double precision NOT NULL,
            finished_at  double precision,
            set_aside_at double precision NOT NULL
        )""",
        "CREATE INDEX set_aside_by_run ON durable.set_aside (run_id, seq)",
        # and a prompt's deadline (ctx.ask(timeout=...)): when it expires unanswered
        "ALTER TABLE durable.records ADD COLUMN deadline double precision",
    ],
    [  # version 3: messages sent to runs (app.send): kept until a ctx.receive takes one (`seq`: the receive's record)
        """CREATE TABLE durable.messages (
            id      bigserial PRIMARY KEY,
            run_id  text NOT NULL,
            topic   text NOT NULL,
            value   bytea NOT NULL,
            sent_at double precision NOT NULL,
            seq     integer
        )""",
        "CREATE INDEX messages_queued ON durable.messages (run_id, topic, id) WHERE seq IS NULL",
        "CREATE INDEX messages_by_run ON durable.messages (run_id)",
        # and a run's deadline (@app.workflow(timeout=...)): past it the run ends failed, RunTimedOut
        "ALTER TABLE durable.runs ADD COLUMN deadline double precision",
        # and child runs (ctx.child): the parent and the seq of its record; when a child ends, its outcome fills
        # that record and the parent becomes ready, in the child's own transaction (so it is never lost)
        "ALTER TABLE durable.runs ADD COLUMN parent text",
        "ALTER TABLE durable.runs ADD COLUMN parent_seq integer",
        "ALTER TABLE durable.runs ADD COLUMN children integer NOT NULL DEFAULT 0",  # how many children it started: only such a run cancels any when it ends
        "CREATE INDEX runs_by_parent ON durable.runs (parent) WHERE parent IS NOT NULL",
        CHILD_ENDED.format(create="CREATE", wakes=ALL_FILLED, kinds=IN_PLACE_BEFORE_RACES),
        """CREATE TRIGGER child_ended AFTER UPDATE OF status ON durable.runs FOR EACH ROW
        WHEN (NEW.parent IS NOT NULL AND NEW.status IN ('completed', 'failed', 'cancelled')
            AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
        EXECUTE FUNCTION durable.child_ended()""",
        # A run that ends, however it ends, cancels its unfinished children (and, through them, theirs).
        """CREATE FUNCTION durable.parent_ended() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE durable.records SET status = 'cancelled', finished_at = NEW.updated_at
                WHERE status = 'waiting' AND run_id IN (SELECT run_id FROM durable.runs
                    WHERE parent = NEW.run_id AND status NOT IN ('completed', 'failed', 'cancelled'));
            UPDATE durable.runs SET status = 'cancelled', owner = NULL, lease_until = NULL, wake_at = NULL,
                updated_at = NEW.updated_at
                WHERE parent = NEW.run_id AND status NOT IN ('completed', 'failed', 'cancelled');
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER parent_ended AFTER UPDATE OF status ON durable.runs FOR EACH ROW
        WHEN (NEW.children > 0 AND NEW.status IN ('completed', 'failed', 'cancelled')
            AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
        EXECUTE FUNCTION durable.parent_ended()""",
    ],
    [  # version 4: ctx.wait and ctx.as_completed: a run unloaded in a race wakes at the first of its waits filled
        "ALTER TABLE durable.runs ADD COLUMN wake_any boolean NOT NULL DEFAULT false",
        CHILD_ENDED.format(create="CREATE OR REPLACE", wakes=f"(wake_any OR {ALL_FILLED})", kinds=IN_PLACE),
    ],
    [  # version 5: queues (durable.Queue): a run's queue and key, its priority, when it may start (submit(delay=)),
        # when it first started (a queue's rate counts starts), and its debounce
        "ALTER TABLE durable.runs ADD COLUMN queue text",
        "ALTER TABLE durable.runs ADD COLUMN queue_key text",
        "ALTER TABLE durable.runs ADD COLUMN priority integer NOT NULL DEFAULT 0",
        "ALTER TABLE durable.runs ADD COLUMN not_before double precision",
        "ALTER TABLE durable.runs ADD COLUMN started_at double precision",
        "ALTER TABLE durable.runs ADD COLUMN debounce double precision",  # submit(debounce=...): later submits of its key move it on
        "CREATE INDEX runs_by_queue ON durable.runs (queue, status) WHERE queue IS NOT NULL",
        "CREATE INDEX runs_started ON durable.runs (queue, started_at) WHERE queue IS NOT NULL",
    ],
    [  # version 6: schedules (@app.schedule): each one's cursor, the time up to which its slots are handled
        """
        CREATE TABLE durable.schedules (
            name        text PRIMARY KEY,
            workflow    text NOT NULL,
            cron        text NOT NULL,
            timezone    text NOT NULL,
            cursor      double precision NOT NULL,
            last_slot   double precision,
            paused      boolean NOT NULL DEFAULT false,
            updated_at  double precision NOT NULL
        )
        """,
    ],
    [  # version 7: a prompt's assignee; who answered it and how; the prompt log (store/prompts.py), append-only
        "ALTER TABLE durable.records ADD COLUMN assignee text",
        "ALTER TABLE durable.records ADD COLUMN answered_by text",
        "ALTER TABLE durable.records ADD COLUMN answered_via text",
        """
        CREATE TABLE durable.prompt_log (
            id      bigserial PRIMARY KEY,
            run_id  text NOT NULL,
            seq     integer NOT NULL,
            key     text NOT NULL,
            action  text NOT NULL,
            value   bytea,
            who     text,
            via     text NOT NULL,
            at      double precision NOT NULL
        )
        """,
        "CREATE INDEX prompt_log_by_run ON durable.prompt_log (run_id, id)",
        """
        CREATE FUNCTION durable.prompt_log_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'durable: the prompt log only grows: a recorded answer is never changed'; END $$
        """,
        "CREATE TRIGGER prompt_log_is_final BEFORE UPDATE ON durable.prompt_log"
        " FOR EACH ROW EXECUTE FUNCTION durable.prompt_log_is_final()",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
# The oldest schema whose runs and records check() can replay, read-only (a journal of the durable before this one),
# and the schema that added runs.deadline (read as NULL from an older one).
REPLAYS_FROM = 1
RUN_DEADLINE_FROM = 3


async def migrate(conn: Any, target: str) -> None:
    """Create or migrate the schema on `conn` (an asyncpg connection); refuse one of a newer durable."""
    async with conn.transaction():
        # Serialises every process migrating at once; released at commit.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE SCHEMA IF NOT EXISTS durable")
        await conn.execute("CREATE TABLE IF NOT EXISTS durable.meta (key text PRIMARY KEY, value text NOT NULL)")
        stored = await conn.fetchval("SELECT value FROM durable.meta WHERE key = 'schema_version'")
        version = int(stored) if stored is not None else 0
        if version > SCHEMA_VERSION:
            raise JournalError(
                target,
                f"it was written by a newer durable (schema {version}, this one knows {SCHEMA_VERSION}). Upgrade durable.",
            )
        if version == 0:
            tables = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'durable' AND table_name <> 'meta'"
            )
            if tables:
                names = ", ".join(sorted(r[0] for r in tables)[:5])
                raise JournalError(
                    target,
                    f"its schema 'durable' holds tables durable did not create (tables: {names}). "
                    "Use another database; durable never writes into a foreign schema.",
                )
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                await conn.execute(statement)
        if version < SCHEMA_VERSION:
            await conn.execute(
                "INSERT INTO durable.meta (key, value) VALUES ('schema_version', $1)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                str(SCHEMA_VERSION),
            )


async def check_readable(conn: Any, target: str, older_ok: bool = False) -> int:
    """Check, without writing anything, that the database holds a journal of this durable's schema.

    `older_ok`: a journal at an older schema whose runs and records check() can replay is read too.
    """
    exists = await conn.fetchval("SELECT to_regclass('durable.meta') IS NOT NULL")
    stored = await conn.fetchval("SELECT value FROM durable.meta WHERE key = 'schema_version'") if exists else None
    if stored is None:
        raise JournalError(target, "it holds no durable journal yet: there is nothing to read.")
    if int(stored) != SCHEMA_VERSION and not (older_ok and REPLAYS_FROM <= int(stored) < SCHEMA_VERSION):
        newer = int(stored) > SCHEMA_VERSION
        raise JournalError(
            target,
            f"its schema is version {stored}, this durable reads version {SCHEMA_VERSION}. "
            + ("Upgrade durable." if newer else "Open it once with write access, which migrates it."),
        )
    return int(stored)


async def warm(conn: Any) -> None:
    # A new server backend loads its catalog caches (the tables, their indexes)
    # at its first statements, about a millisecond; and asyncpg prepares each
    # statement at its first use. Both happen here, when the connection is made,
    # rather than on a caller's first read.
    await conn.fetch(f"SELECT {RUN} FROM durable.runs WHERE run_id = $1", "")
    await conn.fetch(REPLAY, "")


async def keep_session(conn: Any) -> None:
    # The pool's connections only ever read: they set nothing, LISTEN to nothing and
    # take no advisory lock, so the RESET ALL asyncpg sends at each release (a round
    # trip per read) has nothing to reset.
    pass


def fails_batch(exc: Any) -> bool:
    """Whether an error is about the connection or the server (or a deadlock), not one operation."""
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in UNAVAILABLE_CLASSES or state in RETRY_STATES


async def rollback(conn: Any) -> None:
    try:
        await conn.execute("ROLLBACK")
    except Exception:
        pass  # the connection is gone: so is the transaction


def classify(exc: BaseException, target: str, asyncpg: Any, timeout: float) -> Exception:
    """A driver error as durable's own: what happened (to the server at `target`) and what to do."""
    if isinstance(exc, StoreUnavailable | JournalError):
        return exc
    if isinstance(exc, TimeoutError):
        return StoreUnavailable(target, f"the server did not answer within {timeout:g} s")
    if asyncpg is not None and isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        if state == "3D000":
            return JournalError(target, f"PostgreSQL says {exc}. Create the database first.")
        if state in ("28000", "28P01"):
            return JournalError(target, f"PostgreSQL says {exc}. Check the user and password in the URL.")
        if state[:2] in UNAVAILABLE_CLASSES:
            return StoreUnavailable(target, f"PostgreSQL says {exc} (SQLSTATE {state})")
        return exc
    if asyncpg is not None and isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
        return StoreUnavailable(target, f"the connection to the server was lost ({exc})")
    if asyncpg is not None and isinstance(exc, asyncpg.exceptions.InternalClientError):
        # The driver's view of the connection no longer matches the server's (it was cut
        # off mid-statement): that connection is dropped, and a new one is made for the next.
        return StoreUnavailable(target, f"the connection to the server broke off ({exc})")
    if isinstance(exc, OSError):
        return StoreUnavailable(target, f"the server cannot be reached ({exc.strerror or exc})")
    return exc if isinstance(exc, Exception) else StoreUnavailable(target, repr(exc))
