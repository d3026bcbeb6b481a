"""Replay: recorded results come back without executing, with their types; mismatches block."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import decimal
import enum
import uuid

import msgspec
import pydantic
import pytest

import durable
from helpers import eventually, make_app, records


class Size(enum.Enum):
    S = "s"
    L = "l"


@dataclasses.dataclass
class Parcel:
    id: uuid.UUID
    weight: decimal.Decimal
    shipped: dt.date
    at: dt.datetime
    label: bytes
    size: Size
    dims: tuple[int, int]


class Address(pydantic.BaseModel):
    street: str
    verified_at: dt.datetime


class Item(msgspec.Struct):
    sku: str
    qty: int


async def test_completed_run_returns_its_record_without_executing(app: durable.App) -> None:
    calls: list[str] = []

    async def fetch(x: int) -> int:
        calls.append("fetch")
        return x * 2

    @app.workflow
    async def wf(ctx: durable.Context, x: int) -> int:
        return await ctx.step(fetch, x) + 1

    async with app:
        assert await app.run(wf, 20, run_id="r") == 41
        assert await app.run(wf, 20, run_id="r") == 41
    assert calls == ["fetch"]


async def test_values_come_back_with_their_types_live_and_on_replay(db: str) -> None:
    parcel = Parcel(uuid.uuid4(), decimal.Decimal("2.50"), dt.date(2026, 1, 2),
                    dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc), b"\x00\xff", Size.L, (3, 4))  # fmt: skip
    address = Address(street="Main 1", verified_at=dt.datetime(2026, 5, 6, tzinfo=dt.timezone.utc))
    seen: list[tuple[object, ...]] = []
    gate = asyncio.Event()

    def make_parcel() -> Parcel:
        return parcel

    def make_address() -> Address:
        return address

    async def make_items() -> list[Item]:
        return [Item("a", 1)]

    def make_set() -> frozenset[int]:
        return frozenset({1, 2})

    def make_untyped():  # type: ignore[no-untyped-def]
        return {"when": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)}

    async def wait_for_gate() -> None:
        await gate.wait()

    def register(app: durable.App) -> None:
        @app.workflow
        async def wf(ctx: durable.Context) -> str:
            values = (await ctx.step(make_parcel), await ctx.step(make_address), await ctx.step(make_items),
                      await ctx.step(make_set), await ctx.step(make_untyped))  # fmt: skip
            seen.append(values)
            await ctx.step(wait_for_gate)
            return "ok"

    first = make_app(db)
    register(first)
    async with first:
        handle = await first.start("wf", run_id="r")
        while not seen:
            await asyncio.sleep(0.01)
    # the App was closed with the run unfinished: a new App replays it
    second = make_app(db)
    register(second)
    gate.set()
    async with second:
        assert await second.run("wf", run_id="r") == "ok"
    assert handle.run_id == "r"
    live, replayed = seen
    assert live == replayed
    assert [type(v) for v in live] == [type(v) for v in replayed] == [Parcel, Address, list, frozenset, dict]
    assert live[0] == parcel and live[1] == address and live[2] == [Item("a", 1)]
    # without an annotation the value is plain JSON, live as on replay: no type changes after a crash
    assert live[4] == {"when": "2026-01-01T00:00:00Z"}


async def test_gathered_steps_replay_by_call_order(app: durable.App) -> None:
    async def slow(name: str, delay: float) -> str:
        await asyncio.sleep(delay)
        return name

    @app.workflow
    async def wf(ctx: durable.Context) -> list[str]:
        return list(await asyncio.gather(ctx.step(slow, "a", 0.05), ctx.step(slow, "b", 0.0), ctx.step(slow, "c", 0.02)))

    async with app:
        assert await app.run(wf, run_id="r") == ["a", "b", "c"]
        run = await app.get_run("r")
    assert [(r.seq, r.value) for r in run.steps] == [(0, "a"), (1, "b"), (2, "c")]
    # b finished first, yet each record sits at the seq taken when its call was made
    assert run.steps[1].finished_at < run.steps[0].finished_at


async def test_now_is_recorded_and_identical_on_replay(db: str) -> None:
    times: list[dt.datetime] = []
    gate = asyncio.Event()

    async def wait_for_gate() -> None:
        await gate.wait()

    def register(app: durable.App) -> None:
        @app.workflow
        async def wf(ctx: durable.Context) -> str:
            times.append(ctx.now())
            await ctx.step(wait_for_gate)
            return ctx.now().isoformat()

    first = make_app(db, clock=lambda: 1_000_000.0)
    register(first)
    async with first:
        await first.start("wf", run_id="r")
        while not times:
            await asyncio.sleep(0.01)
    gate.set()
    second = make_app(db, clock=lambda: 2_000_000.0)
    register(second)
    async with second:
        assert await second.run("wf", run_id="r") == "1970-01-24T03:33:20+00:00"  # recorded live by `second`
    assert times == [dt.datetime.fromtimestamp(1_000_000, dt.timezone.utc)] * 2
    assert times[1].tzinfo is dt.timezone.utc


def register_versions(app: durable.App, calls: list[str], version: int) -> None:
    def charge() -> str:
        calls.append("charge")
        return "charged"

    def refund() -> str:
        calls.append("refund")
        return "refunded"

    def ship() -> str:
        calls.append("ship")
        return "shipped"

    async def gate(value: str) -> str:
        if value == "wait":
            await asyncio.Event().wait()
        return value

    @app.workflow(name="order")
    async def order(ctx: durable.Context, mode: str) -> str:
        if version == 2:
            await ctx.step(refund)  # the code changed: a different step at seq 0
        else:
            await ctx.step(charge)
        await ctx.step(gate, mode)
        return await ctx.step(ship)


async def test_nondeterminism_blocks_the_run_and_leaves_the_journal_intact(db: str) -> None:
    calls: list[str] = []
    v1 = make_app(db)
    register_versions(v1, calls, version=1)
    async with v1:
        await v1.start("order", "wait", run_id="r")
        await eventually(lambda: _has_steps(v1, "r", 1), what="the first step")
    before = records(db, "r")

    v2 = make_app(db)
    register_versions(v2, calls, version=2)
    async with v2:
        with pytest.raises(
            durable.NondeterminismError,
            match=r"seq 0: the journal recorded step '.*charge' but the workflow now called step '.*refund'",
        ) as raised:
            await v2.run("order", "wait", run_id="r")
        assert (raised.value.run_id, raised.value.seq) == ("r", 0)
        assert (await v2.get_run("r")).status == "blocked"
        # whoever only waits for a blocked run gets the same error
        with pytest.raises(durable.NondeterminismError):
            await durable.RunHandle(v2, "r").result(timeout=5)
    assert records(db, "r") == before
    assert calls == ["charge"]

    # the code is fixed: an explicit rerun replays and goes on
    v3 = make_app(db)
    register_versions(v3, calls, version=1)
    async with v3:
        await v3.start("order", "wait", run_id="r")
        assert (await v3.get_run("r")).status == "running"
        await eventually(lambda: _has_steps(v3, "r", 1), what="the replay")
    assert calls == ["charge"]  # replayed, not executed again


async def _has_steps(app: durable.App, run_id: str, n: int) -> bool:
    return len((await app.get_run(run_id)).steps) >= n


async def test_swallowed_nondeterminism_still_blocks(db: str) -> None:
    calls: list[str] = []

    def a() -> str:
        calls.append("a")
        return "a"

    def b() -> str:
        calls.append("b")
        return "b"

    async def hang() -> None:
        await asyncio.Event().wait()

    def register(app: durable.App, swapped: bool) -> None:
        @app.workflow
        async def wf(ctx: durable.Context) -> str:
            try:
                await ctx.step(b if swapped else a)
            except Exception:
                pass  # a careless workflow swallows everything
            await ctx.step(hang)
            return "done"

    first = make_app(db)
    register(first, swapped=False)
    async with first:
        await first.start("wf", run_id="r")
        while not calls:
            await asyncio.sleep(0.01)
    second = make_app(db)
    register(second, swapped=True)
    async with second:
        with pytest.raises(durable.NondeterminismError):
            await second.run("wf", run_id="r")
        assert (await second.get_run("r")).status == "blocked"
    assert calls == ["a"]


async def test_context_used_after_its_run_ended_is_refused(app: durable.App) -> None:
    kept: list[durable.Context] = []

    @app.workflow
    async def wf(ctx: durable.Context) -> None:
        kept.append(ctx)

    async with app:
        await app.run(wf, run_id="r")
        with pytest.raises(durable.NotInWorkflow, match="after that run stopped executing"):
            await kept[0].step(print)
        with pytest.raises(durable.NotInWorkflow):
            kept[0].now()
    assert kept[0].run_id == "r" and kept[0].workflow == "wf"


# --- edge paths of replay (each of these once went wrong) --------------------------------------------


def versioned(db: str, calls: list[str], body: str) -> durable.App:
    """An App whose workflow 'wf' does one of several things, as code that changed between deploys would."""
    app = make_app(db)

    def step_a() -> str:
        calls.append("a")
        return "a"

    def step_b() -> str:
        calls.append("b")
        return "b"

    def step_c() -> str:
        calls.append("c")
        return "c"

    async def park(ctx: durable.Context) -> bool:
        return await ctx.ask("go on?", type=bool, key="go")

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        if body == "v1":
            await ctx.step(step_a)
            await park(ctx)
            return "v1"
        if body == "v1-longer":
            await ctx.step(step_a)
            await ctx.step(step_b)
            await park(ctx)
            return "v1"
        if body == "mismatch-then-other-branch":
            # The call at seq 0 now differs, and is not awaited yet; the prompt at seq 1
            # matches; the step at seq 2 has no record: it would run live.
            changed = ctx.step(step_c)
            asked = ctx.ask("go on?", type=bool, key="go")
            await ctx.step(step_c)
            await asyncio.gather(changed, asked)
            return "v2"
        if body == "dropped-end":
            await ctx.step(step_a)
            return "short"
        raise AssertionError(body)

    return app


async def test_no_call_made_after_a_mismatch_runs_or_is_recorded(db: str) -> None:
    calls: list[str] = []
    async with versioned(db, calls, "v1") as v1:
        await v1.start("wf", run_id="r")
        await eventually(lambda: _status_is(v1, "r", "waiting"), what="the run to wait")
    before = records(db, "r")
    async with versioned(db, calls, "mismatch-then-other-branch") as v2:
        with pytest.raises(durable.NondeterminismError, match=r"seq 0: the journal recorded step '.*step_a'"):
            await v2.run("wf", run_id="r")
        assert (await v2.get_run("r")).status == "blocked"
    assert calls == ["a"]  # v1's step only: nothing of the new code ran
    assert records(db, "r") == before


async def test_a_run_that_ends_before_its_recorded_calls_is_blocked(db: str) -> None:
    calls: list[str] = []
    async with versioned(db, calls, "v1-longer") as v1:
        await v1.start("wf", run_id="r")
        await eventually(lambda: _status_is(v1, "r", "waiting"), what="the run to wait")
    async with versioned(db, calls, "dropped-end") as v2:
        with pytest.raises(
            durable.NondeterminismError,
            match=r"seq 1: the journal recorded step '.*step_b' but the workflow now called nothing: the workflow returned",
        ):
            await v2.run("wf", run_id="r")
        run = await v2.get_run("r")
    assert run.status == "blocked" and run.result is None
    assert calls == ["a", "b"]


async def test_a_changed_signature_blocks_the_run(db: str) -> None:
    v1 = make_app(db)

    @v1.workflow(name="greet")
    async def greet_v1(ctx: durable.Context, name: str) -> str:
        await ctx.ask("go?", type=bool, key="go")
        return f"hello {name}"

    async with v1:
        await v1.start("greet", "ada", run_id="r")
        await eventually(lambda: _status_is(v1, "r", "waiting"), what="the run to wait")

    v2 = make_app(db)

    @v2.workflow(name="greet")
    async def greet_v2(ctx: durable.Context, first: str, last: str) -> str:
        return f"hello {first} {last}"

    async with v2:
        with pytest.raises(durable.SignatureChanged, match=r"no longer fit workflow 'greet'.*missing a required argument"):
            await v2.run("greet", "ada", "lovelace", run_id="r")
        run = await v2.get_run("r")
    assert run.status == "blocked"
    assert run.error is not None and run.error["type"] == "durable.errors:SignatureChanged"


async def _status_is(app: durable.App, run_id: str, status: str) -> bool:
    return (await app.status(run_id)) == status
