"""The HTTP API and web page (design §5): FastAPI routes over `App`, with the App's worker inside the server.

    pip install 'durable[server]'
    durable serve shop:app            # http://127.0.0.1:8000, OpenAPI at /openapi.json

Every route calls one or two App methods and holds no logic of its own. Errors
are ``{"error": "<ExceptionName>", "detail": "<message>"}``: 400 malformed JSON,
401 missing token, 404 unknown workflow/run/prompt, 409 conflicts (a second
answer), 413 a body over the limit, 422 invalid arguments, answers or request
shapes, 503 the journal cannot be used for now (StoreUnavailable). When
``DURABLE_TOKEN`` is set, every request needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import inspect
import ipaddress
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any, Literal

import msgspec
import uvicorn
from fastapi import APIRouter, Body, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBearer
from pydantic import AwareDatetime
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from . import http_edges as edges
from .app import STATUSES, App
from .errors import (
    AppNotOpen,
    DurableError,
    EncodingError,
    InvalidAnswer,
    InvalidArguments,
    PromptAlreadyAnswered,
    PromptExpired,
    PromptNotFound,
    RunAlreadyFinished,
    RunExists,
    RunIdInUse,
    RunNotFound,
    SeqOutOfRange,
    StoreUnavailable,
    UnsafeBind,
    WorkflowNotFound,
    WrongRunStatus,
)
from .http_auth import Identity
from .http_auth import router as auth_router
from .http_edges import BodyLimit, QuietDisconnects
from .schedules import ScheduleNotFound
from .tokens import Tokens
from .http_models import (
    Answer, Answered, Cancelled, DurableApp, Export, Fork, Health, MessageIn, PromptOut, QueueOut, Reassign, Reassigned,
    RunId, RunOut, RunStarted, ScheduleOut, Sent, StartRun, WorkflowOut, errors, errors_as_json, out,
)
from .model import Cursor

__all__ = ["UnsafeBind", "create_app", "serve"]


ERROR_STATUS: dict[type[DurableError], int] = {
    WorkflowNotFound: 404,
    RunNotFound: 404,
    PromptNotFound: 404,
    ScheduleNotFound: 404,
    PromptAlreadyAnswered: 409,
    PromptExpired: 409,  # its timeout passed: it takes no answer
    RunIdInUse: 409,
    RunAlreadyFinished: 409,
    WrongRunStatus: 409,  # retry a completed run, resume one that is not paused
    RunExists: 409,
    SeqOutOfRange: 422,
    InvalidAnswer: 422,
    InvalidArguments: 422,
    EncodingError: 422,
    AppNotOpen: 503,  # the server is starting or shutting down: try again in a moment
    StoreUnavailable: 503,  # the journal fails for now (full disk, lock, lost connection): try again later
}



# --- routes ---------------------------------------------------------------------------


# 401 where tokens are set; the bearer scheme is declared for every route (the check itself is http_auth.Identity).
router = APIRouter(responses=errors(401), dependencies=[Depends(HTTPBearer(auto_error=False))])


@router.get("/health", response_model=Health, openapi_extra={"security": []})
async def health() -> Any:
    return Health()


@router.get("/workflows", response_model=list[WorkflowOut])
async def list_workflows(app: DurableApp) -> Any:
    return [
        WorkflowOut(name=name, description=inspect.getdoc(workflow.fn), args_schema=workflow.args_schema())
        for name, workflow in sorted(app.workflows.items())
    ]


@router.post(
    "/workflows/{name}/runs",
    status_code=202,
    response_model=RunStarted,
    responses={200: {"model": RunOut, "description": "The run_id was known: that run."}, **errors(400, 404, 409, 422)},
)
async def start_run(name: str, app: DurableApp, body: Annotated[StartRun | None, Body()] = None) -> Any:
    """Start a run (202); with the run_id of an existing run, resume it if it was interrupted (200)."""
    body = body or StartRun()
    if "run_id" in body.kwargs:
        raise InvalidArguments(name, "'run_id' names the run; pass it beside args and kwargs, not in kwargs")
    handle = await app.start(name, *body.args, run_id=body.run_id, **body.kwargs)
    if not handle.created:
        run = RunOut.model_validate(out(await app.get_run(handle.run_id)))
        return JSONResponse(run.model_dump(mode="json", by_alias=True))
    return RunStarted(run_id=handle.run_id, status=await handle.status())


@router.get("/runs", response_model=list[RunOut], responses=errors(422))
async def list_runs(
    app: DurableApp,
    status: Literal[STATUSES] | None = None,  # type: ignore[valid-type]
    workflow: str | None = None,
    queue: str | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Runs, newest first, without their journals; created at or after `since` and before `until`."""
    return out(await app.list_runs(status=status, workflow=workflow, queue=queue, limit=limit, since=since, until=until))


@router.get("/runs/{run_id}", response_model=RunOut, responses=errors(404, 422))
async def get_run(run_id: RunId, app: DurableApp) -> Any:
    """One run with its journal."""
    return out(await app.get_run(run_id))


async def resume_from(
    run_id: RunId, app: DurableApp, last_event_id: Annotated[str | None, Header()] = None
) -> str | None:
    """Check the run and the Last-Event-ID before the stream starts, while an error can still be a status code."""
    await app.status(run_id)
    try:
        Cursor.parse(last_event_id)
    except ValueError as exc:
        raise HTTPException(400, f"Last-Event-ID: {exc}") from None
    return last_event_id


@router.get(
    "/runs/{run_id}/events",
    response_class=EventSourceResponse,
    responses=errors_as_json(400, 401, 404, 422),
)
async def run_events(
    run_id: RunId, app: DurableApp, after: Annotated[str | None, Depends(resume_from)]
) -> AsyncIterator[ServerSentEvent]:
    """The run's journal as Server-Sent Events, recorded then live; `event: end` once the run has ended.

    Values the run published (ctx.publish) come as `event: published`, messages
    it received (ctx.receive) as `event: received`; every other record as a plain message.

    Each record's `id:` is its cursor: reconnect with `Last-Event-ID` to resume
    without gaps or repeats.
    """
    async with contextlib.aclosing(app.watch(run_id, after=after)) as records:
        async for cursor, record in records:
            # Published values and received messages come as their own event types; other records as messages.
            event = {"publish": "published", "receive": "received"}.get(record.kind)
            yield ServerSentEvent(id=cursor, event=event, raw_data=msgspec.json.encode(record).decode())
    status = await app.status(run_id)
    yield ServerSentEvent(event="end", raw_data=msgspec.json.encode({"run_id": run_id, "status": status}).decode())


@router.post("/runs/{run_id}/cancel", response_model=Cancelled, responses=errors(404, 409, 422))
async def cancel_run(run_id: RunId, app: DurableApp) -> Any:
    """Stop a run for good."""
    await app.cancel(run_id)
    return Cancelled(run_id=run_id)


@router.post("/runs/{run_id}/messages/{topic}", response_model=Sent, status_code=202, responses=errors(400, 404, 409, 422))
async def send_message(run_id: RunId, topic: str, body: MessageIn, app: DurableApp) -> Any:
    """Send the run a message on `topic`, for its next `ctx.receive(topic)`; kept until received, in send order."""
    await app.send(run_id, topic, body.value)
    return Sent(run_id=run_id, topic=topic)


@router.post("/runs/{run_id}/retry", response_model=RunStarted, responses=errors(404, 409))
async def retry_run(run_id: RunId, app: DurableApp) -> Any:
    """Resume a failed or blocked run from where it stopped (after a fix): its failure is set aside, the failed step runs again."""
    await app.retry(run_id)
    return RunStarted(run_id=run_id, status=await app.status(run_id))


@router.post("/runs/{run_id}/fork", response_model=RunStarted, status_code=202, responses=errors(400, 404, 409, 422))
async def fork_run(run_id: RunId, body: Fork, app: DurableApp) -> Any:
    """Start a new run of the same workflow and arguments with a copy of this run's records before `at_seq`."""
    handle = await app.fork(run_id, at_seq=body.at_seq, new_run_id=body.new_run_id)
    return RunStarted(run_id=handle.run_id, status=await app.status(handle.run_id))


@router.post("/runs/{run_id}/pause", response_model=RunStarted, responses=errors(404, 409))
async def pause_run(run_id: RunId, app: DurableApp) -> Any:
    """Stop a run at its next ctx call and keep it paused (no worker takes it) until it is resumed."""
    await app.pause(run_id)
    return RunStarted(run_id=run_id, status=await app.status(run_id))


@router.post("/runs/{run_id}/resume", response_model=RunStarted, responses=errors(404, 409))
async def resume_run(run_id: RunId, app: DurableApp) -> Any:
    """Let a paused run go on."""
    await app.resume(run_id)
    return RunStarted(run_id=run_id, status=await app.status(run_id))


@router.get("/prompts", response_model=list[PromptOut], responses=errors(422))
async def list_prompts(app: DurableApp, run_id: str | None = None, assignee: str | None = None) -> Any:
    """Prompts waiting for an answer, oldest first, each with its answer's schema; of one assignee, or all."""
    return out(await app.prompts(run_id, assignee=assignee))


@router.post("/runs/{run_id}/prompts/{key}", response_model=Answered, responses=errors(400, 404, 409, 422))
async def answer_prompt(run_id: RunId, key: str, body: Answer, app: DurableApp, request: Request) -> Any:
    """Record the answer to a prompt, with who gave it (the token's name) and how; the run moves on."""
    by = request.state.who
    await app.answer(run_id, key, body.value, by=by, via=request.state.via)
    return Answered(run_id=run_id, key=key, value=body.value, by=by)


@router.post("/runs/{run_id}/prompts/{key}/assignee", response_model=Reassigned, responses=errors(400, 404, 409, 422))
async def reassign_prompt(run_id: RunId, key: str, body: Reassign, app: DurableApp, request: Request) -> Any:
    """Give a waiting prompt another assignee (null: nobody), recorded with who did it."""
    await app.reassign(run_id, key, body.assignee, by=request.state.who, via=request.state.via)
    return Reassigned(run_id=run_id, key=key, assignee=body.assignee)


@router.get("/runs/{run_id}/export", response_model=Export, responses=errors(404, 422))
async def export_run(run_id: RunId, app: DurableApp) -> Any:
    """The run, every record, and every answer and reassignment with who, how and when (the audit trail)."""
    return await app.export(run_id)


@router.get("/queues", response_model=list[QueueOut])
async def list_queues(app: DurableApp) -> Any:
    """Each queue with runs that have not ended, or registered on this server's App: its counts and limits."""
    counts = await app.store.queue_counts()
    limits = {name: q.limits._asdict() for name, q in app.queues.items()}
    return [QueueOut(name=name, runs=counts.get(name, {}), **limits.get(name, {})) for name in sorted({*counts, *limits})]


@router.get("/schedules", response_model=list[ScheduleOut])
async def list_schedules(app: DurableApp) -> Any:
    """Every schedule in the store, with its latest slot fired and its next one."""
    return [info._asdict() for info in await app.schedules()]


@router.post("/schedules/{name}/pause", response_model=ScheduleOut, responses=errors(404))
async def pause_schedule(name: str, app: DurableApp) -> Any:
    """Fire no slot of the schedule, in any process, until it is resumed."""
    return (await app.pause_schedule(name))._asdict()


@router.post("/schedules/{name}/resume", response_model=ScheduleOut, responses=errors(404))
async def resume_schedule(name: str, app: DurableApp) -> Any:
    """Fire its slots again from the next one; those that passed while it was paused are skipped."""
    return (await app.resume_schedule(name))._asdict()


WEB = resources.files(__package__) / "web"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> Any:
    return HTMLResponse((WEB / "index.html").read_text(encoding="utf-8"))


# --- errors and security -------------------------------------------------------------


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


async def durable_error(request: Request, exc: Exception) -> JSONResponse:
    status = next((code for cls, code in ERROR_STATUS.items() if isinstance(exc, cls)), 500)
    return error_response(status, type(exc).__name__, str(exc))


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = list(exc.errors())
    bad_json = next((p for p in problems if p.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error", "not JSON")
        return error_response(400, "MalformedJSON", f"The request body is not valid JSON ({reason}). Nothing was done.")
    where = "; ".join(f"{'.'.join(str(part) for part in p.get('loc', ()))}: {p.get('msg')}" for p in problems)
    return error_response(422, "InvalidRequest", f"The request was rejected: {where}. Nothing was done.")


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette still raises the exception afterwards, so it is logged with its traceback.
    return error_response(500, "InternalError", f"The server failed ({type(exc).__name__}); its log says more.")


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    phrase = http.HTTPStatus(exc.status_code).phrase
    return error_response(exc.status_code, phrase.title().replace(" ", ""), str(exc.detail), exc.headers)


class EndStreamsOnShutdown:
    """Once `closing` is set, tell each open request that its client left, so event streams end cleanly."""

    def __init__(self, app: ASGIApp, closing: asyncio.Event) -> None:
        self.app, self.closing = app, closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def receive_until_closing() -> Message:
            message = asyncio.ensure_future(receive())
            closing = asyncio.ensure_future(self.closing.wait())
            try:
                done, _ = await asyncio.wait([message, closing], return_when=asyncio.FIRST_COMPLETED)
            finally:
                closing.cancel()
                if not message.done():
                    message.cancel()
            return message.result() if message in done else {"type": "http.disconnect"}

        await self.app(scope, receive_until_closing, send)


class Server(uvicorn.Server):
    """uvicorn's server, ending event streams as soon as it starts shutting down."""

    def __init__(self, config: uvicorn.Config, closing: asyncio.Event) -> None:
        super().__init__(config)
        self.closing = closing

    async def shutdown(self, sockets: Any = None) -> None:
        # A stream lasts as long as its run: without this, stopping waits for every watched run.
        self.closing.set()
        await super().shutdown(sockets)


# --- the application --------------------------------------------------------------------


def create_app(app: App, *, max_body_bytes: int | None = None) -> FastAPI:
    """The ASGI application serving `app`; its lifespan opens the App, so the worker runs inside the server.

    Reads DURABLE_TOKEN now: when set, every request needs it as a Bearer token.
    Request bodies larger than `max_body_bytes` (default $DURABLE_MAX_BODY_BYTES,
    else 1 MiB) are refused with 413.
    """

    @contextlib.asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        async with app:
            try:
                yield
            finally:
                closing.set()

    # No /docs: FastAPI's Swagger UI loads from a CDN, and everything served here ships in the package.
    api = FastAPI(
        title="durable", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
        generate_unique_id_function=edges.operation_id,  # startRun, answerPrompt: what generated clients call them
    )  # fmt: skip
    api.state.durable = app
    api.state.closing = closing = asyncio.Event()
    api.include_router(router)
    api.include_router(auth_router)
    api.mount("/static", StaticFiles(packages=[(__package__, "web")]), name="static")
    api.add_exception_handler(DurableError, durable_error)
    api.add_exception_handler(RequestValidationError, invalid_request)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(Exception, server_error)
    api.state.tokens = tokens = Tokens.from_env()
    api.add_middleware(Identity, tokens=tokens)
    api.add_middleware(EndStreamsOnShutdown, closing=closing)
    api.add_middleware(BodyLimit, limit=edges.max_body_bytes(max_body_bytes))
    api.add_middleware(QuietDisconnects)

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = edges.with_workflow_routes(FastAPI.openapi(api), app.workflows)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(app: App, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API, the page and the App's worker until interrupted; refuse a public host without a token."""
    if not Tokens.from_env() and not is_loopback(host):
        raise UnsafeBind(host)
    api = create_app(app)
    config = uvicorn.Config(api, host=host, port=port, timeout_graceful_shutdown=10)
    # uvicorn re-raises the Ctrl-C it handled; the server has stopped cleanly by then, like `durable worker`.
    with contextlib.suppress(KeyboardInterrupt):
        Server(config, api.state.closing).run()
