"""The threads plain-function steps run in."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import threading
import time

import pytest

import durable
from durable import threads
from durable.store import is_url
from durable.threads import run_in_thread

from helpers import eventually, make_app, stored_records

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


async def _take_over(db: str, run_id: str) -> None:
    """What another process's claim does to the run: a new owner and epoch (its lease taken as expired)."""
    sql = "UPDATE {}runs SET owner = 'vm|elsewhere', epoch = epoch + 1 WHERE run_id = '%s'" % run_id
    if is_url(db):
        import asyncpg

        conn = await asyncpg.connect(db)
        try:
            await conn.execute(sql.format("durable."))
        finally:
            await conn.close()
    else:
        with sqlite3.connect(db) as conn:
            conn.execute(sql.format(""))


async def test_a_plain_step_of_a_run_taken_over_while_it_ran_records_nothing(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A plain function's thread records its step itself where the store can: that write is fenced like any other.
    caplog.set_level(logging.INFO, logger="durable")
    ran: list[int] = []
    taken = threading.Event()

    def slow(x: int) -> int:
        ran.append(x)
        taken.wait(10)
        return x

    app = make_app(db)

    @app.workflow
    async def wf(ctx: durable.Context) -> int:
        return await ctx.step(slow, 1) + await ctx.step(slow, 2)

    async with app:
        await app.start(wf, run_id="r")

        async def started() -> bool:
            return ran == [1]

        await eventually(started, what="the step to start")
        await _take_over(db, "r")
        taken.set()

        async def stopped() -> bool:
            return "taken over by another process" in caplog.text

        await eventually(stopped, what="the execution to learn it lost the run")
        assert (await app.get_run("r")).status == "running"  # the other owner's now
    assert ran == [1]  # nothing after the refused write
    assert stored_records(db, "r") == []


async def test_results_that_outnumber_what_the_wake_socket_holds_all_arrive() -> None:
    # The loop is blocked while thousands of calls finish: most wake-up bytes find the socket full.
    calls = [run_in_thread(lambda i=i: i) for i in range(5000)]
    time.sleep(1.0)  # blocks the event loop itself
    assert await asyncio.wait_for(asyncio.gather(*calls), 30) == list(range(5000))


FORKED = """
import asyncio, os, signal, sys
from durable.threads import run_in_thread

async def twice(x):
    return await run_in_thread(lambda: 2 * x)

assert asyncio.run(twice(1)) == 2  # the parent's thread now waits for calls that will not come in a child
pid = os.fork()
if pid == 0:
    signal.alarm(10)  # a child handed to its parent's threads waits for ever
    os._exit(0 if asyncio.run(twice(2)) == 4 else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_runs_plain_functions_in_threads_of_its_own() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr)


def test_an_adapter_a_program_registered_for_bytes_is_kept() -> None:
    import subprocess
    import sys

    program = (
        "import sqlite3\n"
        "mine = lambda b: b\n"
        "sqlite3.register_adapter(bytes, mine)\n"
        "import durable.store.sqlite_writer\n"
        "assert sqlite3.adapters[(bytes, sqlite3.PrepareProtocol)] is mine\n"
        "assert sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)] is not None\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_loop_that_cannot_watch_a_socket_gets_its_results_all_the_same() -> None:
    class NoReaders(asyncio.SelectorEventLoop):  # as Windows' proactor loop: no add_reader
        def add_reader(self, *args: object) -> None:
            raise NotImplementedError

    loop = NoReaders()
    try:
        assert loop.run_until_complete(run_in_thread(lambda: 7, loop=loop)) == 7
    finally:
        loop.close()
