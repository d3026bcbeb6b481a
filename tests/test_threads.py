"""The threads plain-function steps run in."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

import durable
from durable import threads
from durable.threads import run_in_thread

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


async def test_calls_past_the_thread_limit_wait_their_turn_and_all_finish() -> None:
    gate = threading.Event()
    running = []

    def blocked(i: int) -> int:
        running.append(i)
        gate.wait(10)
        return i

    calls = [run_in_thread(blocked, i) for i in range(threads.MAX_THREADS + 8)]
    deadline = time.monotonic() + 10
    while len(running) < threads.MAX_THREADS and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(running) == threads.MAX_THREADS  # the rest wait for a thread
    gate.set()
    assert await asyncio.gather(*calls) == list(range(threads.MAX_THREADS + 8))


async def test_a_call_sees_the_callers_context_and_raises_its_error() -> None:
    request_id.set("r-42")

    def read() -> str:
        return request_id.get()

    def fail() -> None:
        raise KeyError("missing")

    assert await run_in_thread(read) == "r-42"
    with pytest.raises(KeyError, match="missing"):
        await run_in_thread(fail)


async def test_a_caller_that_gives_up_leaves_the_pool_working() -> None:
    def slow() -> int:
        time.sleep(0.05)
        return 1

    call = run_in_thread(slow)
    call.cancel()
    await asyncio.sleep(0.1)  # the call ran on; its result had nowhere to go
    assert await run_in_thread(lambda: 2) == 2


async def test_plain_step_edge_paths_on_the_threaded_path(app: durable.App) -> None:
    async def later() -> str:
        return "awaited"

    def returns_awaitable():  # type: ignore[no-untyped-def]
        return later()

    def unstorable() -> object:
        return object()

    def context() -> str:
        return request_id.get()

    @app.workflow
    async def wf(ctx: durable.Context) -> list[str]:
        first = await ctx.step(returns_awaitable)
        try:
            await ctx.step(unstorable)
        except durable.EncodingError as exc:
            second = f"refused: {exc.type_name}"
        return [first, second, await ctx.step(context)]

    async with app:
        request_id.set("in-run")
        assert await app.run(wf, run_id="r") == ["awaited", "refused: object", "in-run"]
        steps = (await app.get_run("r")).steps
    # The unstorable value wrote nothing: its seq has no record.
    assert [(s.seq, s.name.rsplit(".", 1)[-1], s.value) for s in steps] == [
        (0, "returns_awaitable", "awaited"), (2, "context", "in-run"),
    ]  # fmt: skip
