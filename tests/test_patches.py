"""ctx.patched: a code change keeps runs already in flight on their old path, without shifting their seqs.

Each test runs version 1 of a workflow until it parks at a prompt, then opens
the same journal with version 2 (the same workflow name, new code) and lets
both the old run and a new one finish, counting what each step did.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import durable
from helpers import make_app, records

calls: Counter[str] = Counter()


def step_fn(name: str):
    def fn() -> str:
        calls[name] += 1
        return name

    fn.__name__ = fn.__qualname__ = name
    return fn


a, b, c, old, new = (step_fn(n) for n in ("a", "b", "c", "old", "new"))


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


async def park_v1(db: str, body, run_id: str = "old") -> None:
    """Run version 1 until it waits at its prompt 'go'."""
    app = make_app(db)
    app.workflow(name="wf")(body)
    async with app:
        handle = await app.start("wf", run_id=run_id)
        while await handle.status() != "waiting":
            await asyncio.sleep(0.01)


async def finish_v2(db: str, body, run_ids: list[str]) -> dict[str, object]:
    """Open the journal with version 2, answer every run's prompt 'go', and return their results."""
    app = make_app(db)
    app.workflow(name="wf")(body)
    results: dict[str, object] = {}
    async with app:
        for run_id in run_ids:
            handle = await app.start("wf", run_id=run_id)
            while await handle.status() != "waiting":
                await asyncio.sleep(0.01)
            await app.answer(run_id, "go", True)
            results[run_id] = await handle.result(timeout=20)
    return results


def kinds(rows) -> list[tuple[int, str, str]]:
    return [row[:3] for row in rows]


async def test_a_step_added_behind_a_patch_runs_for_new_runs_only(db: str) -> None:
    async def v1(ctx: durable.Context) -> list[str]:
        got = [await ctx.step(a)]
        await ctx.ask("go?", type=bool, key="go")
        return got + [await ctx.step(c)]

    async def v2(ctx: durable.Context) -> list[str]:
        got = [await ctx.step(a)]
        if ctx.patched("add-b"):
            got.append(await ctx.step(b))
        await ctx.ask("go?", type=bool, key="go")
        return got + [await ctx.step(c)]

    await park_v1(db, v1)
    results = await finish_v2(db, v2, ["old", "new"])
    assert results == {"old": ["a", "c"], "new": ["a", "b", "c"]}
    assert calls == {"a": 2, "b": 1, "c": 2}
    # The old run kept its seqs: no marker, nothing shifted.
    assert kinds(records(db, "old")) == [(0, "step", "a"), (1, "ask", "go"), (2, "step", "c")]
    assert kinds(records(db, "new")) == [(0, "step", "a"), (1, "patch", "add-b"), (2, "step", "b"), (3, "ask", "go"), (4, "step", "c")]

    # Both replay to the same results with version 2, executing nothing.
    app = make_app(db)
    app.workflow(name="wf")(v2)
    async with app:
        assert await app.run("wf", run_id="old") == ["a", "c"]
        assert await app.run("wf", run_id="new") == ["a", "b", "c"]
    assert calls == {"a": 2, "b": 1, "c": 2}


async def test_a_step_removed_behind_a_patch_still_replays_for_runs_that_recorded_it(db: str) -> None:
    async def v1(ctx: durable.Context) -> list[str]:
        got = [await ctx.step(a), await ctx.step(old)]
        await ctx.ask("go?", type=bool, key="go")
        return got + [await ctx.step(c)]

    async def v2(ctx: durable.Context) -> list[str]:
        got = [await ctx.step(a)]
        if not ctx.patched("drop-old"):
            got.append(await ctx.step(old))
        await ctx.ask("go?", type=bool, key="go")
        return got + [await ctx.step(c)]

    await park_v1(db, v1)
    results = await finish_v2(db, v2, ["old", "new"])
    assert results == {"old": ["a", "old", "c"], "new": ["a", "c"]}
    assert calls == {"a": 2, "old": 1, "c": 2}


async def test_a_changed_step_keeps_old_runs_on_the_old_step(db: str) -> None:
    async def v1(ctx: durable.Context) -> list[str]:
        got = [await ctx.step(old)]
        await ctx.ask("go?", type=bool, key="go")
        return got + [await ctx.step(c)]

    async def v2(ctx: durable.Context) -> list[str]:
        got = [await ctx.step(new) if ctx.patched("v2") else await ctx.step(old)]
        await ctx.ask("go?", type=bool, key="go")
        return got + [await ctx.step(c)]

    await park_v1(db, v1)
    assert await finish_v2(db, v2, ["old", "new"]) == {"old": ["old", "c"], "new": ["new", "c"]}
    assert calls == {"old": 1, "new": 1, "c": 2}


async def test_several_and_nested_patches_each_decide_by_where_the_run_was(db: str) -> None:
    async def v1(ctx: durable.Context) -> list[str]:
        got = [await ctx.step(a)]
        await ctx.ask("go?", type=bool, key="go")
        return got + [await ctx.step(c)]

    async def v2(ctx: durable.Context) -> list[str]:
        got = []
        if ctx.patched("first"):
            got.append(await ctx.step(b))
            if ctx.patched("inner"):
                got.append(await ctx.step(new))
        got.append(await ctx.step(a))
        await ctx.ask("go?", type=bool, key="go")
        if ctx.patched("second"):  # after the prompt: the old run reaches it with the new code
            got.append(await ctx.step(old))
        return got + [await ctx.step(c)]

    await park_v1(db, v1)
    results = await finish_v2(db, v2, ["old", "new"])
    assert results == {"old": ["a", "old", "c"], "new": ["b", "new", "a", "old", "c"]}
    assert calls == {"a": 2, "b": 1, "new": 1, "old": 2, "c": 2}


async def test_a_patch_inside_gather_replays_in_each_branch(db: str) -> None:
    async def branch(ctx: durable.Context, patch: str, fn) -> str:
        if ctx.patched(patch):
            return await ctx.step(fn)
        return await ctx.step(a)

    async def v1(ctx: durable.Context) -> list[str]:
        got = list(await asyncio.gather(ctx.step(a), ctx.step(a)))
        await ctx.ask("go?", type=bool, key="go")
        return got

    async def v2(ctx: durable.Context) -> list[str]:
        got = list(await asyncio.gather(branch(ctx, "left", b), branch(ctx, "right", c)))
        await ctx.ask("go?", type=bool, key="go")
        return got

    await park_v1(db, v1)
    assert await finish_v2(db, v2, ["old", "new"]) == {"old": ["a", "a"], "new": ["b", "c"]}
    assert calls == {"a": 2, "b": 1, "c": 1}
    app = make_app(db)
    app.workflow(name="wf")(v2)
    async with app:
        assert await app.run("wf", run_id="new") == ["b", "c"]
    assert calls == {"a": 2, "b": 1, "c": 1}


async def test_a_retired_patch_leaves_markers_that_replay_without_it(db: str) -> None:
    """Once no run takes the old path, the if goes: runs that recorded the marker replay past it."""

    async def v2(ctx: durable.Context) -> list[str]:
        got = [await ctx.step(a)]
        if ctx.patched("add-b"):
            got.append(await ctx.step(b))
        await ctx.ask("go?", type=bool, key="go")
        got.append(await ctx.step(c))
        ctx.patched("at-the-end")  # a marker after the last call
        return got

    async def v3(ctx: durable.Context) -> list[str]:
        got = [await ctx.step(a), await ctx.step(b)]
        await ctx.ask("go?", type=bool, key="go")
        return got + [await ctx.step(c)]

    await park_v1(db, v2, run_id="parked")
    app = make_app(db)
    app.workflow(name="wf")(v2)
    async with app:
        done = await app.start("wf", run_id="done")
        await asyncio.sleep(0)
        while await done.status() != "waiting":
            await asyncio.sleep(0.01)
        await app.answer("done", "go", True)
        assert await done.result(timeout=20) == ["a", "b", "c"]
    assert await finish_v2(db, v3, ["parked"]) == {"parked": ["a", "b", "c"]}
    app = make_app(db)
    app.workflow(name="wf")(v3)
    async with app:
        assert await app.run("wf", run_id="done") == ["a", "b", "c"]
    assert calls == {"a": 2, "b": 2, "c": 2}


async def test_patched_takes_a_name(app: durable.App) -> None:
    @app.workflow
    async def wf(ctx: durable.Context) -> bool:
        return ctx.patched("")

    async with app:
        with pytest.raises(TypeError, match="non-empty string naming the patch"):
            await app.run(wf, run_id="r")


async def test_a_patch_where_a_recorded_run_has_a_gap_keeps_the_old_path(db: str) -> None:
    """A retry sets aside a failed gather branch: its seq is empty, later seqs are recorded, so the run is old."""
    broken = {"flaky": True}

    def flaky() -> str:
        calls["flaky"] += 1
        if broken["flaky"]:
            raise ConnectionError("down")
        return "flaky"

    flaky.__qualname__ = "flaky"

    async def v1(ctx: durable.Context) -> list[str]:
        return list(await asyncio.gather(ctx.step(flaky), ctx.step(b)))

    async def v2(ctx: durable.Context) -> list[str]:
        got = [await ctx.step(new)] if ctx.patched("prepare") else []
        return got + list(await asyncio.gather(ctx.step(flaky), ctx.step(b)))

    app = make_app(db)
    app.workflow(name="wf")(v1)
    async with app:
        with pytest.raises(ConnectionError):
            await app.run("wf", run_id="r")
    broken["flaky"] = False
    app = make_app(db)
    app.workflow(name="wf")(v2)
    async with app:
        assert await (await app.retry("r")).result(timeout=20) == ["flaky", "b"]
        assert await app.run("wf", run_id="fresh") == ["new", "flaky", "b"]
    assert calls == {"flaky": 3, "b": 2, "new": 1}
