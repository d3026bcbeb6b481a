"""Watching a run's journal: recorded records, then live ones, resumable without gaps or repeats."""

from __future__ import annotations

import asyncio

import pytest

import durable
from helpers import eventually


def register(app: durable.App, release: asyncio.Event) -> None:
    async def slow(name: str) -> str:
        if name == "a":
            await release.wait()  # finishes after b and c: its record is committed last
        return name

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        await asyncio.gather(ctx.step(slow, "a"), ctx.step(slow, "b"), ctx.step(slow, "c"))
        ok = await ctx.ask("Go on?", type=bool, key="go")
        await ctx.sleep(0.5)  # held in memory; long enough to be seen scheduled
        return f"done {ok}"


def summary(events: list[tuple[str, durable.Record]]) -> list[tuple[int, str, str]]:
    return [(r.seq, r.kind, r.status) for _, r in events]


EXPECTED = [
    (0, "step", "completed"),
    (1, "step", "completed"),
    (2, "step", "completed"),
    (3, "ask", "waiting"),
    (3, "ask", "answered"),
    (4, "sleep", "scheduled"),
    (4, "sleep", "completed"),
]


async def test_watch_streams_records_in_order_and_ends_with_the_run(app: durable.App) -> None:
    release = asyncio.Event()
    register(app, release)
    events: list[tuple[str, durable.Record]] = []

    async def collect() -> None:
        async for event in app.watch("r"):
            events.append(event)

    async with app:
        handle = await app.start("wf", run_id="r")
        watcher = asyncio.create_task(collect())
        await eventually(lambda: _len_records(app, 2), what="b and c to be recorded")
        await asyncio.sleep(0.1)
        assert events == []  # b and c wait for a, which is still running: order is kept
        release.set()
        await eventually(lambda: _seen(events, 4), what="the watcher to see the prompt")
        await app.answer("r", "go", True)
        assert await handle.result(timeout=10) == "done True"
        await asyncio.wait_for(watcher, 10)  # the stream ends with the run
    assert summary(events) == EXPECTED
    assert [r.value for _, r in events[:3]] == ["a", "b", "c"]
    assert len({cursor for cursor, _ in events}) == len(events)


async def _len_records(app: durable.App, n: int) -> bool:
    return len((await app.get_run("r")).steps) >= n


async def _seen(events: list[object], n: int) -> bool:
    return len(events) >= n


@pytest.mark.parametrize("stop_after", range(1, 7))
async def test_watch_resumes_after_any_cursor_without_gaps_or_repeats(app: durable.App, stop_after: int) -> None:
    release = asyncio.Event()
    release.set()
    register(app, release)
    async with app:
        handle = await app.start("wf", run_id="r")
        first: list[tuple[str, durable.Record]] = []
        async for event in app.watch("r"):
            first.append(event)
            if len(first) == 4 and stop_after > 4:
                await app.answer("r", "go", False)
            if len(first) == stop_after:
                break
        rest: list[tuple[str, durable.Record]] = []

        async def resume() -> None:
            async for event in app.watch("r", after=first[-1][0]):
                rest.append(event)

        second = asyncio.create_task(resume())
        if stop_after <= 4:
            await eventually(lambda: _seen(first + rest, 4), what="the prompt to be seen")
            await app.answer("r", "go", False)
        assert await handle.result(timeout=10) == "done False"
        await asyncio.wait_for(second, 10)
    assert summary(first + rest) == EXPECTED
    # watching an ended run from the start gives each record once, in its final state
    async with durable.App(app.path) as fresh:
        everything = [event async for event in fresh.watch("r")]
    assert summary(everything) == [(0, "step", "completed"), (1, "step", "completed"), (2, "step", "completed"),
                                   (3, "ask", "answered"), (4, "sleep", "completed")]  # fmt: skip


async def test_watch_of_an_unknown_run_and_a_bad_cursor(app: durable.App) -> None:
    async with app:
        with pytest.raises(durable.RunNotFound):
            async for _ in app.watch("ghost"):
                pass
        with pytest.raises(ValueError, match="is not a journal cursor"):
            async for _ in app.watch("ghost", after="garbage"):
                pass
