"""retry, fork, pause/resume and prune: what an operator does to runs, on both stores."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections import Counter

import pytest

import durable
from helpers import eventually, make_app, records, stored_run

calls: Counter[str] = Counter()
broken = {"charge": True}


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    broken["charge"] = True


def load(order: str) -> dict:
    calls["load"] += 1
    return {"order": order, "total": 5}


def charge(order: dict) -> str:
    calls["charge"] += 1
    if broken["charge"]:
        raise ConnectionError("the payment service refused the key")
    return f"charged {order['order']}"


def ship(receipt: str) -> str:
    calls["ship"] += 1
    return f"shipped after {receipt}"


def checkout_app(db: str, **options) -> durable.App:
    app = make_app(db, **options)

    @app.workflow(name="checkout")
    async def checkout(ctx: durable.Context, order: str) -> str:
        loaded = await ctx.step(load, order)
        receipt = await ctx.step(charge, loaded)
        return await ctx.step(ship, receipt)

    return app


# --- retry ------------------------------------------------------------------------------------


async def test_retry_after_a_fix_runs_the_failed_step_again_and_no_step_before_it(db: str) -> None:
    app = checkout_app(db)
    async with app:
        with pytest.raises(ConnectionError):
            await app.run("checkout", "o-1", run_id="r")
        assert await app.status("r") == "failed"
        broken["charge"] = False  # the fix is deployed
        handle = await app.retry("r")
        assert await handle.result(timeout=20) == "shipped after charged o-1"
        run = await app.get_run("r")
    assert calls == {"load": 1, "charge": 2, "ship": 1}
    assert [(r.seq, r.name, r.status) for r in run.steps] == [(0, "load", "completed"), (1, "charge", "completed"), (2, "ship", "completed")]
    # The failure is kept for audit, not replayed: the run's error and the failed attempt's record.
    assert [(r.kind, r.name, r.status) for r in run.set_aside] == [("run", "checkout", "failed"), ("step", "charge", "failed")]
    assert "refused the key" in run.set_aside[1].error["message"]
    assert run.status == "completed" and run.error is None


async def test_retry_from_another_process_is_taken_by_the_worker(db: str) -> None:
    app = checkout_app(db)
    async with app:
        with pytest.raises(ConnectionError):
            await app.run("checkout", "o-1", run_id="r")
        broken["charge"] = False
        async with durable.App(db) as client:  # a client App without the workflow: the CLI, HTTP
            await client.retry("r")
        await eventually(lambda: _is(app, "r", "completed"), what="the retried run to complete")
    assert calls == {"load": 1, "charge": 2, "ship": 1}


async def _is(app: durable.App, run_id: str, status: str) -> bool:
    return await app.status(run_id) == status


async def test_retry_sets_aside_every_failure_of_a_gather_that_failed_the_run(db: str) -> None:
    app = make_app(db)
    failing = {"a": True, "b": True}

    async def part(name: str) -> str:
        calls[name] += 1
        if failing.get(name):
            raise ValueError(f"{name} is broken")
        return name

    @app.workflow(name="parts")
    async def parts(ctx: durable.Context) -> list[str]:
        first = await ctx.step(part, "first")
        try:
            await ctx.step(part, "a")  # a failure the code handles: stays recorded, and replays
        except ValueError:
            first += "+handled"
        got = await asyncio.gather(ctx.step(part, "b"), ctx.step(part, "c"), ctx.step(part, "d"))
        return [first, *got]

    async with app:
        failing["d"] = True
        with pytest.raises(ValueError):
            await app.run(parts, run_id="r")
        failing.update(a=False, b=False, d=False)
        assert await (await app.retry("r")).result(timeout=20) == ["first+handled", "b", "c", "d"]
    assert calls == {"first": 1, "a": 1, "b": 2, "c": 1, "d": 2}


async def test_retry_of_a_blocked_run_replays_it_with_the_fixed_code(db: str) -> None:
    app = checkout_app(db)
    async with app:
        with pytest.raises(ConnectionError):
            await app.run("checkout", "o-1", run_id="r")
    renamed = make_app(db)

    @renamed.workflow(name="checkout")
    async def checkout(ctx: durable.Context, order: str) -> str:  # a rename slipped into a deploy
        return await ctx.step(ship, order)

    async with renamed:
        await app_retry_until(renamed, "r", "blocked")
    broken["charge"] = False
    async with checkout_app(db) as fixed:  # the rename is rolled back
        assert await (await fixed.retry("r")).result(timeout=20) == "shipped after charged o-1"
    assert calls == {"load": 1, "charge": 2, "ship": 1}


async def app_retry_until(app: durable.App, run_id: str, status: str) -> None:
    await app.retry(run_id)
    await eventually(lambda: _is(app, run_id, status), what=f"run {run_id} to be {status}")


async def test_retry_refuses_runs_that_did_not_fail(db: str) -> None:
    broken["charge"] = False
    app = checkout_app(db)
    async with app:
        await app.run("checkout", "o-1", run_id="done")
        with pytest.raises(durable.WrongRunStatus, match="'done' is completed: only failed and blocked runs can be retried"):
            await app.retry("done")
        with pytest.raises(durable.RunNotFound):
            await app.retry("nope")
    assert records(db, "done")[-1][3] == "completed"


# --- fork -------------------------------------------------------------------------------------


async def test_fork_at_each_seq_of_a_5_step_run_replays_the_copy_and_executes_the_rest(db: str) -> None:
    app = make_app(db)

    def count(i: int) -> int:
        calls[f"s{i}"] += 1
        return i

    @app.workflow(name="five")
    async def five(ctx: durable.Context) -> list[int]:
        return [await ctx.step(count, i) for i in range(5)]

    async with app:
        assert await app.run(five, run_id="src") == [0, 1, 2, 3, 4]
        for at in range(6):
            before = calls.copy()
            handle = await app.fork("src", at_seq=at, new_run_id=f"fork-{at}")
            assert await handle.result(timeout=20) == [0, 1, 2, 3, 4]
            ran = calls - before
            assert ran == Counter({f"s{i}": 1 for i in range(at, 5)}), (at, ran)
            assert [r[0] for r in records(db, f"fork-{at}")] == [0, 1, 2, 3, 4]
        with pytest.raises(durable.SeqOutOfRange, match="must be between 0 and 5"):
            await app.fork("src", at_seq=6)
        with pytest.raises(durable.RunExists, match="'fork-0' already exists"):
            await app.fork("src", at_seq=1, new_run_id="fork-0")
        with pytest.raises(durable.RunNotFound):
            await app.fork("nope", at_seq=0)
        fresh = await app.fork("src", at_seq=2)
        assert fresh.run_id != "src" and await fresh.result(timeout=20) == [0, 1, 2, 3, 4]


async def test_a_fork_of_a_cancelled_run_asks_its_prompt_again(db: str) -> None:
    app = make_app(db)

    @app.workflow(name="ask")
    async def ask(ctx: durable.Context) -> str:
        await ctx.step(load, "o")
        return await ctx.ask("ok?", key="ok")

    async with app:
        await app.start(ask, run_id="src")
        await eventually(lambda: app.prompts(run_id="src"), what="the prompt")
        await app.cancel("src")
        fork = await app.fork("src", at_seq=2, new_run_id="again")
        await eventually(lambda: app.prompts(run_id="again"), what="the fork's prompt")
        await app.answer("again", "ok", "yes")
        assert await fork.result(timeout=20) == "yes"
    assert calls == {"load": 1}


# --- pause and resume ---------------------------------------------------------------------------


async def test_pause_stops_a_run_at_its_next_call_after_recording_the_step_in_flight(db: str) -> None:
    app = make_app(db)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        calls["slow"] += 1
        started.set()
        await release.wait()
        return "slow"

    @app.workflow(name="wf")
    async def wf(ctx: durable.Context) -> list[str]:
        return [await ctx.step(slow), await ctx.step(ship, "x")]

    async with app:
        handle = await app.start(wf, run_id="r")
        await started.wait()
        await app.pause("r")
        release.set()
        await eventually(lambda: _is(app, "r", "paused"), what="the run to be paused")
        await asyncio.sleep(0.3)  # several worker passes: nobody takes a paused run
        assert await app.status("r") == "paused" and calls == {"slow": 1}
        assert [(seq, kind, status) for seq, kind, _, status in records(db, "r")] == [(0, "step", "completed")]
        await app.resume("r")
        assert await handle.result(timeout=20) == ["slow", "shipped after x"]
    assert calls == {"slow": 1, "ship": 1}


async def test_a_paused_run_keeps_answers_and_timers_for_when_it_is_resumed(db: str) -> None:
    clock = [1_000_000.0]
    app = make_app(db, clock=lambda: clock[0])

    @app.workflow(name="wf")
    async def wf(ctx: durable.Context) -> str:
        answer = await ctx.ask("go?", key="go")
        await ctx.sleep(3600)
        return await ctx.step(ship, answer)

    async with app:
        handle = await app.start(wf, run_id="r")
        await eventually(lambda: _is(app, "r", "waiting"), what="the prompt")
        await app.pause("r")
        assert await app.status("r") == "paused"
        await app.answer("r", "go", "yes")  # recorded, and kept for the run
        await asyncio.sleep(0.2)
        assert await app.status("r") == "paused" and calls == {}
        await app.resume("r")
        await eventually(lambda: _is(app, "r", "sleeping"), what="the timer")
        await app.pause("r")
        clock[0] += 7200  # the timer falls due while paused: it keeps its time, and nothing fires
        await asyncio.sleep(0.3)
        assert await app.status("r") == "paused" and calls == {}
        await app.resume("r")  # due already: it fires at once
        assert await handle.result(timeout=20) == "shipped after yes"


async def test_pause_and_resume_from_another_process(db: str) -> None:
    app = make_app(db)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "slow"

    @app.workflow(name="wf")
    async def wf(ctx: durable.Context) -> list[str]:
        return [await ctx.step(slow), await ctx.step(ship, "x")]

    async with app:
        handle = await app.start(wf, run_id="r")
        await started.wait()
        async with durable.App(db) as operator:
            await operator.pause("r")
            # The owner learns of it at its worker's next look at the store (a commit elsewhere wakes it).
            await eventually(lambda: _told_to_pause(app, "r"), what="the owner to see the pause")
            release.set()
            await eventually(lambda: _is(app, "r", "paused"), what="the owner to unload the paused run")
            assert calls == {}
            await operator.resume("r")
        assert await handle.result(timeout=20) == ["slow", "shipped after x"]


async def _told_to_pause(app: durable.App, run_id: str) -> bool:
    execution = app.engine.executing(run_id)
    return execution is not None and execution.stop_reason == "paused"


async def test_pause_and_resume_refuse_what_they_cannot_do(db: str) -> None:
    broken["charge"] = False
    app = checkout_app(db)
    async with app:
        await app.run("checkout", "o", run_id="done")
        with pytest.raises(durable.RunAlreadyFinished):
            await app.pause("done")
        with pytest.raises(durable.WrongRunStatus, match="only paused runs can be resumed"):
            await app.resume("done")
        with pytest.raises(durable.RunNotFound):
            await app.pause("nope")


# --- prune --------------------------------------------------------------------------------------


async def test_prune_deletes_old_ended_runs_and_nothing_unfinished(db: str) -> None:
    clock = [1_000_000.0]
    app = make_app(db, clock=lambda: clock[0])

    @app.workflow(name="wf")
    async def wf(ctx: durable.Context, i: int) -> int:
        await ctx.step(load, str(i))
        if i % 3 == 0:
            await ctx.ask("go?", key="go")
        if i % 3 == 1:
            raise ValueError("bad")
        return i

    async with app:
        for i in range(30):
            handle = await app.start(wf, i, run_id=f"old-{i}")
            if i % 3 == 2:
                await handle.result(timeout=20)
            elif i % 3 == 1:
                with pytest.raises(ValueError):
                    await handle.result(timeout=20)
        await eventually(lambda: _count_prompts(app, 10), what="ten waiting runs")
        clock[0] += 40 * 86400
        await app.run(wf, 2, run_id="recent")
        assert await app.prune(older_than=dt.timedelta(days=30), status=("completed",)) == 10
        assert await app.prune(older_than=30 * 86400) == 10  # the failed ones
        assert await app.prune(older_than=30 * 86400) == 0
        left = {run.run_id for run in await app.list_runs(limit=100)}
        with pytest.raises(ValueError, match="never deleted"):
            await app.prune(older_than=0, status=("waiting",))
    assert left == {f"old-{i}" for i in range(0, 30, 3)} | {"recent"}
    assert records(db, "old-2") == [] and stored_run(db, "old-2") is None
    assert len(records(db, "old-3")) == 2


async def _count_prompts(app: durable.App, n: int) -> bool:
    return len(await app.prompts()) == n


async def test_prune_gives_the_space_back_to_the_file_system(db_file: str) -> None:
    app = make_app(db_file)
    blob = "x" * 2000

    def big(i: int) -> str:
        return blob + str(i)

    @app.workflow(name="wf")
    async def wf(ctx: durable.Context) -> int:
        for i in range(20):
            await ctx.step(big, i)
        return 0

    async with app:
        for first in range(0, 200, 50):
            await asyncio.gather(*(app.run(wf, run_id=f"r{i}") for i in range(first, first + 50)))
        await app.store.flush()
        size = _size(db_file)
        assert await app.prune(older_than=0) == 200
    assert _size(db_file) < size / 4, (size, _size(db_file))


def _size(path: str) -> int:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return os.path.getsize(path)


async def test_retry_keeps_a_failure_the_code_handled_before_it_failed(db: str) -> None:
    app = make_app(db)
    bug = {"on": True}

    def optional() -> str:
        calls["optional"] += 1
        raise LookupError("no coupon")

    def fallback() -> str:
        calls["fallback"] += 1
        return "no discount"

    @app.workflow(name="wf")
    async def wf(ctx: durable.Context) -> str:
        try:
            return await ctx.step(optional)
        except LookupError:
            got = await ctx.step(fallback)
            if bug["on"]:
                raise RuntimeError("a bug in the handler")  # inside the except: its context is the step's error
            return got

    async with app:
        with pytest.raises(RuntimeError):
            await app.run(wf, run_id="r")
        bug["on"] = False
        assert await (await app.retry("r")).result(timeout=20) == "no discount"
        run = await app.get_run("r")
    assert calls == {"optional": 1, "fallback": 1}  # the handled failure and its fallback replayed
    assert [r.kind for r in run.set_aside] == ["run"]


async def test_a_retry_wakes_a_worker_elsewhere_without_waiting_for_its_poll(db: str) -> None:
    app = checkout_app(db, poll_interval=60)  # it must be woken by the store's change signal
    async with app:
        with pytest.raises(ConnectionError):
            await app.run("checkout", "o-1", run_id="r")
        broken["charge"] = False
        async with durable.App(db) as client:
            await client.retry("r")
        await eventually(lambda: _is(app, "r", "completed"), timeout=10, what="the retried run")


async def test_resume_after_an_answer_while_paused_does_not_wait_for_the_old_deadline(db: str) -> None:
    clock = [1_000_000.0]
    app = make_app(db, clock=lambda: clock[0])

    @app.workflow(name="wf")
    async def wf(ctx: durable.Context) -> str:
        return await ctx.ask("ok?", key="ok", timeout=86400, default="nobody")

    async with app:
        handle = await app.start("wf", run_id="r")
        await eventually(lambda: _is(app, "r", "waiting"), what="the prompt")
        await app.pause("r")
        await app.answer("r", "ok", "alice")
        await app.resume("r")
        assert await handle.result(timeout=10) == "alice"  # at once, not a day later
