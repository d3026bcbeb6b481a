"""durable.testing (the pytest plugin: durable_clock, stub, answering, assert_replays), replay_every_step,
and prompt timeouts, which the virtual clock fires without real time passing. Both stores."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

import durable
from durable.testing import SKIP, VirtualClock, answering, assert_replays, stub
from helpers import eventually, make_app, records

calls: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


async def fetch_rate(currency: str) -> float:
    calls["fetch_rate"] += 1
    raise AssertionError("a test must not reach the network")


def book(amount: float) -> str:
    calls["book"] += 1
    return f"booked {amount:.2f}"


async def _status(app: durable.App, run_id: str, status: str) -> bool:
    return await app.status(run_id) == status


# --- the virtual clock ----------------------------------------------------------------------------


async def test_a_day_long_sleep_completes_when_the_clock_is_advanced(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)

    @app.workflow
    async def nightly(ctx: durable.Context) -> str:
        await ctx.sleep(86400)
        return ctx.now().isoformat()

    async with app:
        handle = await app.start(nightly, run_id="r")
        await eventually(lambda: _status(app, "r", "sleeping"), what="the run to sleep")
        await durable_clock.advance(3600)
        assert await app.status("r") == "sleeping"  # an hour is not a day
        await durable_clock.advance(86400 - 3600)
        assert await handle.result(timeout=10) == "2026-01-02T00:00:00+00:00"


async def test_even_a_short_sleep_waits_for_the_virtual_clock(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)

    @app.workflow
    async def brief(ctx: durable.Context) -> int:
        await ctx.sleep(1)
        return 1

    async with app:
        handle = await app.start(brief, run_id="r")
        await eventually(lambda: _status(app, "r", "sleeping"), what="the run to sleep")
        await asyncio.sleep(1.2)  # real time passes; the run's clock does not
        assert await app.status("r") == "sleeping"
        await durable_clock.advance(1)
        assert await handle.result(timeout=10) == 1


async def test_a_retry_backoff_waits_for_the_virtual_clock(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)

    @durable.step(retries=1, backoff_seconds=600)
    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ConnectionError("down")
        return "up"

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        return await ctx.step(flaky)

    async with app:
        handle = await app.start(wf, run_id="r")
        await eventually(lambda: _status(app, "r", "sleeping"), what="the backoff")
        await durable_clock.advance(900)  # 600 s ± 50 %
        assert await handle.result(timeout=10) == "up"
    assert calls["flaky"] == 2


# --- prompt timeouts ------------------------------------------------------------------------------


async def test_an_unanswered_prompt_expires_to_its_default(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)

    @app.workflow
    async def wf(ctx: durable.Context) -> bool:
        return await ctx.ask("ship it?", type=bool, key="ship", timeout=2 * 86400, default=False)

    async with app:
        handle = await app.start(wf, run_id="r")
        [prompt] = await eventually(lambda: app.prompts(), what="the prompt")
        assert prompt.expires_at.isoformat() == "2026-01-03T00:00:00+00:00"
        await durable_clock.advance(86400)
        assert await app.status("r") == "waiting"
        await durable_clock.advance(86400)
        assert await handle.result(timeout=10) is False
        assert await app.prompts() == []
        with pytest.raises(durable.PromptExpired, match="expired: its timeout passed with no answer"):
            await app.answer("r", "ship", True)
        assert await app.run(wf, run_id="r") is False  # replays
    assert records(db, "r") == [(0, "ask", "ship", "expired")]


async def test_an_expired_prompt_without_a_default_raises_in_the_workflow(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        try:
            return await ctx.ask("ok?", key="ok", timeout=60)
        except durable.PromptExpired as exc:
            return f"gave up on {exc.key}"

    async with app:
        handle = await app.start(wf, run_id="r")
        await eventually(lambda: app.prompts(), what="the prompt")
        await durable_clock.advance(60)
        assert await handle.result(timeout=10) == "gave up on ok"


async def test_a_prompt_past_its_deadline_takes_no_answer_before_the_worker_closes_it(db: str) -> None:
    clock = [1_000_000.0]
    app = make_app(db, clock=lambda: clock[0])

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        return await ctx.ask("ok?", key="ok", timeout=60, default="late")

    async with app:
        handle = await app.start(wf, run_id="r")
        await eventually(lambda: app.prompts(), what="the prompt")
        async with durable.App(db, clock=lambda: clock[0]) as other:  # answers from another process
            clock[0] += 61
            assert await other.prompts() == []
            with pytest.raises(durable.PromptExpired):
                await other.answer("r", "ok", "on time?")
        assert await handle.result(timeout=10) == "late"


async def test_an_answer_before_the_deadline_wins(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        return await ctx.ask("ok?", key="ok", timeout=60, default="nobody")

    async with app:
        handle = await app.start(wf, run_id="r")
        await eventually(lambda: app.prompts(), what="the prompt")
        await durable_clock.advance(59)
        await app.answer("r", "ok", "alice")
        assert await handle.result(timeout=10) == "alice"
        await durable_clock.advance(10)
        assert await app.run(wf, run_id="r") == "alice"


async def test_a_prompt_deadline_fires_for_a_worker_started_later(db: str) -> None:
    clock = [1_000_000.0]

    def build() -> durable.App:
        app = make_app(db, clock=lambda: clock[0])

        @app.workflow(name="wf")
        async def wf(ctx: durable.Context) -> str:
            return await ctx.ask("ok?", key="ok", timeout=3600, default="timed out")

        return app

    async with build() as first:
        await first.start("wf", run_id="r")
        await eventually(lambda: first.prompts(), what="the prompt")
    clock[0] += 7200  # nobody ran while the deadline passed
    async with build() as later:
        await eventually(lambda: _status(later, "r", "completed"), what="the deadline to fire after the restart")
        assert await later.run("wf", run_id="r") == "timed out"


# --- stub -----------------------------------------------------------------------------------------


async def test_stub_records_its_outcome_instead_of_calling_the_step(db: str) -> None:
    app = make_app(db)

    @app.workflow
    async def convert(ctx: durable.Context, amount: float) -> str:
        try:
            rate = await ctx.step(fetch_rate, "EUR")
        except LookupError:
            return "no rate"
        return await ctx.step(book, amount * rate)

    async with app:
        with stub(fetch_rate, returns=1.25):
            assert await app.run(convert, 10.0, run_id="a") == "booked 12.50"
        with stub(fetch_rate, raises=LookupError("no EUR today")):
            assert await app.run(convert, 10.0, run_id="b") == "no rate"
        assert await app.run(convert, 10.0, run_id="a") == "booked 12.50"  # the stub's record replays
        with pytest.raises(AssertionError, match="must not reach the network"):
            await app.run(convert, 1.0, run_id="c")  # outside the block: the real step
    assert calls == {"book": 1, "fetch_rate": 1}
    assert records(db, "b")[0][1:] == ("step", "fetch_rate", "failed")


# --- replay_every_step ----------------------------------------------------------------------------


async def test_replay_every_step_catches_a_key_made_from_chance_in_the_first_run(db: str) -> None:
    app = make_app(db, replay_every_step=True)

    @app.workflow
    async def careless(ctx: durable.Context) -> str:
        await ctx.step(book, 1.0)
        return await ctx.ask("ok?", key=f"ok-{uuid.uuid4().hex[:6]}")  # a new key at every replay

    async with app:
        with pytest.raises(durable.NondeterminismError, match="recorded ask 'ok-"):
            await (await app.start(careless, run_id="r")).result(timeout=10)
        assert await app.status("r") == "blocked"


async def test_replay_every_step_runs_each_step_once_and_gets_the_same_result(db: str) -> None:
    app = make_app(db, replay_every_step=True)

    @app.workflow
    async def careful(ctx: durable.Context) -> list[str]:
        first = await ctx.step(book, 1.0)
        both = await asyncio.gather(ctx.step(book, 2.0), ctx.step(book, 3.0))
        at = ctx.now()
        await ctx.sleep(0.01)
        return [first, *both, at.tzname()]

    async with app:
        assert await app.run(careful, run_id="r") == ["booked 1.00", "booked 2.00", "booked 3.00", "UTC"]
    assert calls == {"book": 3}


# --- answering ------------------------------------------------------------------------------------


async def test_answering_by_key_and_by_function(db: str) -> None:
    app = make_app(db)

    @app.workflow
    async def interview(ctx: durable.Context) -> tuple[str, int, bool]:
        name = await ctx.ask("name?", key="name")
        age = await ctx.ask(f"age of {name}?", type=int, key="age")
        ok = await ctx.ask("consent?", type=bool, key="consent")
        return name, age, ok

    async with app:
        async with answering(app, {"name": "ada", "age": 36, "consent": True}) as answered:
            assert await app.run(interview, run_id="a") == ("ada", 36, True)
        assert [p.key for p in answered.answered] == ["name", "age", "consent"]

        def reply(prompt: durable.Prompt) -> object:
            return {"integer": 7, "boolean": False}.get(prompt.schema.get("type"), SKIP)

        handle = await app.start(interview, run_id="b")
        async with answering(app, reply, run_id="b"):
            await eventually(lambda: app.prompts(run_id="b"), what="the unanswered name")
            await app.answer("b", "name", "bob")  # the function skipped it
            assert await handle.result(timeout=10) == ("bob", 7, False)


# --- assert_replays -------------------------------------------------------------------------------


async def test_assert_replays_passes_for_compatible_code_and_names_each_run_that_would_block(db: str) -> None:
    async def v1(ctx: durable.Context) -> str:
        await ctx.step(book, 1.0)
        return await ctx.ask("ok?", key="ok")

    async def renamed(ctx: durable.Context) -> str:
        return await ctx.ask("ok?", key="approve")

    app = make_app(db)
    app.workflow(name="wf")(v1)
    async with app:
        await app.start("wf", run_id="r")
        await eventually(lambda: app.prompts(), what="the prompt")
    fine = make_app(db)
    fine.workflow(name="wf")(v1)
    await assert_replays(fine, db)
    broken = make_app(db)
    broken.workflow(name="wf")(renamed)
    with pytest.raises(AssertionError, match=r"1 of 1 runs .* would not replay:\n  r \(wf\): blocked: .*ask 'approve'"):
        await assert_replays(broken, db)
    assert calls == {"book": 1}
