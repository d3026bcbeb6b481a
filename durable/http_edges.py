"""The edges of the HTTP API: request bodies (their size, each workflow's schema), and clients that leave.

A request body is read whole before it reaches a route (the API takes small
JSON documents): past the limit the request is refused with 413 and never
reaches the App. The limit is ``create_app(app, max_body_bytes=...)``, else
``$DURABLE_MAX_BODY_BYTES``, else 1 MiB.

The OpenAPI document publishes, besides ``POST /workflows/{name}/runs``, one
path per registered workflow whose request body is that workflow's own
argument schema, so a schema-driven client sends what the server accepts.

A client that goes away in the middle of an event stream is normal (a page
closed, a network change): what the server then fails to send to it is
logged at DEBUG, never as an error with a traceback.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DEFAULT_MAX_BODY_BYTES", "BodyLimit", "QuietDisconnects", "camel", "max_body_bytes", "operation_id", "with_workflow_routes",
]  # fmt: skip

log = logging.getLogger("durable")

DEFAULT_MAX_BODY_BYTES = 1 << 20
ENV = "DURABLE_MAX_BODY_BYTES"


def max_body_bytes(given: int | None) -> int:
    """The limit in force: the argument, else the environment, else the default."""
    if given is not None:
        return given
    text = os.environ.get(ENV)
    if not text:
        return DEFAULT_MAX_BODY_BYTES
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"${ENV} must be a whole number of bytes, not {text!r}") from None
    if value < 1:
        raise ValueError(f"${ENV} must be at least 1, not {value}")
    return value


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {
            "error": "RequestTooLarge",
            "detail": f"The request body is larger than {limit:,} bytes, the limit of this server "
            f"(${ENV}). Nothing was done; send a smaller body.",
        },
        status_code=413,
    )


# The page's sign-in and sign-out are HTML forms (application/x-www-form-urlencoded), not JSON.
FORM_PATHS = frozenset({"/login", "/logout"})


class BodyLimit:
    """Refuse (413) a request whose body is larger than `limit` bytes, declared or as sent; and (400) one not JSON."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)  # a disconnect: let the route see it
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
        if body and not _json(Headers(scope=scope).get("content-type", "")) and scope["path"] not in FORM_PATHS:
            await _not_json(Headers(scope=scope).get("content-type"))(scope, receive, send)
            return
        await self.app(scope, _replay([{"type": "http.request", "body": bytes(body), "more_body": False}], receive), send)


def _json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _not_json(given: str | None) -> JSONResponse:
    sent = f"it came as {given!r}" if given else "it came without a Content-Type"
    detail = f"The request body must be JSON, sent with 'Content-Type: application/json' ({sent}). Nothing was done."
    return JSONResponse({"error": "NotJSON", "detail": detail}, status_code=400)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        if then is not None:
            return await then()  # after the body: a disconnect, when the client leaves
        return {"type": "http.disconnect"}

    return receive


def _gone(exc: BaseException) -> bool:
    """Whether an error only says that the client has gone (every leaf of a group, too)."""
    import anyio

    if isinstance(exc, BaseExceptionGroup):
        return all(_gone(inner) for inner in exc.exceptions)
    return isinstance(exc, (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError))


class QuietDisconnects:
    """Log at DEBUG, and swallow, what a request fails to send to a client that has gone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            if scope["type"] != "http" or not _gone(exc):
                raise
            log.debug("client left %s %s: %s", scope.get("method"), scope.get("path"), type(exc).__name__)


def camel(name: str) -> str:
    """A route's operationId as generated clients name their functions well: start_run -> startRun."""
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def operation_id(route: Any) -> str:
    return camel(route.name)


def with_workflow_routes(schema: dict[str, Any], workflows: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with a `POST /workflows/<name>/runs` of each workflow, its arguments' schema as body."""
    generic = schema["paths"].get("/workflows/{name}/runs", {}).get("post")
    if generic is None:
        return schema
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, workflow in sorted(workflows.items()):
        kwargs = copy.deepcopy(workflow.args_schema())
        defs = kwargs.pop("$defs", {})
        prefix = f"{name}_".replace("/", "_")
        for def_name, definition in defs.items():
            components[prefix + def_name] = definition
        kwargs = _rename_refs(kwargs, prefix)
        for def_name in defs:
            components[prefix + def_name] = _rename_refs(components[prefix + def_name], prefix)
        # A parameter may come by position or by name, so none is required in either part:
        # arguments that do not bind are answered with 422, as the generic operation says.
        required = kwargs.pop("required", [])
        positional = [
            p.name for p in workflow.signature.parameters.values()
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]  # fmt: skip
        body = {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                # By position: each item one of the positional parameters' schemas (in order, as the description says).
                "args": {
                    "type": "array",
                    "maxItems": len(positional),
                    **({"items": {"anyOf": [kwargs["properties"][p] for p in positional]}} if positional else {}),
                    "description": "In this order: " + ", ".join(positional) if positional else "None: it takes no arguments.",
                },
                "kwargs": {**kwargs, "additionalProperties": False},
                "run_id": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "null"}]},
            },
            "description": f"Arguments of workflow {name!r}" + (f"; required: {', '.join(required)}" if required else ""),
        }
        operation = copy.deepcopy(generic)
        operation["operationId"] = camel(f"start_{prefix}run")
        operation["summary"] = f"Start a run of {name}"
        operation["parameters"] = [p for p in operation.get("parameters", []) if p.get("name") != "name"]
        operation["requestBody"] = {"content": {"application/json": {"schema": body}}, "required": False}
        schema["paths"][f"/workflows/{name}/runs"] = {"post": operation}
    return schema


def _rename_refs(node: Any, prefix: str) -> Any:
    if isinstance(node, dict):
        return {
            k: (f"#/components/schemas/{prefix}{v.rsplit('/', 1)[-1]}" if k == "$ref" and v.startswith("#/$defs/") else _rename_refs(v, prefix))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rename_refs(item, prefix) for item in node]
    return node
