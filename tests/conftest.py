"""Fixtures: every behaviour test runs on both stores, SQLite and PostgreSQL.

`store` (alias `db`) is a journal target: a fresh SQLite file, or a fresh
PostgreSQL database on the server named by $DURABLE_TEST_PG (default: the
local server, user postgres). Where no server answers, the PostgreSQL half is
skipped with the reason, except under CI=true, where it must run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import durable
from helpers import make_app, pg_admin_url, pg_unavailable, run_sync

STORES = ["sqlite", "postgres"]


def _postgres_or_skip() -> str:
    reason = pg_unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs PostgreSQL, and {reason}", pytrace=False)
        pytest.skip(f"no PostgreSQL server: {reason} (set DURABLE_TEST_PG to a server's URL)")
    return pg_admin_url()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty journal target on each store."""
    if request.param == "sqlite":
        yield str(tmp_path / "journal.db")
        return
    admin = _postgres_or_skip()
    name = f"durable_test_{uuid.uuid4().hex[:12]}"
    run_sync(_admin(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        run_sync(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def db(store: str) -> str:
    return store


@pytest.fixture
def db_file(tmp_path: Path) -> str:
    """A journal file, for what only SQLite has (the file format, WAL, locks)."""
    return str(tmp_path / "journal.db")


@pytest.fixture
def app(db: str) -> durable.App:
    return make_app(db)
