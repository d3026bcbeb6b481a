"""The PostgreSQL rows of compare.py: durable, a naive asyncpg floor, and DBOS on the same server.

Every measurement gets a fresh database on the server named by ``--pg`` (an
admin URL; default the local server, user postgres), dropped afterwards.

Durability on PostgreSQL: "normal" = ``synchronous_commit = off`` (a commit
survives a crash of the client process; the server may lose its last few
hundred milliseconds if it crashes itself), "full" = ``on`` (the server's
default: every commit waits for its WAL flush). The fresh database gets the
setting with ``ALTER DATABASE ... SET synchronous_commit``, so every session
of every system measured on it (the naive floor's, DBOS's) commits that way;
durable's writer session also sets it itself (``App(url, durability=...)``).
Each measurement reads the setting back from a new session on the database.

Naive floor: one autocommitted asyncpg ``INSERT`` per step on one connection
(W1); the same 5,000 INSERTs from 1,000 concurrent tasks over a pool of 10
connections (W2, a connection runs one statement at a time); one ``SELECT``
by key on an open connection (W4).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SYNCHRONOUS_COMMIT = {"normal": "off", "full": "on"}
POOL = 10


async def unavailable(admin: str) -> str | None:
    """Why the server cannot be used (None: it can)."""
    try:
        import asyncpg
    except ModuleNotFoundError:
        return "asyncpg is not installed (pip install -e '.[postgres]')"
    try:
        conn = await asyncpg.connect(admin, timeout=5)
    except Exception as exc:
        return f"{admin} does not answer ({type(exc).__name__}: {exc})"
    await conn.close()
    return None


def database_url(admin: str, name: str) -> str:
    return admin.rsplit("/", 1)[0] + f"/{name}"


@contextlib.asynccontextmanager
async def fresh_database(admin: str, durability: str) -> AsyncIterator[str]:
    """A new, empty database with the durability's synchronous_commit; its URL."""
    import asyncpg

    name = f"durable_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = {SYNCHRONOUS_COMMIT[durability]}')
    finally:
        await conn.close()
    try:
        yield database_url(admin, name)
    finally:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def setting(url: str) -> str:
    """synchronous_commit as a new session on the database sees it."""
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        return str(await conn.fetchval("SHOW synchronous_commit"))
    finally:
        await conn.close()


async def _naive_table(url: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    await conn.execute("CREATE TABLE records (run_id text, seq integer, value bytea, PRIMARY KEY (run_id, seq))")
    return conn


async def naive_w1(url: str, n: int) -> float:
    conn = await _naive_table(url)
    try:
        started = time.perf_counter()
        for i in range(n):
            await conn.execute("INSERT INTO records VALUES ($1, $2, $3)", "naive", i, str(i).encode())
        return time.perf_counter() - started
    finally:
        await conn.close()


async def naive_w2(url: str, runs: int, per_run: int) -> float:
    import asyncio

    import asyncpg

    await (await _naive_table(url)).close()
    pool = await asyncpg.create_pool(url, min_size=POOL, max_size=POOL)
    try:

        async def one(run: int) -> None:
            for i in range(per_run):
                await pool.execute("INSERT INTO records VALUES ($1, $2, $3)", f"r{run}", i, str(i).encode())

        started = time.perf_counter()
        await asyncio.gather(*(one(r) for r in range(runs)))
        return time.perf_counter() - started
    finally:
        await pool.close()


async def naive_w4(url: str, samples: int) -> list[float]:
    conn = await _naive_table(url)
    try:
        await conn.execute("INSERT INTO records VALUES ($1, $2, $3)", "w4", -1, b"100")
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            row = await conn.fetchrow("SELECT value FROM records WHERE run_id = $1 AND seq = -1", "w4")
            times.append((time.perf_counter() - started) * 1000)
            assert row is not None and row[0] == b"100"
        return times
    finally:
        await conn.close()
