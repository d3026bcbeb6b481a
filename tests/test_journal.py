"""The journal file: created, migrated, and never mistaken for someone else's database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import durable
from durable.store.sqlite_schema import APPLICATION_ID, SCHEMA_VERSION
from helpers import make_app


async def test_new_file_gets_the_schema_in_wal_mode(db_file: str) -> None:
    async with make_app(db_file):
        pass
    conn = sqlite3.connect(db_file)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert tables == {"runs", "records"}


async def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(durable.JournalError, match=r"notes.db.*file is not a database.*never overwrites it"):
        async with make_app(str(path)):
            pass
    assert path.read_bytes() == before


async def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    with pytest.raises(durable.JournalError, match=r"SQLite database of another application \(tables: customers\)"):
        async with make_app(str(path)):
            pass
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["customers"]
    conn.close()


async def test_a_journal_from_a_newer_durable_is_refused(db_file: str) -> None:
    async with make_app(db_file):
        pass
    conn = sqlite3.connect(db_file)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(durable.JournalError, match="written by a newer durable"):
        async with make_app(db_file):
            pass


async def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(durable.JournalError, match="does not exist. Create it first"):
        async with make_app(str(tmp_path / "nope" / "j.db")):
            pass


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_both_durability_modes_run_workflows(db: str, durability: str) -> None:
    app = make_app(db, durability=durability)

    @app.workflow
    async def wf(ctx: durable.Context) -> int:
        return await ctx.step(lambda: 1) + 1

    async with app:
        assert await app.run(wf) == 2


def test_unknown_durability_is_refused(db: str) -> None:
    with pytest.raises(ValueError, match="durability must be 'normal' or 'full', not 'fast'"):
        durable.App(db, durability="fast")


def test_path_falls_back_to_the_environment_then_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DURABLE_DB", str(tmp_path / "env.db"))
    assert durable.App().path == str(tmp_path / "env.db")
    assert durable.App(tmp_path / "arg.db").path == str(tmp_path / "arg.db")
    monkeypatch.delenv("DURABLE_DB")
    assert durable.App().path == "durable.db"
