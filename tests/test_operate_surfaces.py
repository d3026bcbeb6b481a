"""retry, fork, pause, resume and prune from the command line and over HTTP (both stores)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from click.testing import CliRunner

import durable
from durable.cli import main
from durable.cli_change import parse_duration
from durable.http import create_app
from helpers import eventually, make_app, records, stored_run

calls: Counter[str] = Counter()
broken = {"charge": True}


def charge(order: str) -> str:
    calls["charge"] += 1
    if broken["charge"]:
        raise ConnectionError("the payment service is down")
    return f"charged {order}"


def note(order: str) -> str:
    calls["note"] += 1
    return order


def shop(db: str) -> durable.App:
    app = make_app(db)

    @app.workflow(name="checkout")
    async def checkout(ctx: durable.Context, order: str) -> str:
        await ctx.step(note, order)
        return await ctx.step(charge, order)

    @app.workflow(name="approve")
    async def approve(ctx: durable.Context, order: str) -> str:
        await ctx.step(note, order)
        return await ctx.ask(f"approve {order}?", key="ok")

    return app


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    broken["charge"] = True


def cli_now(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), prog_name="durable")
    return result.exit_code, result.output


async def cli(*args: str) -> tuple[int, str]:
    """`durable ARGS`, on a thread: the command runs an event loop of its own."""
    return await asyncio.to_thread(cli_now, *args)


async def failed_runs(db: str, n: int) -> None:
    app = shop(db)
    async with app:
        for i in range(n):
            with pytest.raises(ConnectionError):
                await app.run("checkout", f"o{i}", run_id=f"r{i}")


async def _status(app: durable.App, run_id: str, status: str) -> bool:
    return await app.status(run_id) == status


async def test_durable_retry_by_id_and_in_bulk(db: str) -> None:
    await failed_runs(db, 3)
    broken["charge"] = False
    assert await cli("retry", "r0", "--db", db) == (0, "retried run r0\n")
    code, output = await cli("retry", "--status", "failed", "--workflow", "checkout", "--db", db)
    assert code == 0 and sorted(output.splitlines()) == ["retried run r1", "retried run r2"]
    assert await cli("retry", "--status", "failed", "--db", db) == (0, "no failed runs\n")
    app = shop(db)
    async with app:  # a worker with the workflow takes the retried runs
        for i in range(3):
            await eventually(lambda i=i: _status(app, f"r{i}", "completed"), what=f"r{i} to complete")
    assert calls == {"note": 3, "charge": 6}
    code, output = await cli("retry", "r0", "--db", db)
    assert code == 1 and "'r0' is completed: only failed and blocked runs can be retried" in output
    code, output = await cli("show", "r0", "--db", db)
    assert "set aside by retries" in output and "the payment service is down" in output
    code, output = await cli("retry", "--db", db)
    assert code == 2 and "Give RUN_IDs, or --status" in output


async def test_durable_fork_pause_resume(db: str) -> None:
    app = shop(db)
    async with app:
        await app.start("approve", "o", run_id="src")
        await eventually(lambda: app.prompts(run_id="src"), what="the prompt")
        assert await cli("fork", "src", "--at-seq", "1", "--run-id", "copy", "--db", db) == (0, "forked run src at seq 1 as copy\n")
        await eventually(lambda: app.prompts(run_id="copy"), what="the fork's prompt")
        assert records(db, "copy")[0][1:] == records(db, "src")[0][1:] and calls == {"note": 1}
        code, output = await cli("fork", "src", "--at-seq", "9", "--db", db)
        assert code == 1 and "must be between 0 and 2" in output

        assert await cli("pause", "copy", "--db", db) == (0, "paused run copy\n")
        assert await app.status("copy") == "paused"
        assert (await cli("answer", "copy", "ok", '"yes"', "--db", db))[0] == 0
        await asyncio.sleep(0.2)
        assert await app.status("copy") == "paused"
        assert await cli("resume", "copy", "--db", db) == (0, "resumed run copy\n")
        await eventually(lambda: _status(app, "copy", "completed"), what="the resumed fork to complete")
        code, output = await cli("resume", "copy", "--db", db)
        assert code == 1 and "only paused runs can be resumed" in output


async def test_durable_prune(db: str) -> None:
    await failed_runs(db, 2)
    code, output = await cli("prune", "--older-than", "30d", "--db", db)
    assert (code, output) == (0, "pruned 0 runs (completed, failed, cancelled) older than 30d\n")
    assert (await cli("prune", "--older-than", "0s", "--status", "completed", "--db", db))[1].startswith("pruned 0 runs")
    assert (await cli("prune", "--older-than", "0", "--status", "failed", "--db", db))[1].startswith("pruned 2 runs (failed)")
    assert stored_run(db, "r0") is None and records(db, "r1") == []
    code, output = await cli("prune", "--older-than", "soon", "--db", db)
    assert code == 2 and "not a duration" in output


def test_durations_read_as_seconds() -> None:
    assert [parse_duration(t) for t in ("30d", "12h", "90m", "45s", "2w", "10")] == [2592000, 43200, 5400, 45, 1209600, 10]


@pytest.fixture
async def client(db: str) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(create_app(shop(db))) as manager:
        transport = httpx.ASGITransport(app=manager.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def _run_status(client: httpx.AsyncClient, run_id: str, status: str) -> bool:
    return (await client.get(f"/runs/{run_id}")).json()["status"] == status


async def test_http_retry_fork_pause_resume(client: httpx.AsyncClient) -> None:
    response = await client.post("/workflows/checkout/runs", json={"args": ["o"], "run_id": "r"})
    assert response.status_code == 202
    await eventually(lambda: _run_status(client, "r", "failed"), what="the run to fail")
    broken["charge"] = False
    response = await client.post("/runs/r/retry")
    assert response.status_code == 200 and response.json()["run_id"] == "r"
    await eventually(lambda: _run_status(client, "r", "completed"), what="the retried run")
    run = (await client.get("/runs/r")).json()
    assert [r["kind"] for r in run["set_aside"]] == ["run", "step"]
    response = await client.post("/runs/r/retry")
    assert response.status_code == 409 and response.json()["error"] == "WrongRunStatus"

    response = await client.post("/runs/r/fork", json={"at_seq": 1, "new_run_id": "f"})
    assert response.status_code == 202 and response.json()["run_id"] == "f"
    await eventually(lambda: _run_status(client, "f", "completed"), what="the fork")
    assert calls == {"note": 1, "charge": 3}
    response = await client.post("/runs/r/fork", json={"at_seq": 1, "new_run_id": "f"})
    assert response.status_code == 409 and response.json()["error"] == "RunExists"
    response = await client.post("/runs/r/fork", json={"at_seq": 7})
    assert response.status_code == 422 and "between 0 and 2" in response.json()["detail"]
    assert (await client.post("/runs/r/fork", json={"at_seq": -1})).status_code == 422
    assert (await client.post("/runs/nope/fork", json={"at_seq": 0})).status_code == 404

    response = await client.post("/workflows/approve/runs", json={"args": ["o"], "run_id": "a"})
    await eventually(lambda: _run_status(client, "a", "waiting"), what="the prompt")
    response = await client.post("/runs/a/pause")
    assert response.status_code == 200 and response.json() == {"run_id": "a", "status": "paused"}
    assert (await client.post("/runs/a/prompts/ok", json={"value": "yes"})).status_code == 200
    response = await client.post("/runs/a/resume")
    assert response.status_code == 200
    await eventually(lambda: _run_status(client, "a", "completed"), what="the resumed run")
    assert (await client.post("/runs/a/resume")).status_code == 409
    assert (await client.post("/runs/a/pause")).status_code == 409
    assert (await client.post("/runs/nope/pause")).status_code == 404
