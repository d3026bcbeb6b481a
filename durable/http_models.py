"""The HTTP API's request and response bodies, and what every route shares (the App, a run's id, error docs)."""

from __future__ import annotations

import http
from typing import Annotated, Any, Literal

import msgspec
from fastapi import Depends, Path, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .app import STATUSES, App

__all__ = [
    "Answer", "Answered", "Cancelled", "DurableApp", "ErrorOut", "Export", "Fork", "MessageIn", "Sent", "Health", "Model", "PromptOut", "QueueOut", "Reassign", "Reassigned", "RecordOut",
    "RequestBody", "RunId", "RunOut", "RunStarted", "ScheduleOut", "StartRun", "WorkflowOut", "errors", "errors_as_json", "out",
]  # fmt: skip


# --- request and response bodies ----------------------------------------------------


class Model(BaseModel):
    # Responses leave out what they do not name, so a field the engine adds later is no error.
    model_config = ConfigDict(populate_by_name=True)


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is refused, not ignored


class ErrorOut(Model):
    error: str = Field(description="The error's name, e.g. PromptAlreadyAnswered.")
    detail: str = Field(description="What happened and what to do next.")


class Health(Model):
    status: Literal["ok"] = "ok"


class WorkflowOut(Model):
    name: str
    description: str | None = None
    args_schema: dict[str, Any] = Field(description="JSON schema of the workflow's keyword arguments.")


class StartRun(RequestBody):
    args: list[Any] = Field(default_factory=list, description="Positional arguments of the workflow.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the workflow.")
    run_id: str | None = Field(default=None, min_length=1, description="Default: a new random id.")


class RunStarted(Model):
    run_id: str
    status: str


class RecordOut(Model):
    seq: int
    kind: str = Field(
        description="step, sleep, ask, receive, now or patch (a ctx.patched marker); 'run' for a set-aside run error."
    )
    name: str = Field(description="The step's name, or the prompt's key.")
    status: str
    value: Any = None
    error: dict[str, Any] | None = None
    attempts: int
    started_at: AwareDatetime
    finished_at: AwareDatetime | None = None
    question: str | None = None
    answer_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    expires_at: AwareDatetime | None = None
    assignee: str | None = Field(default=None, description="A prompt's: whom it is for.")
    by: str | None = Field(default=None, description="An answered prompt's: who answered.")
    via: str | None = Field(default=None, description="... and how: python, cli, http or page.")


class RunOut(Model):
    run_id: str
    workflow: str
    status: str = Field(description=", ".join(STATUSES))
    args: list[Any]
    kwargs: dict[str, Any]
    result: Any = None
    error: dict[str, Any] | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    wake_at: AwareDatetime | None = None
    parent: str | None = Field(default=None, description="The run whose ctx.child started this one.")
    steps: list[RecordOut] = Field(default_factory=list, description="The journal (empty in listings).")
    set_aside: list[RecordOut] = Field(default_factory=list, description="What retries set aside, kept for audit.")


class PromptOut(Model):
    run_id: str
    key: str
    question: str
    answer_schema: dict[str, Any] = Field(alias="schema", description="JSON schema the answer must match.")
    created_at: AwareDatetime
    workflow: str
    seq: int
    expires_at: AwareDatetime | None = Field(default=None, description="When it stops taking answers (its timeout).")
    assignee: str | None = Field(default=None, description="Whom it is for (ctx.ask(assignee=...)).")


class Answer(RequestBody):
    value: Any = Field(description="The answer, any JSON value matching the prompt's schema.")


class MessageIn(RequestBody):
    value: Any = Field(description="The message, any JSON value; the receiving ctx.receive validates it as its type.")


class Sent(Model):
    run_id: str
    topic: str


class Fork(RequestBody):
    at_seq: int = Field(ge=0, description="Copy the records before this seq; the fork executes from there.")
    new_run_id: str | None = Field(default=None, min_length=1, description="Default: a new random id.")


class Answered(Model):
    run_id: str
    key: str
    value: Any = None
    by: str | None = Field(default=None, description="Who answered: the name of the request's token or session.")


class Reassign(RequestBody):
    assignee: str | None = Field(min_length=1, description="Whom the prompt is for now; null: nobody.")


class Reassigned(Model):
    run_id: str
    key: str
    assignee: str | None = None


class LogEntryOut(Model):
    seq: int
    key: str
    action: Literal["answered", "reassigned"]
    value: Any = None
    by: str | None = None
    via: Literal["python", "cli", "http", "page"]
    at: AwareDatetime


class Export(Model):
    run: RunOut
    prompt_log: list[LogEntryOut] = Field(description="Every answer and reassignment, in the order recorded; never changed.")


class QueueOut(Model):
    name: str
    runs: dict[str, int] = Field(description="Its runs that have not ended, by status (pending: waiting for a place).")
    concurrency: int | None = Field(default=None, description="Its limits, where this server's App registers it.")
    worker_concurrency: int | None = None
    key_concurrency: int | None = None
    rate: tuple[int, float] | None = Field(default=None, description="(n, seconds): at most n starts per window.")


class ScheduleOut(Model):
    name: str
    workflow: str
    cron: str
    timezone: str
    paused: bool
    last: AwareDatetime | None = Field(default=None, description="The latest slot fired.")
    next: AwareDatetime | None = Field(default=None, description="The next slot to fire (none while paused).")


class Cancelled(Model):
    run_id: str
    status: Literal["cancelled"] = "cancelled"


def out(value: Any) -> Any:
    """A msgspec Struct (or list of them) as plain JSON types, for a pydantic response model to check."""
    return msgspec.to_builtins(value)




def durable_app(request: Request) -> App:
    return request.app.state.durable


DurableApp = Annotated[App, Depends(durable_app)]
RunId = Annotated[str, Path(description="The run's id.")]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI of a route's error responses."""
    return {code: {"model": ErrorOut, "description": http.HTTPStatus(code).phrase} for code in codes}


def errors_as_json(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The same for an event stream, whose errors are JSON too (FastAPI would say text/event-stream)."""
    schema = {"$ref": "#/components/schemas/ErrorOut"}
    return {
        code: {"description": http.HTTPStatus(code).phrase, "content": {"application/json": {"schema": schema}}}
        for code in codes
    }
