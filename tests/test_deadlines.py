"""Workflow deadlines: @app.workflow(timeout=) and start(..., timeout=) stop a run whatever it is doing (both stores)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import durable
from durable.testing import VirtualClock
from helpers import eventually, make_app, records

calls: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


async def _status(app: durable.App, run_id: str, status: str) -> bool:
    return await app.status(run_id) == status


async def test_a_run_past_its_deadline_is_stopped_in_the_middle_of_a_step(db: str) -> None:
    app = make_app(db)
    never = asyncio.Event()

    async def slow() -> str:
        calls["slow started"] += 1
        await never.wait()
        calls["slow finished"] += 1
        return "slow"

    def quick() -> str:
        calls["quick"] += 1
        return "quick"

    @app.workflow(timeout=0.3)
    async def wf(ctx: durable.Context) -> str:
        await ctx.step(quick)
        return await ctx.step(slow)

    async with app:
        with pytest.raises(durable.RunTimedOut, match="passed its deadline .* and was stopped where it was"):
            await app.run(wf, run_id="r")
        run = await app.get_run("r")
        assert run.status == "failed" and run.error is not None and run.error["type"].endswith("RunTimedOut")
        with pytest.raises(durable.RunTimedOut):
            await app.run(wf, run_id="r")  # it stays timed out: nothing runs again
    assert calls == {"quick": 1, "slow started": 1}
    assert [r[2].rsplit(".", 1)[-1] for r in records(db, "r")] == ["quick"]  # the step it was in is not recorded


async def test_a_deadline_stops_a_sleeping_or_waiting_run(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)

    @app.workflow(timeout=86400)
    async def wf(ctx: durable.Context, wait: str) -> str:
        if wait == "sleep":
            await ctx.sleep(7 * 86400)
        else:
            await ctx.ask("ok?", key="ok")
        return "done"

    async with app:
        sleeping = await app.start(wf, "sleep", run_id="sleeping")
        waiting = await app.start(wf, "ask", run_id="waiting", timeout=3600)  # the start's timeout wins
        await eventually(lambda: _status(app, "sleeping", "sleeping"), what="the sleep")
        await eventually(lambda: _status(app, "waiting", "waiting"), what="the prompt")
        await durable_clock.advance(3600)
        with pytest.raises(durable.RunTimedOut):
            await waiting.result(timeout=10)
        assert await app.status("sleeping") == "sleeping"
        assert await app.prompts() == []  # a timed-out run's prompt leaves the inbox
        with pytest.raises(durable.RunAlreadyFinished, match="its prompts take no more answers"):
            await app.answer("waiting", "ok", "late")
        await durable_clock.advance(86400 - 3600)
        with pytest.raises(durable.RunTimedOut):
            await sleeping.result(timeout=10)


async def test_a_deadline_that_passed_while_no_worker_ran_fails_the_run_at_the_next_start(db: str) -> None:
    clock = [1_000_000.0]

    def build() -> durable.App:
        app = make_app(db, clock=lambda: clock[0])

        @app.workflow(name="wf", timeout=600)
        async def wf(ctx: durable.Context) -> str:
            await ctx.step(lambda: calls.update(["step"]))
            return await ctx.ask("ok?", key="ok")

        return app

    async with build() as first:
        await first.start("wf", run_id="r")
        await eventually(lambda: _status(first, "r", "waiting"), what="the prompt")
    clock[0] += 3600
    async with build() as later:
        await eventually(lambda: _status(later, "r", "failed"), what="the deadline, after the restart")
        with pytest.raises(durable.RunTimedOut):
            await later.run("wf", run_id="r")
    assert calls == {"step": 1}


async def test_a_retry_lifts_the_deadline_and_a_pause_does_not(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)

    @app.workflow(timeout=60)
    async def wf(ctx: durable.Context) -> str:
        await ctx.sleep(120)
        return "slept"

    async with app:
        handle = await app.start(wf, run_id="r")
        await eventually(lambda: _status(app, "r", "sleeping"), what="the sleep")
        await app.pause("r")
        await durable_clock.advance(61)
        assert await app.status("r") == "paused"  # held: no worker takes it
        await app.resume("r")
        await durable_clock.advance(0)
        with pytest.raises(durable.RunTimedOut):
            await handle.result(timeout=10)  # its deadline ran on while it was paused
        retried = await app.retry("r")
        await eventually(lambda: _status(app, "r", "sleeping"), what="the sleep again")
        await durable_clock.advance(120)
        assert await retried.result(timeout=10) == "slept"


def test_a_timeout_must_be_positive() -> None:
    app = durable.App("unused.db")
    with pytest.raises(durable.DefinitionError, match="takes seconds > 0"):

        @app.workflow(timeout=0)
        async def wf(ctx: durable.Context) -> None: ...
