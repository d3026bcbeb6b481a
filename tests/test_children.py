"""Child runs: ctx.child starts a run and waits for its outcome, unloaded, on both stores, also across crashes."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

import durable
from durable.cli import main
from helpers import eventually, finish, log_lines, make_app, records, spawn, stored_run, unloaded, wait_until

calls: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


class OutOfStock(Exception):
    pass


def pick(item: str) -> str:
    calls[f"pick {item}"] += 1
    if item == "unicorn":
        raise OutOfStock(f"no {item} left")
    return f"picked {item}"


def shop(db: str, **options) -> durable.App:
    app = make_app(db, **options)

    @app.workflow
    async def ship(ctx: durable.Context, item: str) -> dict:
        return {"item": item, "label": await ctx.step(pick, item)}

    @app.workflow
    async def order(ctx: durable.Context, items: list[str]) -> list[dict]:
        return list(await asyncio.gather(*(ctx.child(ship, item) for item in items)))

    @app.workflow
    async def careful(ctx: durable.Context, item: str) -> str:
        try:
            return (await ctx.child("ship", item))["label"]
        except OutOfStock as exc:
            return f"refunded: {exc}"

    @app.workflow
    async def waits_on_a_child(ctx: durable.Context) -> str:
        return await ctx.child("approval")

    @app.workflow
    async def approval(ctx: durable.Context) -> str:
        return await ctx.ask("ok?", key="ok")

    return app


async def _status(app: durable.App, run_id: str, status: str) -> bool:
    return await app.status(run_id) == status


async def test_children_under_gather_return_their_results_with_their_types(db: str) -> None:
    app = shop(db)
    async with app:
        result = await app.run("order", ["tea", "mug", "pot"], run_id="o")
        assert result == [{"item": i, "label": f"picked {i}"} for i in ("tea", "mug", "pot")]
        assert await app.run("order", ["tea", "mug", "pot"], run_id="o") == result  # replays: nothing runs again
        child = await app.get_run("o.1")
        assert (child.workflow, child.parent, child.status) == ("ship", "o", "completed")
    assert calls == {"pick tea": 1, "pick mug": 1, "pick pot": 1}
    assert records(db, "o") == [(0, "child", "ship", "completed"), (1, "child", "ship", "completed"), (2, "child", "ship", "completed")]


async def test_a_childs_error_is_raised_in_the_parent_as_its_own_type(db: str) -> None:
    app = shop(db)
    async with app:
        assert await app.run("careful", "unicorn", run_id="c") == "refunded: no unicorn left"
        assert await app.status("c.0") == "failed"
        assert await app.run("careful", "unicorn", run_id="c") == "refunded: no unicorn left"
    assert calls == {"pick unicorn": 1}


async def test_cancelling_the_parent_cancels_its_unfinished_children(db: str) -> None:
    app = shop(db)
    async with app:
        parent = await app.start("waits_on_a_child", run_id="p")
        await eventually(lambda: app.prompts(run_id="p.0"), what="the child's prompt")
        assert await app.status("p") == "waiting"
        await app.cancel("p")
        with pytest.raises(durable.RunCancelled):
            await parent.result(timeout=10)
        assert await app.status("p.0") == "cancelled"
        assert await app.prompts() == []


async def test_a_parent_waits_unloaded_and_a_child_answered_elsewhere_moves_it_on(db: str) -> None:
    app = shop(db)
    async with app:
        parent = await app.start("waits_on_a_child", run_id="p")
        await eventually(lambda: app.prompts(run_id="p.0"), what="the child's prompt")
        await unloaded(app, "p")
        async with durable.App(db) as person:
            await person.answer("p.0", "ok", "yes")
        assert await parent.result(timeout=10) == "yes"


async def test_a_given_child_run_id_of_another_workflow_is_refused(db: str) -> None:
    app = shop(db)

    @app.workflow
    async def clash(ctx: durable.Context) -> str:
        return await ctx.child("approval", run_id="o")

    async with app:
        await app.run("order", [], run_id="o")
        with pytest.raises(durable.RunIdInUse):
            await app.run(clash, run_id="x")


def test_durable_show_links_parent_and_children(db: str) -> None:
    async def run() -> None:
        async with shop(db) as app:
            await app.run("order", ["tea"], run_id="o")

    asyncio.run(run())
    shown = CliRunner().invoke(main, ["show", "o", "--db", db]).output
    assert "run o.0" in shown
    shown = CliRunner().invoke(main, ["show", "o.0", "--db", db]).output
    assert "parent    o" in shown


def test_a_parent_killed_while_its_child_runs_and_a_child_killed_mid_step_both_finish(db: str, tmp_path: Path) -> None:
    log = tmp_path / "log"
    parent = spawn(db, log, "fam", "family", "--block", "child-1")  # the child blocks in its step: kill there
    wait_until(lambda: "start child-1" in log_lines(log), what="the child's step to start")
    wait_until(lambda: getattr(stored_run(db, "fam"), "status", None) == "waiting", what="the parent to park")
    parent.send_signal(signal.SIGKILL)
    parent.communicate(timeout=10)
    row = stored_run(db, "fam")
    assert row is not None and row.status == "waiting"  # the parent waits, unloaded, for its child
    rerun = spawn(db, log, "fam", "family")  # takes over both: the dead process's child, then the parent
    out = finish(rerun)
    assert out.strip().endswith('RESULT "child:child-1-ok"')
    lines = log_lines(log)
    assert lines.count("start child-1") == 2 and lines.count("done child-1") == 1  # in flight at the kill: ran again
    assert lines.count("start parent-0") == 1  # completed before the kill: never again


async def test_many_children_ending_at_once_in_two_processes_never_strand_a_parent(db: str) -> None:
    """Children of one gather finish in two Apps (two writers) at the same moment: every parent hears of both."""

    def build() -> durable.App:
        app = make_app(db)

        async def quick(i: int) -> int:
            return i

        @app.workflow(name="kid")
        async def kid(ctx: durable.Context, i: int) -> int:
            return await ctx.step(quick, i)

        @app.workflow(name="pair")
        async def pair(ctx: durable.Context, i: int) -> int:
            a, b = await asyncio.gather(ctx.child("kid", i), ctx.child("kid", i + 1))
            return a + b

        return app

    async with build() as one, build() as two:
        handles = [await (one if i % 2 else two).start("pair", i, run_id=f"p{i}") for i in range(40)]
        assert [await h.result(timeout=60) for h in handles] == [2 * i + 1 for i in range(40)]


async def test_a_parent_failed_by_its_child_completes_once_both_are_retried(db: str) -> None:
    app = shop(db)
    broken = {"on": True}

    def fragile() -> str:
        calls["fragile"] += 1
        if broken["on"]:
            raise RuntimeError("boom")
        return "fixed"

    @app.workflow(name="kid")
    async def kid(ctx: durable.Context) -> str:
        return await ctx.step(fragile)

    @app.workflow(name="mom")
    async def mom(ctx: durable.Context) -> str:
        return "mom: " + await ctx.child("kid")

    async with app:
        with pytest.raises(RuntimeError, match="boom"):
            await app.run(mom, run_id="m")
        broken["on"] = False
        assert await (await app.retry("m.0")).result(timeout=10) == "fixed"
        assert await (await app.retry("m")).result(timeout=10) == "mom: fixed"


async def test_a_run_has_one_parent_and_a_fork_does_not_inherit_a_wait(db: str) -> None:
    app = shop(db)

    @app.workflow(name="adopts")
    async def adopts(ctx: durable.Context) -> str:
        return await ctx.child("approval", run_id="shared")

    async with app:
        first = await app.start(adopts, run_id="a1")
        await eventually(lambda: app.prompts(run_id="shared"), what="the child's prompt")
        with pytest.raises(durable.ChildOfAnother, match="'shared' is already a child of run 'a1'"):
            await app.run(adopts, run_id="a2")
        await app.answer("shared", "ok", "first")
        assert await first.result(timeout=10) == "first"
        fork = await app.fork("a1", at_seq=1, new_run_id="a1-fork")  # a1's record of 'shared' is copied: it ended
        assert await fork.result(timeout=10) == "first"
        assert await app.run(adopts, run_id="a3") == "first"  # an ended run's outcome is anyone's to read


async def test_a_parent_that_ends_cancels_its_unfinished_children(db: str) -> None:
    app = shop(db)

    @app.workflow(name="impatient", timeout=0.5)
    async def impatient(ctx: durable.Context) -> str:
        return await ctx.child("approval")  # nobody answers the child: the parent times out

    async with app:
        with pytest.raises(durable.RunTimedOut):
            await app.run(impatient, run_id="i")
        await eventually(lambda: _status(app, "i.0", "cancelled"), what="the orphaned child to be cancelled")
        assert await app.prompts() == []


async def test_watch_sees_a_message_arrive_and_a_child_end_live(db: str) -> None:
    app = shop(db)

    @app.workflow(name="both")
    async def both(ctx: durable.Context) -> int:
        got = await ctx.receive("n", type=int)
        await ctx.child("approval")
        return got

    async with app:
        await app.start(both, run_id="b")
        seen: list[tuple[int, str, str]] = []

        async def follow() -> None:
            async for _, record in app.watch("b"):
                seen.append((record.seq, record.kind, record.status))

        watcher = asyncio.create_task(follow())
        await eventually(lambda: _is_seen(seen, (0, "receive", "waiting")), what="the waiting receive")
        await app.send("b", "n", 5)
        await eventually(lambda: app.prompts(run_id="b.1"), what="the child's prompt")
        await app.answer("b.1", "ok", "yes")
        await asyncio.wait_for(watcher, 10)
    assert seen == [(0, "receive", "waiting"), (0, "receive", "received"), (1, "child", "waiting"), (1, "child", "completed")]


async def _is_seen(seen: list, item: tuple) -> bool:
    return item in seen
