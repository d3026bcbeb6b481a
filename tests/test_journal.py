"""The journal file: created, migrated, and never mistaken for someone else's database."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import durable
from durable.store.sqlite_schema import APPLICATION_ID, SCHEMA_VERSION
from helpers import eventually, make_app, tmpfs


async def test_new_file_gets_the_schema_in_wal_mode(db_file: str) -> None:
    async with make_app(db_file):
        pass
    conn = sqlite3.connect(db_file)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental: prune() gives space back
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert tables == {"runs", "records", "set_aside", "messages", "schedules", "prompt_log"}


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
    with pytest.raises(durable.JournalError, match=r"SQLite database of another application \(table customers\)"):
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


async def test_a_database_with_only_a_view_is_someone_elses_and_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "views.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE VIEW answers AS SELECT 42 AS answer")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(durable.JournalError, match=r"another application \(view answers\)"):
        async with make_app(str(path)):
            pass
    assert path.read_bytes() == before


async def test_a_newer_journal_is_refused_before_anything_is_written(db_file: str) -> None:
    async with make_app(db_file):
        pass
    conn = sqlite3.connect(db_file)
    conn.execute("PRAGMA journal_mode = DELETE")  # as a newer durable might leave it
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = Path(db_file).read_bytes()
    with pytest.raises(durable.JournalError, match="written by a newer durable"):
        async with make_app(db_file):
            pass
    assert Path(db_file).read_bytes() == before  # its journal mode not switched, nothing written
    assert not Path(f"{db_file}-wal").exists()


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own, to be remounted read-only (root only)."""
    with tmpfs(tmp_path / "ro", "8m") as mount:
        yield mount


async def test_a_journal_on_a_read_only_mount_can_be_read_and_says_why_it_cannot_be_written(read_only_mount: Path) -> None:
    path = str(read_only_mount / "journal.db")
    app = make_app(path)

    @app.workflow
    async def wf(ctx: durable.Context) -> int:
        return await ctx.step(lambda: 7)

    async with app:
        assert await app.run(wf, run_id="r") == 7
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_mount)], check=True)
    async with durable.App(path, read_only=True) as reader:
        assert [(r.run_id, r.status) for r in await reader.list_runs()] == [("r", "completed")]
        assert (await reader.get_run("r")).result == 7
        with pytest.raises(durable.JournalError, match="opened read-only"):
            await reader.cancel("r")
    with pytest.raises(durable.JournalError, match="the file or its directory is read-only"):
        async with make_app(path):
            pass


async def test_a_journal_that_lost_records_blocks_the_run_instead_of_running_steps_again(db_file: str) -> None:
    executed: list[int] = []

    def work(i: int) -> int:
        executed.append(i)
        return i

    def build() -> durable.App:
        app = make_app(db_file)

        @app.workflow
        async def wf(ctx: durable.Context) -> int:
            total = sum([await ctx.step(work, i) for i in range(3)])
            await ctx.ask("done?", type=bool, key="done")
            return total

        return app

    async with build() as app:
        await app.start("wf", run_id="r")
        await eventually(lambda: _status_is(app, "r", "waiting"), what="the run to park")
    conn = sqlite3.connect(db_file)
    conn.execute("DELETE FROM records WHERE run_id = 'r' AND seq = 1")  # as a damaged page would lose it
    conn.commit()
    conn.close()
    async with build() as app:
        with pytest.raises(durable.JournalError, match=r"committed 4 records but only 3 are left.*Restore the journal"):
            await app.run("wf", run_id="r")
        assert (await app.status("r")) == "blocked"
    assert executed == [0, 1, 2]  # nothing ran again


def zero(db: str, kind: str) -> None:
    """Overwrite one page of the records table with zeros: a b-tree page ('leaf') or a value's overflow page."""
    conn = sqlite3.connect(db)
    try:
        page = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'records' AND pagetype = ? ORDER BY pageno LIMIT 1 OFFSET 3", (kind,)
        ).fetchone()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat table to find a page with")
    finally:
        conn.close()
    with open(db, "r+b") as f:
        f.seek(page_size * (page[0] - 1))
        f.write(b"\0" * page_size)


async def parked_bulky_run(db: str) -> durable.App:
    app = make_app(db)

    @app.workflow
    async def bulky(ctx: durable.Context, n: int) -> int:
        for i in range(n):
            await ctx.step(lambda i=i: "x" * 2000)  # a value larger than a page's share: it overflows
        await ctx.ask("done?", type=bool, key="done")
        return n

    async with app:
        await app.start(bulky, 200, run_id="r")
        await eventually(lambda: _status_is(app, "r", "waiting"), what="the run to park")
    return app


async def test_a_zeroed_page_is_refused_with_the_file_named_not_retried_forever(db_file: str) -> None:
    app = await parked_bulky_run(db_file)
    zero(db_file, "leaf")
    async with app:
        with pytest.raises(durable.JournalError, match=r"journal.db.*damaged.*Restore it from a backup"):
            await asyncio.wait_for(app.run("bulky", 200, run_id="r"), 20)


async def test_a_value_damaged_in_place_blocks_the_run_and_never_fails_it(db_file: str) -> None:
    app = await parked_bulky_run(db_file)
    zero(db_file, "overflow")  # SQLite does not check these: the value reads back as zeros
    async with app:
        with pytest.raises(durable.UnreadableRecord, match=r"recorded value of step .* cannot be read back"):
            await asyncio.wait_for(app.run("bulky", 200, run_id="r"), 20)
        assert (await app.status("r")) == "blocked"


async def _status_is(app: durable.App, run_id: str, status: str) -> bool:
    return (await app.status(run_id)) == status


def doctor(db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durable", "doctor", "--db", db], capture_output=True, text=True, timeout=60, check=False
    )


async def test_durable_doctor_finds_lost_records_and_damaged_pages_and_changes_nothing(db_file: str) -> None:
    app = await parked_bulky_run(db_file)
    healthy = await asyncio.to_thread(doctor, db_file)
    assert (healthy.returncode, healthy.stdout.strip()) == (
        0,
        f"{db_file}: ok (integrity check passed; every run has all the records it committed; every value reads)",
    )
    conn = sqlite3.connect(db_file)
    conn.execute("DELETE FROM records WHERE run_id = 'r' AND seq = 7")
    conn.commit()
    conn.close()
    lost = await asyncio.to_thread(doctor, db_file)
    assert lost.returncode == 1
    assert "run 'r' committed 201 records but only 200 are left" in lost.stdout
    assert "restore it from a backup" in lost.stderr
    zero(db_file, "leaf")
    before = Path(db_file).read_bytes()
    damaged = await asyncio.to_thread(doctor, db_file)
    assert damaged.returncode == 1
    assert "SQLite's integrity check (PRAGMA quick_check)" in damaged.stdout, damaged.stdout + damaged.stderr
    assert Path(db_file).read_bytes() == before  # looked at, never written
    del app


async def test_durable_doctor_finds_a_value_damaged_in_place_which_sqlite_does_not_check(db_file: str) -> None:
    await parked_bulky_run(db_file)
    zero(db_file, "overflow")
    found = await asyncio.to_thread(doctor, db_file)
    assert found.returncode == 1
    assert "run 'r': the value recorded at seq" in found.stdout and "is not the JSON durable wrote" in found.stdout
