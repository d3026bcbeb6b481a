"""The App's surface: registration, starting runs, bad input, listing, timers."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re

import jsonschema
import pytest

import durable
from helpers import eventually, make_app, unloaded


def test_workflow_must_be_async(app: durable.App) -> None:
    with pytest.raises(durable.DefinitionError, match=r"needs an `async def` function, and '.*plain' is not one"):

        @app.workflow
        def plain(ctx: durable.Context) -> None:
            pass


def test_workflow_names_are_unique(app: durable.App) -> None:
    @app.workflow
    async def checkout(ctx: durable.Context) -> None:
        pass

    with pytest.raises(durable.DefinitionError, match="named 'checkout' is already registered"):

        @app.workflow(name="checkout")
        async def other(ctx: durable.Context) -> None:
            pass


def test_workflow_takes_the_context_first(app: durable.App) -> None:
    with pytest.raises(durable.DefinitionError, match="first positional parameter"):

        @app.workflow
        async def nothing() -> None:
            pass


async def test_unknown_workflow_and_run(app: durable.App) -> None:
    async def stray(ctx: durable.Context) -> None:
        pass

    async with app:
        with pytest.raises(durable.WorkflowNotFound, match="No workflow named 'stray' is registered on this App"):
            await app.run(stray)
        with pytest.raises(durable.WorkflowNotFound, match="'nope'"):
            await app.start("nope")
        with pytest.raises(durable.RunNotFound, match="No run 'ghost' in this journal"):
            await app.get_run("ghost")
        with pytest.raises(durable.RunNotFound):
            await durable.RunHandle(app, "ghost").status()


async def test_bad_arguments_create_no_run(app: durable.App) -> None:
    @app.workflow
    async def greet(ctx: durable.Context, name: str, when: dt.date) -> str:
        return f"{name}@{when}"

    async with app:
        with pytest.raises(durable.InvalidArguments, match="missing a required argument: 'when'"):
            await app.start(greet, "ada")
        with pytest.raises(durable.InvalidArguments, match=r"Expected `str`, got `int`"):
            await app.start(greet, 5, dt.date(2026, 1, 1))
        with pytest.raises(durable.EncodingError, match="the arguments of workflow 'greet' could not be stored"):
            await app.start(greet, "ada", asyncio.Lock())
        assert await app.list_runs() == []
        assert await app.run(greet, "ada", when=dt.date(2026, 1, 1)) == "ada@2026-01-01"


async def test_arguments_reach_the_workflow_decoded_by_their_annotations_however_they_were_passed(
    app: durable.App,
) -> None:
    seen = []

    @app.workflow
    async def positional(ctx: durable.Context, when: dt.date, args: int, result: str = "r") -> str:
        seen.append((when, args, result))  # parameters named like what the labels of a workflow are about
        return "ok"

    @app.workflow
    async def varied(ctx: durable.Context, first: dt.date, *more: dt.date, label: str, **extra: dt.date) -> str:
        seen.append((first, more, label, extra))
        return "ok"

    day, other = dt.date(2026, 1, 2), dt.date(2026, 3, 4)
    async with app:
        await app.run(positional, day, 7, "given", run_id="all-positional")  # bound without inspect
        await app.run(positional, day, 7, run_id="default-left")
        await app.run(positional, day, args=7, result="kw", run_id="by-keyword")
        await app.run(varied, day, other, other, label="x", late=other, run_id="varied")
        with pytest.raises(durable.InvalidArguments, match="Expected `int`, got `str`"):
            await app.start(positional, day, "seven", "given")
    assert seen == [
        (day, 7, "given"), (day, 7, "r"), (day, 7, "kw"), (day, (other, other), "x", {"late": other}),
    ]  # fmt: skip
    assert all(type(v) is dt.date for v in (seen[0][0], seen[3][0], *seen[3][1], seen[3][3]["late"]))


async def test_run_id_of_another_workflow_is_refused(app: durable.App) -> None:
    @app.workflow
    async def a(ctx: durable.Context) -> str:
        return "a"

    @app.workflow
    async def b(ctx: durable.Context) -> str:
        return "b"

    async with app:
        await app.run(a, run_id="x")
        with pytest.raises(durable.RunIdInUse, match="Run 'x' belongs to workflow 'a', not 'b'"):
            await app.run(b, run_id="x")


async def test_app_must_be_open(app: durable.App) -> None:
    with pytest.raises(durable.AppNotOpen, match=r"is not open. Use it inside `async with app:`"):
        await app.list_runs()


async def test_list_runs_newest_first_with_filters(db: str) -> None:
    ticks = iter(range(1_000, 10_000))
    app = make_app(db, clock=lambda: float(next(ticks)))

    @app.workflow
    async def ok(ctx: durable.Context, n: int) -> int:
        return n

    @app.workflow
    async def bad(ctx: durable.Context) -> None:
        raise ValueError("broken")

    async with app:
        for n in range(3):
            await app.run(ok, n, run_id=f"ok-{n}")
        with pytest.raises(ValueError, match="broken"):
            await app.run(bad, run_id="bad-0")
        assert [r.run_id for r in await app.list_runs()] == ["bad-0", "ok-2", "ok-1", "ok-0"]
        assert [r.run_id for r in await app.list_runs(status="failed")] == ["bad-0"]
        assert [r.run_id for r in await app.list_runs(workflow="ok", limit=2)] == ["ok-2", "ok-1"]
        failed = await app.get_run("bad-0")
        assert failed.error["type"] == "builtins:ValueError" and failed.error["message"] == "broken"
        assert (await app.get_run("ok-1")).args == [1] and (await app.get_run("ok-1")).result == 1
        with pytest.raises(ValueError, match="status must be one of"):
            await app.list_runs(status="done")


async def test_long_sleep_unloads_the_run_and_a_timer_resumes_it(db: str) -> None:
    now = [1_000_000.0]
    app = make_app(db, clock=lambda: now[0])
    after: list[float] = []

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        await ctx.sleep(dt.timedelta(days=3))
        after.append(now[0])
        return "awake"

    async with app:
        handle = await app.start(wf, run_id="r")
        await eventually(lambda: _status(handle, "sleeping"), what="the run to sleep")
        run = await app.get_run("r")
        assert run.wake_at == dt.datetime.fromtimestamp(1_000_000 + 3 * 86400, dt.timezone.utc)
        await unloaded(app, "r")  # no coroutine held
        now[0] += 3 * 86400
        assert await handle.result(timeout=10) == "awake"
    assert after == [1_000_000.0 + 3 * 86400]


async def test_zero_and_negative_sleeps_return_at_once(app: durable.App) -> None:
    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        await ctx.sleep(0)
        await ctx.sleep(-5)
        return "done"

    async with app:
        assert await app.run(wf, run_id="r") == "done"
        assert [s.kind for s in (await app.get_run("r")).steps] == ["sleep", "sleep"]


async def _status(handle: durable.RunHandle, status: str) -> bool:
    return await handle.status() == status


async def test_workflow_failure_is_reraised_without_executing(db: str) -> None:
    calls: list[int] = []

    def register(app: durable.App) -> None:
        @app.workflow
        async def wf(ctx: durable.Context) -> None:
            calls.append(1)
            raise KeyError("missing")

    for _ in range(2):
        app = make_app(db)
        register(app)
        async with app:
            with pytest.raises(KeyError, match="missing"):
                await app.run("wf", run_id="r")
    assert calls == [1]


async def test_many_concurrent_runs_all_complete(app: durable.App) -> None:
    async def double(x: int) -> int:
        return 2 * x

    @app.workflow
    async def wf(ctx: durable.Context, x: int) -> int:
        total = 0
        for i in range(5):
            total += await ctx.step(double, x + i)
        return total

    async with app:
        handles = [await app.start(wf, x, run_id=f"r{x}") for x in range(200)]
        results = await asyncio.gather(*(h.result(timeout=60) for h in handles))
    assert results == [sum(2 * (x + i) for i in range(5)) for x in range(200)]


async def test_log_lines_tell_a_person_what_happened(db: str, caplog: pytest.LogCaptureFixture) -> None:
    now = [1_000_000.0]
    app = make_app(db, clock=lambda: now[0])

    @app.workflow
    async def expense(ctx: durable.Context) -> str:
        ok = await ctx.ask("Approve?", type=bool, key="approve")
        await ctx.sleep(3600)
        if not ok:
            raise ValueError("refused")
        return "paid"

    caplog.set_level("INFO", logger="durable")
    async with app:
        handle = await app.start(expense, run_id="e1")
        await eventually(lambda: app.prompts("e1"), what="the prompt")
        await app.answer("e1", "approve", False)
        await eventually(lambda: _status(handle, "sleeping"), what="the run to sleep")
        now[0] += 3600
        with pytest.raises(ValueError, match="refused"):
            await handle.result(timeout=10)
        never = await app.start(expense, run_id="e2")
        await eventually(lambda: app.prompts("e2"), what="the second prompt")
        await app.answer("e2", "approve", True)
        await eventually(lambda: _status(never, "sleeping"), what="e2 to sleep")
    lines = [r.getMessage() for r in caplog.records]
    expected = [
        "run e1 ▶ expense started",
        "run e1 ⏸ expense waiting for an answer",
        "run e1 ✎ prompt approve answered",
        "run e1 ↻ expense resumed: prompt answered (1 record to replay)",
        "run e1 ⏸ expense sleeping until 1970-01-12 14:46:40 UTC",
        "run e1 ↻ expense resumed: timer due (2 records to replay)",
    ]
    assert lines[: len(expected)] == expected
    assert re.fullmatch(r"run e1 ✖ expense failed in \d+\.\d{3}s: ValueError: refused", lines[len(expected)])
    assert "run e2 ▶ expense started" in lines


async def test_leaving_the_app_releases_a_run_in_flight(db: str, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(db, shutdown_grace_seconds=0.05)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    @app.workflow
    async def stuck(ctx: durable.Context) -> None:
        await ctx.step(forever)

    caplog.set_level("INFO", logger="durable")
    async with app:
        await app.start(stuck, run_id="s1")
        await started.wait()
    assert "run s1 ⇠ stuck released for another worker (shutdown)" in [r.getMessage() for r in caplog.records]
    async with make_app(db) as inbox:
        assert (await inbox.get_run("s1")).status == "pending"  # any worker with the workflow takes it at once


async def test_handles_say_whether_they_created_the_run(app: durable.App) -> None:
    @app.workflow
    async def wf(ctx: durable.Context) -> int:
        return 1

    async with app:
        first = await app.start(wf, run_id="r")
        again = await app.start(wf, run_id="r")
        submitted = await app.submit("wf", run_id="s")
        assert (first.created, again.created, submitted.created) == (True, False, True)
        assert await app.status("r") in ("running", "completed")


@dataclasses.dataclass
class Item:
    sku: str
    qty: int


def test_argument_schema_keeps_definitions_at_the_top(app: durable.App) -> None:
    @app.workflow
    async def order(ctx: durable.Context, items: list[Item], note: str = "") -> None:
        pass

    schema = app.workflows["order"].args_schema()
    assert schema["required"] == ["items"]
    jsonschema.validate({"items": [{"sku": "a", "qty": 1}]}, schema)  # the $ref resolves
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"items": [{"sku": "a", "qty": "one"}]}, schema)


async def test_a_cancelled_start_still_runs_the_run_it_created(app: durable.App) -> None:
    # The write that creates the run is queued before the caller gives up, and
    # it claims the run for this App: the run must execute, not stay claimed.
    done: list[str] = []

    async def note(x: str) -> str:
        done.append(x)
        return x

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        return await ctx.step(note, "ran")

    async with app:
        starting = asyncio.create_task(app.start(wf, run_id="c1"))
        while not app.engine.busy("c1"):
            await asyncio.sleep(0)
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        assert await app.run(wf, run_id="c1") == "ran"
    assert done == ["ran"]


async def test_a_run_that_cannot_be_resumed_after_its_claim_is_released(
    app: durable.App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        return "done"

    async with app:
        await app.submit(wf, run_id="r1")  # the worker claims it, then fails to load it, once
        load = app.store.load_replay

        async def failing_once(run_id: str) -> list:  # type: ignore[type-arg]
            monkeypatch.setattr(app.store, "load_replay", load)
            raise OSError("disk read failed")

        monkeypatch.setattr(app.store, "load_replay", failing_once)
        app.engine.kick()
        assert await app.run(wf, run_id="r1") == "done"  # released, then taken again
    assert "run r1: not resumed (OSError: disk read failed); released for any worker" in caplog.text


async def test_start_is_refused_while_the_app_closes(app: durable.App) -> None:
    gate = asyncio.Event()

    async def wait_for_gate() -> None:
        await gate.wait()

    @app.workflow
    async def slow(ctx: durable.Context) -> None:
        await ctx.step(wait_for_gate)

    await app.open()
    await app.start(slow, run_id="s1")
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(app.close())
    await asyncio.sleep(0.05)  # close() is letting s1's step finish (grace period)
    assert not closing.done()
    with pytest.raises(durable.AppNotOpen):
        await app.start(slow, run_id="s2")
    gate.set()
    await closing


async def test_concurrent_starts_of_one_new_run_id_both_get_the_run(app: durable.App) -> None:
    executed: list[str] = []

    async def work(run_id: str) -> str:
        executed.append(run_id)
        return run_id

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        return await ctx.step(work, ctx.run_id)

    async with app:
        for i in range(100):
            first, second = await asyncio.gather(app.start(wf, run_id=f"r{i}"), app.start(wf, run_id=f"r{i}"))
            assert sorted([first.created, second.created]) == [False, True]
            # Neither caller ever sees RunNotFound, whichever asks first.
            assert await asyncio.gather(second.status(), first.result(timeout=10), second.result(timeout=10)) in (
                ["running", f"r{i}", f"r{i}"], ["completed", f"r{i}", f"r{i}"],
            )  # fmt: skip
    assert sorted(executed) == sorted(f"r{i}" for i in range(100))  # each once
