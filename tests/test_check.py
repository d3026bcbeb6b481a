"""app.check() and `durable check`: replay a journal against new code, executing and writing nothing."""

from __future__ import annotations

import asyncio
import shutil
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

import durable
from durable.cli import main
from helpers import journal_state, make_app

calls: Counter[str] = Counter()


def load(x: int) -> int:
    calls["load"] += 1
    return x


def enrich(x: int) -> int:
    calls["enrich"] += 1
    return x + 1


def load_v3(x: int) -> int:  # the same step, renamed: recorded runs cannot replay it
    calls["load_v3"] += 1
    return x


async def v1(ctx: durable.Context, x: int) -> int:
    got = await ctx.step(load, x)
    ok = await ctx.ask("go?", type=bool, key="go")
    return got if ok else -1


async def v2(ctx: durable.Context, x: int) -> int:
    got = await ctx.step(load, x)
    if ctx.patched("enrich"):
        got = await ctx.step(enrich, got)
    ok = await ctx.ask("go?", type=bool, key="go")
    return got if ok else -1


async def v3(ctx: durable.Context, x: int) -> int:
    got = await ctx.step(load_v3, x)
    ok = await ctx.ask("go?", type=bool, key="go")
    return got if ok else -1


def app_with(db: str, body, **options) -> durable.App:
    app = make_app(db, **options)
    app.workflow(name="wf")(body)
    return app


async def park(db: str, n: int) -> None:
    """`n` runs of v1, each waiting at its prompt."""
    app = app_with(db, v1)
    async with app:
        for i in range(n):
            await app.start("wf", i, run_id=f"r{i:03}")
        ours = {f"r{i:03}" for i in range(n)}
        while len([p for p in await app.prompts() if p.run_id in ours]) < n:
            await asyncio.sleep(0.02)


async def copy_of(db: str, tmp_path: Path) -> str:
    """A copy of the journal, as CI would take of production's (PostgreSQL: the same database)."""
    if db.startswith("postgresql://"):
        return db
    copy = str(tmp_path / "copy.db")
    shutil.copyfile(db, copy)
    return copy


async def test_ci_gate_a_patched_version_is_ok_and_a_rename_blocks_every_parked_run(db: str, tmp_path: Path) -> None:
    await park(db, 100)
    copy = await copy_of(db, tmp_path)
    before = journal_state(copy)
    calls.clear()

    async with app_with(copy, v2).reader() as app:
        results = await app.check()
    assert len(results) == 100 and {r.verdict for r in results} == {"ok"}
    assert all(r.seq == 1 and "waits for an answer to prompt 'go'" in r.detail for r in results)
    assert all(r.patches == {"enrich": False} for r in results)  # every old run keeps the old path

    async with app_with(copy, v3).reader() as app:
        results = await app.check()
    assert {r.verdict for r in results} == {"blocked"}
    assert all(r.seq == 0 for r in results)
    assert "step 'load'" in results[0].detail and "step 'load_v3'" in results[0].detail

    assert calls == {}  # no step executed
    assert journal_state(copy) == before  # and nothing written


async def test_verdicts_name_where_each_run_stands(db: str) -> None:
    async def dropped(ctx: durable.Context, x: int) -> int:  # drops the prompt the runs recorded
        return await ctx.step(load, x)

    async def later(ctx: durable.Context, x: int) -> int:
        await ctx.step(load, x)
        await ctx.step(enrich, x)
        return x

    app = app_with(db, v1)
    app.workflow(name="other")(later)
    async with app:
        await app.start("wf", 1, run_id="waiting")
        assert await app.run("other", 2, run_id="done") == 2
        await app.submit("gone", run_id="unknown")
        while await app.status("waiting") != "waiting":
            await asyncio.sleep(0.01)
    calls.clear()

    async with app_with(db, v1).reader() as app:
        app.workflow(name="other")(dropped)
        verdicts = {r.run_id: r for r in await app.check(include_ended=True)}
        unfinished = {r.run_id for r in await app.check()}
    assert unfinished == {"waiting", "unknown"}
    assert verdicts["waiting"].verdict == "ok"
    assert verdicts["unknown"].verdict == "unknown-workflow" and "'gone'" in verdicts["unknown"].detail
    assert verdicts["done"].verdict == "blocked" and verdicts["done"].seq == 1
    assert "nothing: the workflow returned before it" in verdicts["done"].detail
    assert calls == {}


async def test_a_run_is_checked_up_to_where_new_work_starts(db: str) -> None:
    gate = asyncio.Event()

    async def slow(x: int) -> int:
        await gate.wait()
        return x

    async def wf(ctx: durable.Context, x: int) -> int:
        await ctx.step(load, x)
        return await ctx.step(slow, x)

    app = make_app(db)
    app.workflow(name="wf")(wf)
    async with app:
        await app.start("wf", 1, run_id="r")
        while len((await app.get_run("r")).steps) < 1:
            await asyncio.sleep(0.01)
        results = await app.check()  # on the live App: the run is executing here right now
        gate.set()
    assert [(r.verdict, r.seq) for r in results] == [("ok", 1)]
    assert "new work starts" in results[0].detail


async def test_a_blocked_run_that_the_new_code_replays_is_ok_with_a_hint_to_retry(db: str) -> None:
    await park(db, 1)
    app = app_with(db, v3)
    async with app:
        with pytest.raises(durable.NondeterminismError):
            await app.run("wf", 0, run_id="r000")
        assert await app.status("r000") == "blocked"
    async with app_with(db, v1).reader() as app:
        [result] = await app.check()
    assert result.verdict == "ok" and "durable retry r000" in result.detail


APP_MODULE = """
import durable
app = durable.App("production.db")

def load(x: int) -> int:
    return x

def {step}(x: int) -> int:
    return x

@app.workflow(name="wf")
async def wf(ctx: durable.Context, x: int) -> int:
    got = await ctx.step({step}, x)
    ok = await ctx.ask("go?", type=bool, key="go")
    return got if ok else -1
"""


@pytest.mark.parametrize("step, code", [("load", 0), ("load_v3", 1)])
def test_durable_check_exits_1_when_a_run_would_not_replay(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, code: int
) -> None:
    asyncio.run(park(db, 3))
    module = f"check_app_{step}_{abs(hash(db)) % 10**8}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(APP_MODULE.format(step=step)))
    monkeypatch.chdir(tmp_path)
    before = journal_state(db)
    result = CliRunner().invoke(main, ["check", f"{module}:app", "--db", db])
    sys.modules.pop(module, None)
    assert result.exit_code == code, result.output
    assert journal_state(db) == before
    if code == 0:
        assert [line.split()[0] for line in result.output.splitlines()[1:4]] == ["ok"] * 3
        assert "3 runs checked" in result.output
    else:
        assert [line.split()[:4] for line in result.output.splitlines()[1:4]] == [["blocked", f"r00{i}", "wf", "0"] for i in range(3)]
        assert "3 of 3 runs checked" in result.output and "ctx.patched" in result.output


def test_durable_check_says_when_a_patch_can_be_retired(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def prepare() -> None:
        app = app_with(db, v2)
        async with app:
            await app.start("wf", 1, run_id="new")  # takes the new path
            while await app.status("new") != "waiting":
                await asyncio.sleep(0.01)

    asyncio.run(prepare())
    module = f"check_retire_{abs(hash(db)) % 10**8}"
    (tmp_path / f"{module}.py").write_text(
        "import durable\nfrom test_check import v2\napp = durable.App()\napp.workflow(name='wf')(v2)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    result = CliRunner().invoke(main, ["check", f"{module}:app", "--db", db])
    assert result.exit_code == 0, result.output
    assert "patch 'enrich': no unfinished run takes its old path; it can be retired" in result.output
    asyncio.run(park(db, 1))  # an old run: v1 recorded its prompt where v2 has the patch
    result = CliRunner().invoke(main, ["check", f"{module}:app", "--db", db])
    sys.modules.pop(module, None)
    assert "patch 'enrich': 1 run still takes its old path; keep it" in result.output


def test_check_reads_a_journal_of_the_previous_schema_as_it_is(tmp_path: Path) -> None:
    """CI checks production's journal against the new code before the new durable has ever opened it."""
    import sqlite3

    from durable.store.sqlite_schema import APPLICATION_ID, MIGRATIONS, REPLAYS_FROM

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statements in MIGRATIONS[:REPLAYS_FROM]:
        for statement in statements:
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {REPLAYS_FROM}")
    conn.execute(
        "INSERT INTO runs (run_id, workflow, status, args, created_at, updated_at, epoch, records)"
        " VALUES ('r', 'wf', 'waiting', '{\"args\": [3], \"kwargs\": {}}', 1, 1, 1, 2)"
    )
    conn.execute("INSERT INTO records VALUES ('r', 0, 'step', 'load', 'completed', '3', NULL, 1, 1, 1, NULL, NULL)")
    conn.execute(
        "INSERT INTO records VALUES ('r', 1, 'ask', 'go', 'waiting', NULL, NULL, 1, 1, NULL, 'go?', '{\"type\": \"boolean\"}')"
    )
    conn.close()
    before = journal_state(str(path))

    async def check() -> list[durable.CheckResult]:
        async with app_with(str(path), v2).reader() as app:
            return await app.check()

    [result] = asyncio.run(check())
    assert (result.verdict, result.seq, result.patches) == ("ok", 1, {"enrich": False})
    assert journal_state(str(path)) == before  # not migrated: still the old schema, untouched

    async def show() -> None:
        async with durable.App(str(path), read_only=True) as app:
            await app.get_run("r")

    with pytest.raises(durable.JournalError, match="older durable"):
        asyncio.run(show())  # anything else that reads it still asks for the migration first
