"""The HTTP API: every route and error in-process (httpx over ASGI, with the lifespan), the
event stream, the token, a real `durable serve`, and a schemathesis run against /openapi.json."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal, Self

import httpx
import pytest
import schemathesis
from asgi_lifespan import LifespanManager
from click.testing import CliRunner
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import durable
from durable.cli import main
from durable.http import UnsafeBind, create_app, is_loopback, serve
from helpers import HERE, eventually, make_app, wait_until
from servers import ROOT, durable_serve

# --- the App under test -----------------------------------------------------------------

shipped: list[str] = []


def pack(order_id: str) -> str:
    return f"packed {order_id}"


def ship(order_id: str) -> str:
    shipped.append(order_id)
    return f"shipped {order_id}"


def build_shop(db: str) -> durable.App:
    app = make_app(db)

    @app.workflow
    async def order(ctx: durable.Context, order_id: str, express: bool = False) -> str:
        """Pack an order, ask for approval, ship it."""
        await ctx.step(pack, order_id)
        if not await ctx.ask(f"Ship order {order_id}?", type=bool, key="approve"):
            return "held"
        return await ctx.step(ship, order_id)

    @app.workflow
    async def survey(ctx: durable.Context) -> str:
        return await ctx.ask("Favourite colour?", type=Literal["red", "blue"], key="colour")

    @app.workflow
    async def hello(ctx: durable.Context) -> str:
        return "hello"

    return app


@pytest.fixture
def shop(db: str) -> durable.App:
    shipped.clear()
    return build_shop(db)


@pytest.fixture
async def api(shop: durable.App) -> AsyncIterator[FastAPI]:
    """The ASGI app, its lifespan running (which opens the App and its worker)."""
    async with LifespanManager(create_app(shop)) as manager:
        yield manager.app  # type: ignore[misc]


@pytest.fixture
async def client(api: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test") as client:
        yield client


async def start(client: httpx.AsyncClient, workflow: str, **body: Any) -> str:
    response = await client.post(f"/workflows/{workflow}/runs", json=body)
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def pending(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    async def asked() -> list[dict[str, Any]]:
        return [p for p in (await client.get("/prompts")).json() if p["run_id"] == run_id]

    return await eventually(asked, what=f"a prompt of run {run_id}")


async def status_becomes(client: httpx.AsyncClient, run_id: str, status: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        run = (await client.get(f"/runs/{run_id}")).json()
        return run if run["status"] == status else None

    return await eventually(check, what=f"run {run_id} to be {status}")


def error(response: httpx.Response, status: int, name: str, match: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == name
    assert match in body["detail"]


# --- routes ---------------------------------------------------------------------------------


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_workflows_list_their_argument_schemas(client: httpx.AsyncClient) -> None:
    workflows = {w["name"]: w for w in (await client.get("/workflows")).json()}
    assert sorted(workflows) == ["hello", "order", "survey"]
    assert workflows["order"]["description"] == "Pack an order, ask for approval, ship it."
    assert workflows["order"]["args_schema"] == {
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "express": {"type": "boolean"}},
        "required": ["order_id"],
    }


async def test_start_a_run_then_the_same_run_id_returns_that_run(client: httpx.AsyncClient) -> None:
    response = await client.post("/workflows/order/runs", json={"args": ["o-1"], "run_id": "r1"})
    assert response.status_code == 202
    assert response.json()["run_id"] == "r1"
    assert response.json()["status"] in ("running", "waiting")
    await pending(client, "r1")

    again = await client.post("/workflows/order/runs", json={"args": ["o-1"], "run_id": "r1"})
    assert again.status_code == 200
    run = again.json()
    assert (run["run_id"], run["workflow"], run["args"]) == ("r1", "order", ["o-1"])
    assert [(s["kind"], s["name"]) for s in run["steps"]] == [("step", "pack"), ("ask", "approve")]


async def test_start_without_a_body_and_with_kwargs(client: httpx.AsyncClient) -> None:
    response = await client.post("/workflows/hello/runs")
    assert response.status_code == 202
    run = await status_becomes(client, response.json()["run_id"], "completed")
    assert run["result"] == "hello"

    run_id = await start(client, "order", kwargs={"order_id": "o-2", "express": True})
    assert (await client.get(f"/runs/{run_id}")).json()["kwargs"] == {"order_id": "o-2", "express": True}


async def test_bad_starts_are_refused_and_write_nothing(client: httpx.AsyncClient) -> None:
    post = client.post
    error(await post("/workflows/nope/runs", json={}), 404, "WorkflowNotFound", "'nope'")
    error(await post("/workflows/order/runs", json={}), 422, "InvalidArguments", "order_id")
    error(await post("/workflows/order/runs", json={"args": [42]}), 422, "InvalidArguments", "Expected `str`")
    error(await post("/workflows/order/runs", json={"args": ["o"], "kwargs": {"colour": 1}}), 422, "InvalidArguments")
    error(await post("/workflows/order/runs", json={"kwargs": {"run_id": "x"}}), 422, "InvalidArguments", "run_id")
    error(await post("/workflows/order/runs", json={"args": "o-1"}), 422, "InvalidRequest", "body.args")
    error(await post("/workflows/order/runs", json={"argz": []}), 422, "InvalidRequest", "body.argz")
    error(await post("/workflows/order/runs", json={"run_id": ""}), 422, "InvalidRequest", "body.run_id")
    error(await post("/workflows/order/runs", json=[1]), 422, "InvalidRequest")
    bad_json = await post("/workflows/order/runs", content=b'{"args": [', headers={"content-type": "application/json"})
    error(bad_json, 400, "MalformedJSON", "not valid JSON")
    assert (await client.get("/runs")).json() == []


async def test_a_run_id_of_another_workflow_conflicts(client: httpx.AsyncClient) -> None:
    await start(client, "hello", run_id="taken")
    response = await client.post("/workflows/survey/runs", json={"run_id": "taken"})
    error(response, 409, "RunIdInUse", "belongs to workflow 'hello'")


async def test_list_runs_filters(client: httpx.AsyncClient) -> None:
    await start(client, "hello", run_id="h1")
    await status_becomes(client, "h1", "completed")
    await start(client, "survey", run_id="s1")
    await pending(client, "s1")
    await start(client, "survey", run_id="s2")
    await pending(client, "s2")

    def ids(response: httpx.Response) -> list[str]:
        assert response.status_code == 200, response.text
        return [r["run_id"] for r in response.json()]

    assert ids(await client.get("/runs")) == ["s2", "s1", "h1"]
    assert ids(await client.get("/runs", params={"status": "waiting"})) == ["s2", "s1"]
    assert ids(await client.get("/runs", params={"workflow": "hello"})) == ["h1"]
    assert ids(await client.get("/runs", params={"limit": 1})) == ["s2"]
    assert all(r["steps"] == [] for r in (await client.get("/runs")).json())
    error(await client.get("/runs", params={"status": "asleep"}), 422, "InvalidRequest", "query.status")
    error(await client.get("/runs", params={"limit": 0}), 422, "InvalidRequest", "query.limit")
    error(await client.get("/runs", params={"limit": "many"}), 422, "InvalidRequest", "query.limit")


async def test_get_a_run_with_its_journal(client: httpx.AsyncClient) -> None:
    run_id = await start(client, "order", args=["o-3"])
    await pending(client, run_id)  # the prompt is recorded a moment before the run parks on it
    run = await status_becomes(client, run_id, "waiting")
    pack_record, ask_record = run["steps"]
    assert pack_record | {"started_at": None, "finished_at": None} == {
        "seq": 0, "kind": "step", "name": "pack", "status": "completed", "value": "packed o-3", "error": None,
        "attempts": 1, "started_at": None, "finished_at": None, "question": None, "schema": None, "expires_at": None,
        "assignee": None, "by": None, "via": None,
    }  # fmt: skip
    assert (ask_record["name"], ask_record["status"]) == ("approve", "waiting")
    assert ask_record["question"] == "Ship order o-3?"
    assert ask_record["schema"] == {"type": "boolean"}
    error(await client.get("/runs/nope"), 404, "RunNotFound", "'nope'")


async def test_answer_a_prompt_and_the_run_completes(client: httpx.AsyncClient) -> None:
    run_id = await start(client, "order", args=["o-4"])
    [prompt] = await pending(client, run_id)
    assert prompt | {"created_at": None} == {
        "run_id": run_id, "key": "approve", "question": "Ship order o-4?", "schema": {"type": "boolean"},
        "created_at": None, "workflow": "order", "seq": 1, "expires_at": None, "assignee": None,
    }  # fmt: skip
    response = await client.post(f"/runs/{run_id}/prompts/approve", json={"value": True})
    assert response.status_code == 200
    assert response.json() == {"run_id": run_id, "key": "approve", "value": True, "by": None}  # no tokens: nobody
    run = await status_becomes(client, run_id, "completed")
    assert run["result"] == "shipped o-4"
    assert shipped == ["o-4"]
    assert (await client.get("/prompts")).json() == []


async def test_bad_answers_are_refused_and_write_nothing(client: httpx.AsyncClient) -> None:
    run_id = await start(client, "survey")
    await pending(client, run_id)
    await status_becomes(client, run_id, "waiting")  # parked: its prompt is listed a moment before
    url = f"/runs/{run_id}/prompts/colour"
    error(await client.post(url, json={"value": "green"}), 422, "InvalidAnswer", "'green' is not one of")
    error(await client.post(url, json={"value": None}), 422, "InvalidAnswer")
    error(await client.post(url, json={}), 422, "InvalidRequest", "body.value: Field required")
    error(await client.post(url, json={"value": "red", "extra": 1}), 422, "InvalidRequest", "body.extra")
    error(await client.post(url, json=["red"]), 422, "InvalidRequest")
    malformed = await client.post(url, content=b"{value: red}", headers={"content-type": "application/json"})
    error(malformed, 400, "MalformedJSON")
    error(await client.post(f"/runs/{run_id}/prompts/size", json={"value": 1}), 404, "PromptNotFound", "'size'")
    error(await client.post("/runs/nope/prompts/colour", json={"value": "red"}), 404, "PromptNotFound", "'nope'")
    run = (await client.get(f"/runs/{run_id}")).json()
    assert (run["status"], run["steps"][0]["status"], run["steps"][0]["value"]) == ("waiting", "waiting", None)

    assert (await client.post(url, json={"value": "blue"})).status_code == 200
    error(await client.post(url, json={"value": "red"}), 409, "PromptAlreadyAnswered", "first answer stands")
    assert (await status_becomes(client, run_id, "completed"))["result"] == "blue"


async def test_cancel(client: httpx.AsyncClient) -> None:
    run_id = await start(client, "survey")
    await pending(client, run_id)
    response = await client.post(f"/runs/{run_id}/cancel")
    assert response.status_code == 200
    assert response.json() == {"run_id": run_id, "status": "cancelled"}
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "cancelled"
    assert (await client.post(f"/runs/{run_id}/cancel")).status_code == 200  # cancelling twice is fine
    answered = await client.post(f"/runs/{run_id}/prompts/colour", json={"value": "red"})
    error(answered, 409, "RunAlreadyFinished", "its prompts take no more answers")  # the run ended: 409, not 404

    done = await start(client, "hello")
    await status_becomes(client, done, "completed")
    error(await client.post(f"/runs/{done}/cancel"), 409, "RunAlreadyFinished", "'completed'")
    error(await client.post("/runs/nope/cancel"), 404, "RunNotFound")


async def test_unknown_routes_and_methods_answer_in_the_same_shape(client: httpx.AsyncClient) -> None:
    error(await client.get("/nothing"), 404, "NotFound")
    error(await client.delete("/runs"), 405, "MethodNotAllowed")


async def test_the_page_and_its_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="static/app.js"' in page.text
    for asset, kind in [("app.js", "javascript"), ("style.css", "text/css")]:
        response = await client.get(f"/static/{asset}")
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
    assert "/" not in (await client.get("/openapi.json")).json()["paths"]


# --- the event stream -------------------------------------------------------------------------


class EventStream:
    """One SSE response read event by event, straight from the ASGI app.

    httpx's ASGITransport hands back a response only once its body is complete,
    which a live stream never is; this drives the app the way a server does.
    """

    def __init__(self, api: FastAPI, path: str, last_event_id: str | None = None) -> None:
        self.api, self.path = api, path
        self.headers = [(b"host", b"test")]
        if last_event_id is not None:
            self.headers.append((b"last-event-id", last_event_id.encode()))
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.left = asyncio.Event()
        self.buffer = ""
        self.ended = False

    async def __aenter__(self) -> Self:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": self.path, "raw_path": self.path.encode(), "query_string": b"", "root_path": "",
            "headers": self.headers, "client": ("127.0.0.1", 50000), "server": ("test", 80),
        }  # fmt: skip
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.left.wait()
            return {"type": "http.disconnect"}

        self.task = asyncio.create_task(self.api(scope, receive, self.messages.put))
        start = await asyncio.wait_for(self.messages.get(), 10)
        self.status = start["status"]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.left.set()  # the client goes away
        await asyncio.wait_for(self.task, 10)

    async def next(self) -> dict[str, str] | None:
        """The next event as {field: value}, or None once the server closed the stream."""
        while "\n\n" not in self.buffer:
            if self.ended:
                return None
            message = await asyncio.wait_for(self.messages.get(), 10)
            self.buffer += message.get("body", b"").decode()
            self.ended = not message.get("more_body", False)
        block, self.buffer = self.buffer.split("\n\n", 1)
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        return fields or await self.next()

    async def rest(self) -> list[dict[str, str]]:
        events = []
        while (event := await self.next()) is not None:
            events.append(event)
        return events


def facts(event: dict[str, str]) -> tuple[Any, ...]:
    data = json.loads(event["data"])
    return (data["seq"], data["kind"], data["name"], data["status"], data["value"])


async def test_events_come_recorded_then_live_then_end(api: FastAPI, client: httpx.AsyncClient) -> None:
    run_id = await start(client, "order", args=["o-5"])
    await pending(client, run_id)
    async with EventStream(api, f"/runs/{run_id}/events") as stream:
        assert stream.status == 200
        recorded = [await stream.next(), await stream.next()]
        assert [facts(e) for e in recorded if e] == [
            (0, "step", "pack", "completed", "packed o-5"),
            (1, "ask", "approve", "waiting", None),
        ]
        await client.post(f"/runs/{run_id}/prompts/approve", json={"value": True})
        live = await stream.rest()
    assert [facts(e) for e in live[:-1]] == [
        (1, "ask", "approve", "answered", True),
        (2, "step", "ship", "completed", "shipped o-5"),
    ]
    assert live[-1]["event"] == "end"
    assert json.loads(live[-1]["data"]) == {"run_id": run_id, "status": "completed"}
    ids = [e["id"] for e in [*recorded, *live[:-1]] if e]
    assert len(set(ids)) == 4
    data = json.loads(live[0]["data"])
    assert data["attempts"] == 1 and data["error"] is None and data["question"] == "Ship order o-5?"


async def test_last_event_id_resumes_without_gaps_or_repeats(api: FastAPI, client: httpx.AsyncClient) -> None:
    run_id = await start(client, "order", args=["o-6"])
    await pending(client, run_id)
    async with EventStream(api, f"/runs/{run_id}/events") as stream:
        first = await stream.next()
        assert first is not None
    async with EventStream(api, f"/runs/{run_id}/events", last_event_id=first["id"]) as stream:
        second = await stream.next()
        assert second is not None
    assert facts(second)[:4] == (1, "ask", "approve", "waiting")
    await client.post(f"/runs/{run_id}/prompts/approve", json={"value": False})
    await status_becomes(client, run_id, "completed")
    async with EventStream(api, f"/runs/{run_id}/events", last_event_id=second["id"]) as stream:
        rest = await stream.rest()
    assert [facts(e) for e in rest[:-1]] == [(1, "ask", "approve", "answered", False)]
    assert rest[-1]["event"] == "end"

    async with EventStream(api, f"/runs/{run_id}/events") as stream:
        whole = await stream.rest()
    assert [facts(e) for e in whole[:-1]] == [
        (0, "step", "pack", "completed", "packed o-6"),
        (1, "ask", "approve", "answered", False),
    ]
    async with EventStream(api, f"/runs/{run_id}/events", last_event_id=whole[-2]["id"]) as stream:
        assert [e.get("event") for e in await stream.rest()] == ["end"]


async def test_event_stream_errors(api: FastAPI, client: httpx.AsyncClient) -> None:
    error(await client.get("/runs/nope/events"), 404, "RunNotFound")
    run_id = await start(client, "hello")
    await status_becomes(client, run_id, "completed")
    response = await client.get(f"/runs/{run_id}/events", headers={"Last-Event-ID": "yesterday"})
    error(response, 400, "BadRequest", "'yesterday' is not a journal cursor")


async def test_open_streams_end_when_the_server_shuts_down(shop: durable.App) -> None:
    async with LifespanManager(create_app(shop)) as manager:
        api = manager.app
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test") as client:
            run_id = await start(client, "survey")
            await pending(client, run_id)
        stream = await EventStream(api, f"/runs/{run_id}/events").__aenter__()  # type: ignore[arg-type]
        assert (await stream.next()) is not None
    await asyncio.wait_for(stream.task, 10)  # ended by the shutdown, not by the client


# --- security ---------------------------------------------------------------------------------


async def test_a_token_guards_every_route(shop: durable.App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_TOKEN", "s3cret")
    async with LifespanManager(create_app(shop)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path in ["/openapi.json", "/runs", "/runs/x/events", "/prompts", "/me"]:
                for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}]:
                    response = await client.get(path, headers=headers)
                    error(response, 401, "Unauthorized", "Authorization: Bearer")
                    assert response.headers["www-authenticate"] == "Bearer"
            error(await client.post("/workflows/hello/runs", json={}), 401, "Unauthorized")
            assert await shop.list_runs() == []
            # Open to all: the load balancer's probe, the page's assets, and the page's sign-in form.
            assert (await client.get("/health")).json() == {"status": "ok"}
            assert (await client.get("/static/app.js")).status_code == 200
            page = await client.get("/")
            assert page.status_code == 200 and '<form class="panel" method="post" action="login">' in page.text

            client.headers["Authorization"] = "Bearer s3cret"
            for path in ["/health", "/", "/openapi.json", "/static/app.js", "/runs"]:
                assert (await client.get(path)).status_code == 200, path
            assert (await client.get("/me")).json() == {"name": "token", "tokens": True}
            assert (await client.post("/workflows/hello/runs", json={})).status_code == 202


def test_serve_refuses_a_public_address_without_a_token(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURABLE_TOKEN", raising=False)
    monkeypatch.delenv("DURABLE_TOKENS", raising=False)
    with pytest.raises(UnsafeBind, match="Refusing to serve on '0.0.0.0' without a token") as refused:
        serve(make_app(db), host="0.0.0.0", port=1)
    assert isinstance(refused.value, durable.DurableError)
    assert "DURABLE_TOKEN" in str(refused.value)
    assert [is_loopback(h) for h in ["127.0.0.1", "127.8.0.1", "localhost", "::1", "[::1]"]] == [True] * 5
    assert [is_loopback(h) for h in ["0.0.0.0", "::", "192.168.1.2", "example.com"]] == [False] * 4


def test_the_cli_prints_the_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURABLE_TOKEN", raising=False)
    monkeypatch.delenv("DURABLE_TOKENS", raising=False)
    monkeypatch.setenv("DURABLE_DB", str(tmp_path / "approval.db"))
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["serve", "examples.approval:app", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: Refusing to serve on '0.0.0.0' without a token")


# --- a real server ------------------------------------------------------------------------------


def test_durable_serve_answers_a_prompt_over_http(tmp_path: Path) -> None:
    expense = {"employee": "ada", "description": "new laptop", "amount": "1899.00"}
    with durable_serve(str(tmp_path / "approval.db")) as base, httpx.Client(base_url=base, timeout=10) as http:
        response = http.post("/workflows/approve_expense/runs", json={"kwargs": {"expense": expense}, "run_id": "l1"})
        assert response.status_code == 202
        prompts = wait_until(lambda: http.get("/prompts").json(), what="the approval prompt")
        assert [(p["run_id"], p["key"], p["schema"]) for p in prompts] == [("l1", "approve", {"type": "boolean"})]

        with http.stream("GET", "/runs/l1/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            assert json.loads(next(lines).removeprefix("data: "))["status"] == "waiting"
            error(http.post("/runs/l1/prompts/approve", json={"value": "yes"}), 422, "InvalidAnswer")
            assert http.post("/runs/l1/prompts/approve", json={"value": True}).status_code == 200
            rest = list(lines)
        assert rest[-3:] == ["event: end", 'data: {"run_id":"l1","status":"completed"}', ""]

        run = http.get("/runs/l1").json()
        assert run["status"] == "completed"
        assert run["result"] == {"approved": True, "by": "manager", "reason": ""}
        assert [(s["kind"], s["name"], s["status"]) for s in run["steps"]] == [
            ("ask", "approve", "answered"),
            ("step", "reimburse", "completed"),
        ]


# --- schemathesis --------------------------------------------------------------------------------


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_generated_requests_get_no_5xx_and_match_the_openapi_schema(tmp_path: Path, mode: GenerationMode) -> None:
    api = create_app(build_shop(str(tmp_path / "fuzz.db")))
    # schemathesis runs the ASGI lifespan itself, in its own event loop thread, until told to stop.
    schema = schemathesis.openapi.from_asgi("/openapi.json", api)
    try:
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 20 + 3  # and one start operation per workflow, with its own arguments' schema
        for operation in operations:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=CHECKS)

            try:
                check()
            except Unsatisfiable:
                # Only free strings or no parameters at all: there is no invalid request to make.
                assert mode is GenerationMode.NEGATIVE, operation.label
    finally:
        shutdown_lifespans()


async def test_a_start_retried_while_the_first_is_in_flight_gets_the_run_too(client: httpx.AsyncClient) -> None:
    for i in range(30):
        body = {"args": ["o-9"], "run_id": f"twice-{i}"}
        first, second = await asyncio.gather(
            client.post("/workflows/order/runs", json=body), client.post("/workflows/order/runs", json=body)
        )
        assert sorted([first.status_code, second.status_code]) == [200, 202], (first.text, second.text)
        assert first.json()["run_id"] == second.json()["run_id"] == f"twice-{i}"


async def test_an_answer_nested_too_deep_is_refused_and_nothing_is_recorded(client: httpx.AsyncClient) -> None:
    run_id = await start(client, "survey")
    await pending(client, run_id)
    deep = "[" * 100 + "]" * 100
    response = await client.post(
        f"/runs/{run_id}/prompts/colour", content=f'{{"value": {deep}}}', headers={"content-type": "application/json"}
    )
    error(response, 422, "InvalidAnswer", "nested 65 levels deep or more; answers may nest 64")
    assert [p["key"] for p in await pending(client, run_id)] == ["colour"]  # still waiting: nothing recorded


async def test_a_body_over_the_limit_is_refused_with_413_before_it_reaches_the_app(shop: durable.App) -> None:
    async with LifespanManager(create_app(shop, max_body_bytes=2000)) as manager:
        transport = httpx.ASGITransport(app=manager.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            run_id = await start(client, "survey")
            await pending(client, run_id)
            response = await client.post(f"/runs/{run_id}/prompts/colour", json={"value": "x" * 5000})
            error(response, 413, "RequestTooLarge", "larger than 2,000 bytes")
            assert [p["key"] for p in await pending(client, run_id)] == ["colour"]


def test_clients_leaving_event_streams_leave_no_tracebacks(tmp_path: Path) -> None:
    # durable_serve fails the test if the server's log has a traceback.
    with durable_serve(str(tmp_path / "ticker.db"), "ticker:app", cwd=HERE) as base:

        async def leave_early() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                run_id = (await http.post("/workflows/ticker/runs", json={})).json()["run_id"]

                async def one(after: int) -> None:
                    async with http.stream("GET", f"/runs/{run_id}/events") as response:
                        seen = 0
                        async for _ in response.aiter_bytes():
                            seen += 1
                            if seen >= after:
                                break  # the client goes away mid-stream

                for _ in range(5):
                    await asyncio.gather(*(one(1 + i % 4) for i in range(20)))

        asyncio.run(leave_early())


async def test_openapi_publishes_each_workflows_arguments(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    body = spec["paths"]["/workflows/order/runs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["kwargs"]["properties"] == {"order_id": {"type": "string"}, "express": {"type": "boolean"}}
    assert body["properties"]["args"]["items"] == {"anyOf": [{"type": "string"}, {"type": "boolean"}]}
    assert body["properties"]["args"]["description"] == "In this order: order_id, express"
    assert "required: order_id" in body["description"]
    response = await client.post("/workflows/order/runs", json={"kwargs": {"order_id": "o-7"}})
    assert response.status_code == 202


# --- request and response details --------------------------------------------------------------


async def test_a_body_that_is_not_sent_as_json_is_refused_with_400(client: httpx.AsyncClient, shop: durable.App) -> None:
    body = '{"args": ["o-1"], "run_id": "typed"}'
    for headers in [{}, {"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}]:
        response = await client.post("/workflows/order/runs", content=body, headers=headers)
        error(response, 400, "NotJSON", "must be JSON, sent with 'Content-Type: application/json'")
    assert await shop.list_runs() == []  # nothing was done
    sent = await client.post("/workflows/order/runs", content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert sent.status_code == 202
    assert (await client.post("/runs/typed/pause")).status_code == 200  # no body: no Content-Type needed


async def test_every_problem_of_a_request_is_reported(client: httpx.AsyncClient) -> None:
    response = await client.post("/workflows/order/runs", json={"run_id": "", "bogus": 1, "args": "no"})
    error(response, 422, "InvalidRequest", "body.args: Input should be a valid list")
    assert "body.run_id: String should have at least 1 character" in response.json()["detail"]
    assert "body.bogus: Extra inputs are not permitted" in response.json()["detail"]


async def test_a_server_whose_app_is_not_open_answers_503(shop: durable.App) -> None:
    transport = httpx.ASGITransport(app=create_app(shop))  # no lifespan: the App was never opened (or has closed)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        error(await client.get("/runs"), 503, "AppNotOpen")
        error(await client.post("/workflows/hello/runs", json={}), 503, "AppNotOpen")


def test_a_generated_client_names_its_calls_after_the_operations(tmp_path: Path) -> None:
    spec = create_app(build_shop(str(tmp_path / "gen.db"))).openapi()
    operations = sorted(op["operationId"] for path in spec["paths"].values() for op in path.values())
    assert operations == sorted([
        "health", "listWorkflows", "startRun", "listRuns", "getRun", "runEvents", "cancelRun", "sendMessage", "retryRun",
        "forkRun", "pauseRun", "resumeRun", "listPrompts", "answerPrompt", "reassignPrompt", "exportRun", "listQueues",
        "listSchedules", "pauseSchedule", "resumeSchedule", "startHelloRun", "startOrderRun", "startSurveyRun",
    ])  # fmt: skip
    assert spec["components"]["securitySchemes"] == {"HTTPBearer": {"type": "http", "scheme": "bearer"}}
    (tmp_path / "openapi.json").write_text(json.dumps(spec))
    generator = Path(sys.executable).parent / "openapi-python-client"
    done = subprocess.run(
        [str(generator), "generate", "--path", "openapi.json", "--meta", "none", "--output-path", "shop_client"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    modules = {p.stem for p in (tmp_path / "shop_client" / "api" / "default").glob("*.py")} - {"__init__"}
    assert {"start_run", "answer_prompt", "get_run", "list_prompts", "export_run", "start_order_run"} <= modules
    checked = subprocess.run(
        [sys.executable, "-c", "import shop_client.api.default.answer_prompt as m; print(m.sync.__name__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.stdout.strip() == "sync", checked.stderr
