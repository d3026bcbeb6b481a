"""Messages: app.send and ctx.receive, on both stores: order, exactly once, timeouts, crashes; and replay-aware logging."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
import time
from pathlib import Path

import pydantic
import pytest
from click.testing import CliRunner

import durable
from durable.cli import main
from durable.testing import VirtualClock
from helpers import eventually, finish, make_app, records, spawn, stored_records, wait_until


class Payment(pydantic.BaseModel):
    amount: int


async def _status(app: durable.App, run_id: str, status: str) -> bool:
    return await app.status(run_id) == status


def inbox(db: str, run_id: str) -> list[tuple[int, str, str]]:
    return [(r.seq, r.name, r.status) for r in stored_records(db, run_id) if r.kind == "receive"]


async def test_messages_sent_before_while_and_after_the_run_waits_arrive_in_send_order(db: str) -> None:
    app = make_app(db)

    @app.workflow
    async def collect(ctx: durable.Context) -> list[str]:
        first = await ctx.receive("n", type=str)
        await ctx.step(asyncio.sleep, 0)
        got = [first, await ctx.receive("n", type=str)]
        return got + [await ctx.receive("n", type=str), await ctx.receive("other", type=str)]

    async with app:
        await app.submit("collect", run_id="early")  # pending: nobody has taken it yet
        await app.send("early", "n", "a")  # before the run waits: kept
        handle = await app.start(collect, run_id="early")
        await eventually(lambda: _status(app, "early", "waiting"), what="the run to wait for its second message")
        await app.send("early", "other", "z")  # another topic: kept for its own receive
        await app.send("early", "n", "b")  # while it waits: delivered, and resumed at once
        await app.send("early", "n", "c")
        assert await handle.result(timeout=10) == ["a", "b", "c", "z"]
        assert await app.run(collect, run_id="early") == ["a", "b", "c", "z"]  # replays from the records
    assert inbox(db, "early") == [(0, "n", "received"), (2, "n", "received"), (3, "n", "received"), (4, "other", "received")]


async def test_a_message_from_another_process_moves_the_run_on(db: str) -> None:
    app = make_app(db)

    @app.workflow
    async def wait_pay(ctx: durable.Context) -> int:
        return (await ctx.receive("payment", type=Payment)).amount

    async with app:
        handle = await app.start(wait_pay, run_id="r")
        await eventually(lambda: _status(app, "r", "waiting"), what="the run to wait")
        async with durable.App(db) as webhook:  # a process without the workflow: a webhook handler
            await webhook.send("r", "payment", {"amount": 42})
        assert await handle.result(timeout=10) == 42


async def test_sending_to_an_ended_or_unknown_run_is_an_error_and_stores_nothing(db: str) -> None:
    app = make_app(db)

    @app.workflow
    async def quick(ctx: durable.Context) -> int:
        return 1

    async with app:
        await app.run(quick, run_id="done")
        with pytest.raises(durable.RunAlreadyFinished, match="'done' already ended with status 'completed': it receives no more"):
            await app.send("done", "n", 1)
        with pytest.raises(durable.RunNotFound):
            await app.send("nope", "n", 1)
        with pytest.raises(durable.EncodingError):
            await app.send("done", "n", object())
        with pytest.raises(TypeError, match="non-empty string"):
            await app.send("done", "", 1)
    assert await _messages(db) == 0


async def _messages(db: str) -> int:
    from durable.store import make_store

    store = make_store(db)
    await store.open()
    try:
        table = "durable.messages" if db.startswith("postgresql") else "messages"
        return (await store._fetch(f"SELECT count(*) FROM {table}"))[0][0]  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_a_message_that_does_not_fit_the_type_is_an_error_in_the_workflow(db: str) -> None:
    app = make_app(db)

    @app.workflow
    async def strict(ctx: durable.Context) -> str:
        try:
            await ctx.receive("payment", type=Payment)
        except durable.InvalidMessage as exc:
            first = str(exc)
        else:
            first = "fits"
        paid = await ctx.receive("payment", type=Payment)
        return f"{first} | then {paid.amount}"

    async with app:
        handle = await app.start(strict, run_id="r")
        await eventually(lambda: _status(app, "r", "waiting"), what="the run to wait")
        await app.send("r", "payment", {"amount": "lots"})
        await app.send("r", "payment", {"amount": 5})
        result = await handle.result(timeout=10)
        assert result.startswith("Run 'r' received a message on 'payment' that does not fit ctx.receive's type")
        assert result.endswith("| then 5")
        assert await app.run(strict, run_id="r") == result  # the same error on replay


async def test_receive_timeouts_fire_with_or_without_a_default(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)

    @app.workflow
    async def patient(ctx: durable.Context) -> str:
        got = await ctx.receive("n", type=str, timeout=60, default="nothing")
        try:
            await ctx.receive("n", type=str, timeout=30)
        except durable.ReceiveTimedOut as exc:
            return f"{got}, then {type(exc).__name__} after {exc.timeout:g} s"
        return "unexpected"

    async with app:
        handle = await app.start(patient, run_id="r")
        await eventually(lambda: _status(app, "r", "waiting"), what="the first receive")
        await durable_clock.advance(60)
        await eventually(lambda: _status(app, "r", "waiting"), what="the second receive")
        await durable_clock.advance(30)
        assert await handle.result(timeout=10) == "nothing, then ReceiveTimedOut after 30 s"
        with pytest.raises(durable.RunAlreadyFinished):
            await app.send("r", "n", "late")  # the run has ended
    assert [status for _, _, status in inbox(db, "r")] == ["expired", "expired"]


async def test_a_receive_timeout_fires_in_a_worker_started_after_it_fell_due(db: str) -> None:
    clock = [1_000_000.0]

    def build() -> durable.App:
        app = make_app(db, clock=lambda: clock[0])

        @app.workflow(name="wf")
        async def wf(ctx: durable.Context) -> str:
            return await ctx.receive("n", type=str, timeout=3600, default="gave up")

        return app

    async with build() as first:
        await first.start("wf", run_id="r")
        await eventually(lambda: _status(first, "r", "waiting"), what="the receive")
    clock[0] += 7200
    async with build() as later:
        await eventually(lambda: _status(later, "r", "completed"), what="the timeout, after the restart")
        assert await later.run("wf", run_id="r") == "gave up"


async def test_a_message_before_the_timeout_wins_and_cancel_ends_the_wait(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        return await ctx.receive("n", type=str, timeout=60, default="nobody")

    async with app:
        handle = await app.start(wf, run_id="a")
        await eventually(lambda: _status(app, "a", "waiting"), what="the receive")
        await durable_clock.advance(59)
        await app.send("a", "n", "just in time")
        assert await handle.result(timeout=10) == "just in time"
        await app.start(wf, run_id="b")
        await eventually(lambda: _status(app, "b", "waiting"), what="the receive")
        await app.cancel("b")
    assert inbox(db, "b") == [(0, "n", "cancelled")]


def test_durable_send_from_the_command_line(db: str) -> None:
    async def start() -> None:
        app = make_app(db)

        @app.workflow(name="wf")
        async def wf(ctx: durable.Context) -> int:
            return await ctx.receive("n", type=int)

        async with app:
            await app.start("wf", run_id="r")
            await eventually(lambda: _status(app, "r", "waiting"), what="the receive")

    asyncio.run(start())
    result = CliRunner().invoke(main, ["send", "r", "n", "7", "--db", db])
    assert (result.exit_code, result.output) == (0, "sent run r a message on n\n")
    assert records(db, "r") == [(0, "receive", "n", "received")]
    result = CliRunner().invoke(main, ["send", "nope", "n", "7", "--db", db])
    assert result.exit_code == 1 and "nope" in result.output


def test_a_hundred_messages_arrive_in_order_each_once_across_ten_kills(db: str, tmp_path: Path) -> None:
    log = tmp_path / "log"
    rng = random.Random(11)

    async def send_all() -> None:
        async with durable.App(db) as sender:  # another process's view: it has no workflow
            await sender.submit("collector", run_id="c")
            for i in range(100):
                await sender.send("c", "n", i)
                await asyncio.sleep(rng.uniform(0, 0.01))

    def progress() -> int:
        return len(log.read_text().splitlines()) if log.exists() else 0

    sender = threading.Thread(target=lambda: asyncio.run(send_all()))
    sender.start()
    child = spawn(db, log, "c", "collector")
    kills = 0
    try:
        while kills < 10:
            before = progress()
            wait_until(lambda: progress() > before or child.poll() is not None, what="the child to take a message")
            if child.poll() is not None:
                break  # all received already
            time.sleep(rng.uniform(0, 0.05))
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=10)
            kills += 1
            child = spawn(db, log, "c", "collector")
        sender.join(60)
        out = finish(child)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
        sender.join(5)
    assert kills == 10, f"the run finished after {kills} kills: the test must kill it while it receives"
    assert out.strip().endswith("RESULT " + str(list(range(100))).replace(" ", ""))
    received = [r for r in stored_records(db, "c") if r.kind == "receive"]
    assert [int(r.value) for r in received] == list(range(100))  # type: ignore[arg-type]  # in order, each once
    got = [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("got ")]
    assert sorted(set(got)) == list(range(100))  # every message reached its step (one in flight may run twice)


async def test_is_replaying_and_the_quiet_logger(db: str, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(db)
    seen: list[tuple[str, bool]] = []

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        seen.append(("start", ctx.is_replaying))
        await ctx.step(asyncio.sleep, 0)
        seen.append(("after step", ctx.is_replaying))
        ctx.logger.info("asking now")
        answer = await ctx.ask("ok?", key="ok")
        seen.append(("after ask", ctx.is_replaying))
        ctx.logger.info("got %s", answer)
        return answer

    caplog.set_level(logging.INFO, logger="durable.workflow")
    async with app:
        handle = await app.start(wf, run_id="r")
        await eventually(lambda: app.prompts(), what="the prompt")
        await app.answer("r", "ok", "yes")
        assert await handle.result(timeout=10) == "yes"
    assert seen == [
        ("start", False), ("after step", False),  # executed: nothing was recorded yet
        ("start", True), ("after step", True), ("after ask", False),  # resumed by the answer: replay, then new work
    ]  # fmt: skip
    messages = [r.getMessage() for r in caplog.records if r.name == "durable.workflow.wf"]
    assert messages == ["run r: asking now", "run r: got yes"]  # "asking now" is not logged again on replay


async def test_send_over_http(db: str) -> None:
    import httpx
    from asgi_lifespan import LifespanManager

    from durable.http import create_app

    app = make_app(db)

    @app.workflow(name="wf")
    async def wf(ctx: durable.Context) -> int:
        return (await ctx.receive("payment", type=Payment)).amount

    async with LifespanManager(create_app(app)) as manager:
        transport = httpx.ASGITransport(app=manager.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.post("/workflows/wf/runs", json={"run_id": "r"})).status_code == 202
            response = await client.post("/runs/r/messages/payment", json={"value": {"amount": 9}})
            assert response.status_code == 202 and response.json() == {"run_id": "r", "topic": "payment"}
            await eventually(lambda: _status(app, "r", "completed"), what="the run to receive it")
            assert (await client.get("/runs/r")).json()["result"] == 9
            response = await client.post("/runs/r/messages/payment", json={"value": 1})
            assert response.status_code == 409 and response.json()["error"] == "RunAlreadyFinished"
            assert (await client.post("/runs/nope/messages/payment", json={"value": 1})).status_code == 404
            assert (await client.post("/runs/r/messages/payment", json={"amount": 1})).status_code == 422
