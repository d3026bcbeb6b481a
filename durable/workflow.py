"""A registered workflow: its name, signature, and how its arguments and result are stored."""

from __future__ import annotations

import datetime as dt
import inspect
import typing
from collections.abc import Callable
from typing import Any

import msgspec
import pydantic

from .codec import Codec, decode_any, encode, error_from_json
from .errors import DefinitionError, EncodingError, InvalidArguments, RunCancelled
from .store.base import RunRow

__all__ = ["Workflow", "check_timeout", "ended_outcome"]


class _StoredArgs(msgspec.Struct):
    args: list[msgspec.Raw] = []
    kwargs: dict[str, msgspec.Raw] = {}


_stored_args = msgspec.json.Decoder(_StoredArgs)


class Workflow:
    """An ``async def`` workflow function registered under a name."""

    __slots__ = (
        "args_label", "codecs", "fn", "labels", "name", "positional", "queue", "result_codec", "result_label", "signature",
        "timeout",
    )  # fmt: skip

    def __init__(self, fn: Callable[..., Any], name: str, timeout: float | None = None) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise DefinitionError(
                f"@app.workflow needs an `async def` function, and {getattr(fn, '__qualname__', fn)!r} is not one. "
                "Declare the workflow with `async def name(ctx, ...)`."
            )
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            raise DefinitionError(
                f"Workflow {name!r} must take the durable.Context as its first positional parameter, "
                "as in `async def name(ctx: durable.Context, ...)`."
            )
        try:
            hints = typing.get_type_hints(fn)
        except Exception as exc:
            raise DefinitionError(
                f"The annotations of workflow {name!r} cannot be resolved ({exc}). "
                "Define the annotated types at module level."
            ) from None
        self.fn, self.name = fn, name
        self.queue: str | None = None  # the queue its runs go on by default (@app.workflow(queue=...))
        self.timeout = check_timeout(f"@app.workflow(timeout=...) of {name!r}", timeout)
        self.signature = inspect.Signature(params[1:])
        self.codecs = {p.name: Codec(hints.get(p.name, Any)) for p in params[1:]}
        self.result_codec = Codec(hints.get("return", Any))
        # What its errors name: made once here, not at every start.
        self.labels = {p.name: f"argument {p.name!r} of workflow {name!r}" for p in params[1:]}
        self.args_label, self.result_label = f"the arguments of workflow {name!r}", f"the result of workflow {name!r}"
        # Parameters that all take a positional argument (no *args, **kwargs or keyword-only): a run given one
        # argument for each is bound without inspect (see decode_args).
        simple = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[1:])
        self.positional = [p.name for p in params[1:]] if simple else None

    def encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bytes, tuple[tuple[Any, ...], dict[str, Any]]]:
        """Store a run's arguments, and return them as the workflow will get them (decoded back).

        Raises InvalidArguments or EncodingError before anything is written.
        """
        blob = encode({"args": list(args), "kwargs": kwargs}, self.args_label)
        try:
            return blob, self.decode_args(blob)
        except TypeError as exc:  # they do not fit the signature
            raise InvalidArguments(self.name, str(exc)) from None
        except EncodingError as exc:
            raise InvalidArguments(self.name, exc.reason) from None

    def decode_args(self, blob: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments to call the workflow with, each decoded by its annotation."""
        stored = _stored_args.decode(blob)
        positional, codecs, labels = self.positional, self.codecs, self.labels
        if positional is not None and not stored.kwargs and len(stored.args) == len(positional):
            # What signature.bind would give, without it: one positional argument for each parameter.
            return tuple([codecs[name].decode(raw, labels[name]) for name, raw in zip(positional, stored.args)]), {}
        bound = self.signature.bind(*stored.args, **stored.kwargs)
        for name, raw in bound.arguments.items():
            codec = self.codecs[name]
            what = labels[name]
            kind = self.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                bound.arguments[name] = tuple(codec.decode(v, what) for v in raw)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                bound.arguments[name] = {k: codec.decode(v, what) for k, v in raw.items()}
            else:
                bound.arguments[name] = codec.decode(raw, what)
        return bound.args, bound.kwargs

    def args_schema(self) -> dict[str, Any]:
        """JSON schema of the workflow's keyword arguments (for the HTTP API), definitions at the top."""
        names = [
            name
            for name, param in self.signature.parameters.items()
            if param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
        ]
        try:
            schemas, defs = msgspec.json.schema_components(
                [self.codecs[name].tp for name in names], schema_hook=_pydantic_schema, ref_template="#/$defs/{name}"
            )
        except (TypeError, ValueError):  # a type JSON Schema cannot describe: accept anything there
            schemas, defs = tuple({} for _ in names), {}
        required = [n for n in names if self.signature.parameters[n].default is inspect.Parameter.empty]
        schema: dict[str, Any] = {"type": "object", "properties": dict(zip(names, schemas)), "required": required}
        if defs:
            schema["$defs"] = defs
        return schema


def _pydantic_schema(tp: Any) -> dict[str, Any]:
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return tp.model_json_schema(ref_template="#/$defs/{model}")
    raise NotImplementedError


def ended_outcome(row: RunRow, workflow: Workflow | None) -> Any:
    """The result of an ended (or blocked) run, decoded as `workflow` declares it (as JSON without it); or its error raised."""
    if row.status == "completed":
        if workflow is None:
            return decode_any(row.result)
        return workflow.result_codec.decode(row.result, f"the result of workflow {row.workflow!r}")  # type: ignore[arg-type]
    if row.status == "cancelled":
        raise RunCancelled(row.run_id)
    raise error_from_json(row.error, row.workflow)  # type: ignore[arg-type]


def check_seconds(where: str, value: Any) -> float | None:
    """A call's duration in seconds (a number >= 0, or a timedelta), or None; TypeError otherwise."""
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
        raise TypeError(f"{where} takes seconds >= 0 or a timedelta, not {value!r}.")
    return value


def check_timeout(where: str, timeout: Any) -> float | None:
    """A run's timeout in seconds (a number > 0, or a timedelta), or None; DefinitionError otherwise."""
    if isinstance(timeout, dt.timedelta):
        timeout = timeout.total_seconds()
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise DefinitionError(f"{where} takes seconds > 0 (or a timedelta), not {timeout!r}.")
    return None if timeout is None else float(timeout)
