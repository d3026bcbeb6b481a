"""What every ``durable`` command shares: options, opening an App, errors as exit 1, formatting, MODULE:APP."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import click
import msgspec

from .app import App
from .errors import DurableError
from .model import Record
from .store import is_url

__all__ = ["Failure", "db_given", "db_option", "durable_errors_exit_1", "echo_json", "json_or_text", "echo_table", "json_option", "load_app", "logging_to_stderr", "with_app"]

T = TypeVar("T")

PREVIEW_CHARS = 60
STALE_PENDING_SECONDS = 10  # a pending run older than this is waiting for a worker that has its workflow
STATUS_COLOURS = {
    "pending": "white",
    "running": "blue",
    "sleeping": "cyan",
    "waiting": "yellow",
    "paused": "bright_yellow",
    "blocked": "magenta",
    "completed": "green",
    "failed": "red",
    "cancelled": "bright_black",
}


class Failure(click.ClickException):
    """An error the user can act on: ``error: <message>`` on stderr, exit 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


def db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        default="durable.db",
        envvar="DURABLE_DB",
        show_default=True,
        show_envvar=True,
        type=click.Path(dir_okay=False),
        help="The journal: a file (SQLite) or a postgresql:// URL.",
    )(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


@contextlib.contextmanager
def durable_errors_exit_1() -> Iterator[None]:
    try:
        yield
    except DurableError as exc:
        raise Failure(str(exc)) from None


def with_app(db: str, operation: Callable[[App], Awaitable[T]], read_only: bool = False) -> T:
    """Open a bare App on `db`, await `operation(app)`, close it; a DurableError becomes exit 1.

    `read_only` opens the journal without writing to it, as the inspecting commands do
    (so they work on a read-only file, and never wait for a writer's lock).
    """
    # Opening an App creates the file; a mistyped --db must not leave an empty journal behind.
    if not is_url(db) and not os.path.exists(db):
        raise Failure(f"No journal at {db!r}. Pass --db PATH or set DURABLE_DB.")

    async def run() -> T:
        async with App(db, read_only=read_only) as app:
            return await operation(app)

    with durable_errors_exit_1():
        return asyncio.run(run())


# --- formatting ---------------------------------------------------------------


def json_or_text(value: str) -> Any:
    """A command-line VALUE: parsed as JSON, falling back to the plain string."""
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError:
        return value


def echo_json(value: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def echo_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print left-aligned columns; cells may be styled (their escapes take no width)."""
    widths = [max([len(h)] + [len(click.unstyle(row[i])) for row in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = (cell + " " * (width - len(click.unstyle(cell))) for cell, width in zip(cells, widths))
        return "  ".join(padded).rstrip()

    click.echo(line([h.upper() for h in headers]))
    for row in rows:
        click.echo(line(row))


def styled_status(status: str) -> str:
    # click.echo drops the colour when stdout is not a terminal.
    return click.style(status, fg=STATUS_COLOURS.get(status))


def ago(seconds: float) -> str:
    """A duration as a person says it: '3s ago', '2m ago', '5h ago', '4d ago' ('in 3m' ahead)."""
    n = abs(int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if n >= size:
            text = f"{n // size}{unit}"
            break
    else:
        text = f"{n}s"
    return f"in {text}" if seconds < 0 else f"{text} ago"


def since(at: dt.datetime) -> str:
    return ago(since_seconds(at))


def since_seconds(at: dt.datetime) -> float:
    return time.time() - at.timestamp()


def instant(at: dt.datetime) -> str:
    return f"{at.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC ({since(at)})"


def preview(value: Any) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def error_text(error: dict[str, Any]) -> str:
    """A stored error as 'ValueError: message' (module-qualified unless a builtin)."""
    type_name = str(error.get("type", "Exception")).removeprefix("builtins:").replace(":", ".")
    return f"{type_name}: {error.get('message', '')}"


def expects(schema: dict[str, Any]) -> str:
    """What a prompt's JSON schema accepts, in a few words: 'boolean', 'one of: a, b', 'object'."""
    defs = schema.get("$defs", {})

    def describe(node: dict[str, Any], seen: frozenset[str]) -> str:
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name in seen or name not in defs:
                return "object"
            return describe(defs[name], seen | {name})
        if "enum" in node:
            return "one of: " + ", ".join(plain(v) for v in node["enum"])
        if "const" in node:
            return f"exactly {plain(node['const'])}"
        for key in ("anyOf", "oneOf"):
            if key in node:
                return " or ".join(describe(option, seen) for option in node[key])
        kind = node.get("type")
        if isinstance(kind, list):
            return " or ".join(kind)
        if kind == "array" and isinstance(node.get("items"), dict):
            return f"array of {describe(node['items'], seen)}"
        if kind == "string" and "format" in node:
            return f"string ({node['format']})"
        return kind or "any"

    return describe(schema, frozenset())


def plain(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def record_value(record: Record) -> str:
    if record.error is not None:
        return preview(error_text(record.error))
    if record.kind == "child":
        outcome = f" → {plain(record.value)}" if record.status == "completed" else ""
        return preview(f"run {record.question}{outcome}")
    if record.kind == "ask":
        question = record.question or ""
        if record.status != "answered":
            return preview(question) + (f"  [for {record.assignee}]" if record.assignee else "")
        by = f"{record.by}, {record.via}" if record.by else record.via
        at = "" if record.finished_at is None else f", {record.finished_at:%Y-%m-%d %H:%M:%S} UTC"
        return preview(f"{question} → {plain(record.value)}") + (f"  [by {by}{at}]" if by else "")
    return "" if record.value is None else preview(record.value)


# --- inspecting and answering: a bare App, no workflow code ------------------------


# --- running workflow code: import MODULE:APP ---------------------------------------


def db_given() -> bool:
    """Whether --db was given on the command line (not taken from $DURABLE_DB or the default)."""
    return click.get_current_context().get_parameter_source("db") == click.core.ParameterSource.COMMANDLINE


def load_app(spec: str, db: str, any_db: bool = False) -> App:
    """Import the App named by 'module:attribute' (the current directory first on sys.path).

    `any_db`: the command opens --db itself (a copy of the App's journal), whatever path the App names.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{spec!r} is not MODULE:APP, e.g. shop:app.", param_hint="MODULE:APP")
    # A --db given on the command line is what App() without a path opens.
    explicit_db = db_given()
    if explicit_db:
        os.environ["DURABLE_DB"] = db
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name and not module_name.startswith(f"{exc.name}."):
            raise  # the module exists but imports something missing: show the traceback
        raise Failure(f"Cannot import module {module_name!r}: {exc}. Run from the directory that holds it.") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise Failure(f"Module {module_name!r} has no attribute {attribute!r}.")
        obj = getattr(obj, part)
    if not isinstance(obj, App):
        raise Failure(f"{spec} is a {type(obj).__name__}, not a durable.App.")
    if explicit_db and not any_db and _same_target(obj.path, db) is False:
        raise Failure(
            f"{spec} opens the journal {obj.path!r}, not --db {db!r}. "
            "Drop --db, or create the App without a path so that --db chooses it."
        )
    return obj


def _same_target(a: str, b: str) -> bool:
    if is_url(a) or is_url(b):
        return a == b
    return os.path.abspath(a) == os.path.abspath(b)


@contextlib.contextmanager
def logging_to_stderr() -> Iterator[None]:
    """Send the durable logger's INFO lines to stderr while the block runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("durable")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)


