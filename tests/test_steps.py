"""Steps: retries, timeouts, recorded failures, values that cannot be stored."""

from __future__ import annotations

import asyncio
import functools
import logging
import time

import pytest

import durable
from helpers import eventually, make_app, records, unloaded


class PaymentDeclined(Exception):
    pass


class NeedsTwoArgs(Exception):
    def __init__(self, code: int, *, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


async def test_retries_count_attempts_and_record_them(app: durable.App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="durable")
    attempts: list[int] = []

    @durable.step(retries=3, backoff_seconds=0.001)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        return await ctx.step(flaky)

    async with app:
        assert await app.run(wf, run_id="r") == "ok"
        (step,) = (await app.get_run("r")).steps
    assert len(attempts) == 3
    assert (step.status, step.attempts, step.name) == ("completed", 3, "test_retries_count_attempts_and_record_them.<locals>.flaky")
    retried = [r.getMessage() for r in caplog.records if "↺" in r.getMessage()]
    assert retried == [
        f"run r ↺ step {step.name} failed (attempt {n} of 4: ConnectionError: try again); next attempt in 0.0s" for n in (1, 2)
    ]


async def test_final_failure_is_recorded_and_reraised_on_rerun_without_executing(db: str) -> None:
    attempts: list[int] = []

    @durable.step(name="charge", retries=2, backoff_seconds=0.001)
    def charge(amount: int) -> str:
        attempts.append(amount)
        raise PaymentDeclined(f"card declined for {amount}")

    def register(app: durable.App) -> None:
        @app.workflow
        async def wf(ctx: durable.Context) -> str:
            return await ctx.step(charge, 42)

    first = make_app(db)
    register(first)
    async with first:
        with pytest.raises(PaymentDeclined, match="card declined for 42") as live:
            await first.run("wf", run_id="r")
        run = await first.get_run("r")
    assert len(attempts) == 3
    assert run.status == "failed"
    assert run.steps[0].status == "failed" and run.steps[0].attempts == 3
    assert run.steps[0].error["type"] == "test_steps:PaymentDeclined"
    assert "card declined for 42" in run.steps[0].error["traceback"]
    assert isinstance(live.value.__cause__, PaymentDeclined)  # the original, for its traceback

    second = make_app(db)
    register(second)
    async with second:
        with pytest.raises(PaymentDeclined, match="card declined for 42"):
            await second.run("wf", run_id="r")
    assert len(attempts) == 3  # the failed run was not executed again


async def test_step_error_caught_by_the_workflow_replays_the_same_way(db: str) -> None:
    calls: list[str] = []
    gate = asyncio.Event()

    def declined() -> None:
        calls.append("declined")
        raise PaymentDeclined("no")

    async def wait_for_gate() -> None:
        await gate.wait()

    def register(app: durable.App) -> None:
        @app.workflow
        async def wf(ctx: durable.Context) -> str:
            try:
                await ctx.step(declined)
            except PaymentDeclined as exc:
                outcome = f"handled {type(exc).__name__}: {exc}"
            await ctx.step(wait_for_gate)
            return outcome

    first = make_app(db)
    register(first)
    async with first:
        await first.start("wf", run_id="r")
        while len(records(db, "r")) < 1:
            await asyncio.sleep(0.01)
    gate.set()
    second = make_app(db)
    register(second)
    async with second:
        assert await second.run("wf", run_id="r") == "handled PaymentDeclined: no"
    assert calls == ["declined"]


async def test_error_type_that_cannot_be_rebuilt_becomes_step_failed(app: durable.App) -> None:
    def odd() -> None:
        raise NeedsTwoArgs(7, detail="odd")

    @app.workflow
    async def wf(ctx: durable.Context) -> None:
        await ctx.step(odd)

    async with app:
        with pytest.raises(durable.StepFailed, match="failed with test_steps.NeedsTwoArgs: 7: odd") as raised:
            await app.run(wf, run_id="r")
    assert raised.value.type_name == "test_steps.NeedsTwoArgs"


async def test_async_step_timeout_counts_as_a_failed_attempt(app: durable.App) -> None:
    attempts: list[int] = []

    @durable.step(timeout=0.05, retries=1, backoff_seconds=0.001)
    async def slow() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            await asyncio.sleep(30)
        return "second attempt in time"

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        return await ctx.step(slow)

    async with app:
        assert await app.run(wf, run_id="r") == "second attempt in time"
        assert (await app.get_run("r")).steps[0].attempts == 2


async def test_sync_step_timeout_abandons_the_thread_attempt(app: durable.App) -> None:
    @durable.step(name="blocking", timeout=0.05)
    def blocking() -> str:
        time.sleep(0.5)
        return "too late"

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        return await ctx.step(blocking)

    async with app:
        with pytest.raises(durable.StepTimeout, match="Step 'blocking' did not finish within 0.05 s") as raised:
            await app.run(wf, run_id="r")
        assert isinstance(raised.value, TimeoutError)
        assert (await app.get_run("r")).steps[0].error["type"] == "durable.errors:StepTimeout"


async def test_result_that_cannot_be_encoded_fails_the_step_and_writes_no_record(app: durable.App) -> None:
    calls: list[int] = []

    @durable.step(name="make_lock", retries=3)
    def make_lock() -> object:
        calls.append(1)
        return asyncio.Lock()

    @app.workflow
    async def wf(ctx: durable.Context) -> None:
        await ctx.step(make_lock)

    async with app:
        with pytest.raises(durable.EncodingError, match=r"the result of step 'make_lock' could not be stored as asyncio.locks.Lock"):
            await app.run(wf, run_id="r")
        run = await app.get_run("r")
    assert calls == [1]  # at once: not retried
    assert run.steps == [] and run.status == "failed"


async def test_result_that_does_not_match_its_annotation_is_refused(app: durable.App) -> None:
    def wrong() -> int:
        return "seven"  # type: ignore[return-value]

    @app.workflow
    async def wf(ctx: durable.Context) -> int:
        return await ctx.step(wrong)

    async with app:
        with pytest.raises(durable.EncodingError, match=r"could not be stored as int: Expected `int`, got `str`"):
            await app.run(wf, run_id="r")
        assert (await app.get_run("r")).steps == []


def test_step_options_are_checked_when_declared() -> None:
    with pytest.raises(durable.DefinitionError, match=r"retries=...\) takes a whole number >= 0, not -1"):
        durable.step(retries=-1)
    with pytest.raises(durable.DefinitionError, match="timeout"):
        durable.step(timeout=0)
    with pytest.raises(durable.DefinitionError, match="name"):
        durable.step(name="")


async def test_methods_and_lambdas_are_steps_too(app: durable.App) -> None:
    class Repo:
        def __init__(self) -> None:
            self.calls = 0

        async def load(self, key: str) -> dict[str, int]:
            self.calls += 1
            return {key: self.calls}

    repo = Repo()

    @app.workflow
    async def wf(ctx: durable.Context) -> list[object]:
        return [await ctx.step(repo.load, "k"), await ctx.step(lambda: 5)]

    async with app:
        assert await app.run(wf, run_id="r") == [{"k": 1}, 5]
        names = [s.name for s in (await app.get_run("r")).steps]
    assert names == ["test_methods_and_lambdas_are_steps_too.<locals>.Repo.load", "test_methods_and_lambdas_are_steps_too.<locals>.wf.<locals>.<lambda>"]


async def test_redecorating_a_step_takes_its_new_options(app: durable.App) -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) % 2:
            raise ConnectionError("odd attempt")
        return "even attempt"

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        return await ctx.step(flaky)

    async with app:
        with pytest.raises(ConnectionError):
            await app.run(wf, run_id="before")
        durable.step(retries=1, backoff_seconds=0)(flaky)
        assert await app.run(wf, run_id="after") == "even attempt"


# --- options on any callable, and a timeout that the step tries to ignore -----------------------------


class Charger:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, amount: int) -> int:
        self.calls += 1
        if self.calls < 3:
            raise ConnectionError("flaky")
        return amount

    async def charge(self, amount: int) -> int:
        return await self(amount)


async def flaky_charge(counter: list[int], amount: int) -> int:
    counter.append(amount)
    if len(counter) < 3:
        raise ConnectionError("flaky")
    return amount


async def test_step_options_hold_on_partials_bound_methods_and_callable_objects(app: durable.App) -> None:
    counter: list[int] = []
    partial = durable.step(retries=2, backoff_seconds=0, name="charge-partial")(functools.partial(flaky_charge, counter))
    charger = durable.step(retries=2, backoff_seconds=0, name="charge-object")(Charger())
    bound = Charger()
    durable.step(retries=2, backoff_seconds=0, name="charge-method")(bound.charge)

    @app.workflow
    async def wf(ctx: durable.Context) -> list[int]:
        return [await ctx.step(partial, 1), await ctx.step(charger, 2), await ctx.step(bound.charge, 3)]

    async with app:
        assert await app.run(wf, run_id="r") == [1, 2, 3]
        steps = (await app.get_run("r")).steps
    assert [(s.name, s.attempts) for s in steps] == [("charge-partial", 3), ("charge-object", 3), ("charge-method", 3)]


def test_a_callable_that_takes_no_options_is_refused_when_decorated() -> None:
    with pytest.raises(durable.DefinitionError, match="cannot set options on .* takes no attributes"):
        durable.step(retries=1)(len)


async def test_a_step_that_swallows_its_cancellation_at_the_timeout_still_timed_out(app: durable.App) -> None:
    @durable.step(timeout=0.05)
    async def stubborn() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "finished anyway"  # ignores the cancellation
        return "finished"

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        try:
            return await ctx.step(stubborn)
        except durable.StepTimeout as exc:
            return f"timed out: {exc.step.rsplit('.', 1)[-1]}"

    async with app:
        assert await app.run(wf, run_id="r") == "timed out: stubborn"
        (record,) = (await app.get_run("r")).steps
    assert record.status == "failed" and record.error is not None and "StepTimeout" in record.error["type"]


class CardDeclined(Exception):
    pass


async def test_errors_not_to_retry_fail_the_step_at_once(app: durable.App) -> None:
    tries: list[str] = []

    @durable.step(retries=5, backoff_seconds=0, no_retry_on=CardDeclined)
    def charge() -> None:
        tries.append("charge")
        raise CardDeclined("declined")

    @durable.step(retries=5, backoff_seconds=0, retry_on=ConnectionError)
    def parse() -> None:
        tries.append("parse")
        raise ValueError("bad input")

    @app.workflow
    async def wf(ctx: durable.Context) -> list[str]:
        outcomes = []
        for fn in (charge, parse):
            try:
                await ctx.step(fn)
            except Exception as exc:
                outcomes.append(type(exc).__name__)
        return outcomes

    async with app:
        assert await app.run(wf, run_id="r") == ["CardDeclined", "ValueError"]
        assert [(s.status, s.attempts) for s in (await app.get_run("r")).steps] == [("failed", 1), ("failed", 1)]
    assert tries == ["charge", "parse"]


def test_retry_options_are_checked_when_declared() -> None:
    with pytest.raises(durable.DefinitionError, match=r"retry_on=...\) takes an exception class or a tuple of them"):
        durable.step(retry_on="ConnectionError")  # type: ignore[arg-type]
    with pytest.raises(durable.DefinitionError, match="no_retry_on"):
        durable.step(no_retry_on=(ValueError, 3))  # type: ignore[arg-type]


async def test_a_long_backoff_unloads_the_run_and_a_timer_resumes_it(db: str) -> None:
    now = [1_000_000.0]
    app = make_app(db, clock=lambda: now[0])
    tries: list[float] = []

    @durable.step(retries=1, backoff_seconds=60)  # 30 to 90 s with jitter: far longer than a wait held in memory
    async def flaky() -> str:
        tries.append(now[0])
        if len(tries) == 1:
            raise ConnectionError("not yet")
        return "ok"

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        return await ctx.step(flaky)

    async with app:
        handle = await app.start(wf, run_id="r")
        await eventually(lambda: _status(app, "r", "sleeping"), what="the run to unload for its backoff")
        await unloaded(app, "r")  # no coroutine held while it waits
        (record,) = (await app.get_run("r")).steps
        assert (record.status, record.attempts, record.error["type"]) == ("retrying", 1, "builtins:ConnectionError")
        now[0] += 91  # past the longest backoff (60 s + 50 % jitter)
        assert await handle.result(timeout=10) == "ok"
        (record,) = (await app.get_run("r")).steps
    assert (record.status, record.attempts, record.value) == ("completed", 2, "ok")
    assert len(tries) == 2 and tries[1] - tries[0] >= 30


async def _status(app: durable.App, run_id: str, status: str) -> bool:
    return (await app.status(run_id)) == status
