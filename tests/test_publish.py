"""Published progress: ctx.publish and app.stream, resumable by offset, journaled (never twice); on both stores."""

from __future__ import annotations

import asyncio
import json

import pytest

import durable
from helpers import eventually, make_app, records


async def _status(app: durable.App, run_id: str, status: str) -> bool:
    return await app.status(run_id) == status


def reporter(db: str) -> durable.App:
    app = make_app(db)

    @app.workflow
    async def report(ctx: durable.Context, n: int) -> int:
        for i in range(n):
            await ctx.publish("progress", {"done": i + 1, "of": n})
            if i == 1:
                await ctx.ask("go on?", type=bool, key="go")  # unloaded here, then replayed: no publish again
        await ctx.publish("note", "finished")
        return n

    return app


async def test_a_stream_yields_what_exists_then_live_items_and_resumes_from_every_offset(db: str) -> None:
    app = reporter(db)
    async with app:
        handle = await app.start("report", 4, run_id="r")
        await eventually(lambda: _status(app, "r", "waiting"), what="the run to wait half way")
        got: list[tuple[int, object]] = []

        async def follow() -> None:
            async for item in app.stream("r", "progress"):
                got.append(item)

        follower = asyncio.create_task(follow())
        await eventually(lambda: _count(got, 2), what="the first two items")
        await app.answer("r", "go", True)  # live items come after the resume
        assert await handle.result(timeout=10) == 4
        await asyncio.wait_for(follower, 10)  # the stream ends with the run
        assert got == [(0, {"done": 1, "of": 4}), (1, {"done": 2, "of": 4}), (3, {"done": 3, "of": 4}), (4, {"done": 4, "of": 4})]
        for k, (offset, _) in enumerate(got):
            assert [item async for item in app.stream("r", "progress", after=offset)] == got[k + 1 :]
        assert [item async for item in app.stream("r", "note")] == [(5, "finished")]
        with pytest.raises(durable.RunNotFound):
            [item async for item in app.stream("nope", "progress")]
    published = [r for r in records(db, "r") if r[1] == "publish"]
    assert len(published) == 5  # the replay after the answer published nothing again


async def _count(items: list[object], n: int) -> bool:
    return len(items) >= n


async def test_the_event_stream_carries_published_items_and_messages_as_their_own_events(db: str) -> None:
    import httpx
    from asgi_lifespan import LifespanManager

    from durable.http import create_app

    app = make_app(db)

    @app.workflow(name="wf")
    async def wf(ctx: durable.Context) -> str:
        await ctx.publish("stage", "waiting for payment")
        paid = await ctx.receive("payment", type=int)
        await ctx.publish("stage", f"paid {paid}")
        return "ok"

    async with LifespanManager(create_app(app)) as manager:
        transport = httpx.ASGITransport(app=manager.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.post("/workflows/wf/runs", json={"run_id": "r"})
            await eventually(lambda: _status(app, "r", "waiting"), what="the receive")
            await client.post("/runs/r/messages/payment", json={"value": 5})
            await eventually(lambda: _status(app, "r", "completed"), what="the run to end")
            response = await client.get("/runs/r/events")
    events = [block for block in response.text.strip().split("\n\n")]
    kinds = [next((line[7:] for line in e.splitlines() if line.startswith("event: ")), "message") for e in events]
    assert kinds == ["published", "received", "published", "end"]
    data = [json.loads(next(line[6:] for line in e.splitlines() if line.startswith("data: "))) for e in events]
    assert (data[0]["name"], data[0]["value"]) == ("stage", "waiting for payment")
    assert (data[1]["name"], data[1]["value"]) == ("payment", 5)
