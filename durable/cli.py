"""The ``durable`` command: inspect runs, answer prompts, cancel runs, run a worker.

Inspecting, answering and cancelling open a bare ``App(db)`` with no workflows,
so they never import workflow code. ``worker`` and ``serve`` import the App
named by ``MODULE:APP``, the way uvicorn does. Errors print ``error: <message>``
on stderr and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import click
import msgspec

from . import __version__
from .app import STATUSES, App
from .errors import DurableError, InvalidAnswer
from .model import Prompt, Record, Run
from .store import is_url, redact

__all__ = ["main"]

T = TypeVar("T")

PREVIEW_CHARS = 60
STALE_PENDING_SECONDS = 10  # a pending run older than this is waiting for a worker that has its workflow
STATUS_COLOURS = {
    "pending": "white",
    "running": "blue",
    "sleeping": "cyan",
    "waiting": "yellow",
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
    if record.kind == "ask":
        question = record.question or ""
        return preview(question if record.status != "answered" else f"{question} → {plain(record.value)}")
    return "" if record.value is None else preview(record.value)


# --- inspecting and answering: a bare App, no workflow code ------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="durable")
def main() -> None:
    """Inspect durable runs, answer their prompts, and run workers."""


@main.command()
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--workflow", help="Only runs of this workflow.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many runs.")
@json_option
@db_option
def runs(status: str | None, workflow: str | None, limit: int, as_json: bool, db: str) -> None:
    """List runs, newest first."""
    found: list[Run] = with_app(
        db, lambda app: app.list_runs(status=status, workflow=workflow, limit=limit), read_only=True
    )
    if as_json:
        echo_json(found)
    elif not found:
        click.echo("no runs")
    else:
        echo_table(
            ["run_id", "workflow", "status", "created", "updated"],
            [[r.run_id, r.workflow, styled_status(r.status), since(r.created_at), since(r.updated_at)] for r in found],
        )
        stale = sorted({r.workflow for r in found if r.status == "pending" and since_seconds(r.updated_at) > STALE_PENDING_SECONDS})
        if stale:
            click.echo(
                f"\nnote: runs of {', '.join(repr(w) for w in stale)} have been pending for over "
                f"{STALE_PENDING_SECONDS} s: no worker with that workflow has taken them. "
                "Start one: durable worker MODULE:APP (an App that registers the workflow)."
            )


@main.command()
@click.argument("run_id")
@json_option
@db_option
def show(run_id: str, as_json: bool, db: str) -> None:
    """Show one run and its journal."""
    run: Run = with_app(db, lambda app: app.get_run(run_id), read_only=True)
    if as_json:
        echo_json(run)
        return
    fields = [
        ("run_id", run.run_id),
        ("workflow", run.workflow),
        ("status", styled_status(run.status)),
        ("args", plain(run.args)),
    ]
    if run.kwargs:
        fields.append(("kwargs", plain(run.kwargs)))
    if run.status == "completed":
        fields.append(("result", plain(run.result)))
    if run.error is not None:
        fields.append(("error", error_text(run.error)))
    if run.wake_at is not None and run.status == "sleeping":
        fields.append(("wakes", instant(run.wake_at)))
    fields += [("created", instant(run.created_at)), ("updated", instant(run.updated_at))]
    for name, text in fields:
        click.echo(f"{name:<10}{text}")
    click.echo()
    if not run.steps:
        click.echo("no journal records")
        return
    rows = [
        [str(r.seq), r.kind, r.name, styled_status(r.status), str(r.attempts), record_value(r)]
        for r in run.steps
    ]
    echo_table(["seq", "kind", "name", "status", "attempts", "value"], rows)


@main.command()
@json_option
@db_option
def prompts(as_json: bool, db: str) -> None:
    """List prompts waiting for an answer, oldest first."""
    pending: list[Prompt] = with_app(db, lambda app: app.prompts(), read_only=True)
    if as_json:
        echo_json(pending)
    elif not pending:
        click.echo("no pending prompts")
    else:
        rows = [[p.run_id, p.key, preview(p.question), expects(p.schema), since(p.created_at)] for p in pending]
        echo_table(["run_id", "key", "question", "expects", "age"], rows)


@main.command()
@click.argument("run_id")
@click.argument("key")
@click.argument("value")
@db_option
def answer(run_id: str, key: str, value: str, db: str) -> None:
    """Answer prompt KEY of run RUN_ID with VALUE (JSON, else taken as a plain string)."""
    try:
        parsed: Any = msgspec.json.decode(value)
    except msgspec.DecodeError:
        parsed = value

    async def give(app: App) -> None:
        try:
            await app.answer(run_id, key, parsed)
        except InvalidAnswer as exc:
            if isinstance(parsed, str):
                raise
            # VALUE read as JSON (a number, true, null...): the user may have meant the text.
            raise Failure(
                f"{exc} VALUE {value} was read as JSON; to answer the text {value!r}, quote it: '\"{value}\"'."
            ) from None

    with_app(db, give)
    click.echo(f"answered {key} of run {run_id}")


@main.command()
@db_option
def doctor(db: str) -> None:
    """Check the journal: the store's integrity check, every run's record count, every stored value (exit 1 on findings)."""
    findings: list[str] = with_app(db, lambda app: app.verify(), read_only=True)
    where = redact(db)
    if not findings:
        click.echo(f"{where}: ok (integrity check passed; every run has all the records it committed; every value reads)")
        return
    for finding in findings:
        click.echo(f"{where}: {finding}")
    raise Failure(
        f"{len(findings)} finding{'s' if len(findings) != 1 else ''} in {where}: the journal is damaged. "
        "Stop every process that uses it and restore it from a backup; runs that lost records stay blocked "
        "rather than run completed steps again."
    )


@main.command()
@click.argument("run_id")
@db_option
def cancel(run_id: str, db: str) -> None:
    """Cancel a run for good."""
    with_app(db, lambda app: app.cancel(run_id))
    click.echo(f"cancelled run {run_id}")


# --- running workflow code: import MODULE:APP ---------------------------------------


def load_app(spec: str, db: str) -> App:
    """Import the App named by 'module:attribute' (the current directory first on sys.path)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{spec!r} is not MODULE:APP, e.g. shop:app.", param_hint="MODULE:APP")
    # A --db given on the command line is what App() without a path opens.
    explicit_db = click.get_current_context().get_parameter_source("db") == click.core.ParameterSource.COMMANDLINE
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
    if explicit_db and _same_target(obj.path, db) is False:
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


async def work(app: App) -> None:
    """Run the App's worker until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread: Ctrl-C still works
            pass
    async with app:
        workflows = ", ".join(sorted(app.workflows)) or "none"
        click.echo(f"worker started on {app.path}; workflows: {workflows}", err=True)
        await stop.wait()
        click.echo("worker stopping: letting steps in flight finish", err=True)
    click.echo("worker stopped", err=True)


@main.command()
@click.argument("app_spec", metavar="MODULE:APP")
@db_option
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="At most this many runs resumed at once (default: the App's max_concurrent_runs, 100).",
)
def worker(app_spec: str, db: str, concurrency: int | None) -> None:
    """Run the worker of MODULE:APP until interrupted: resume due, answered and orphaned runs."""
    app = load_app(app_spec, db)
    if concurrency is not None:
        app.max_concurrent_runs = concurrency
    with logging_to_stderr(), durable_errors_exit_1():
        asyncio.run(work(app))


@main.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to bind.")
@db_option
def serve(app_spec: str, host: str, port: int, db: str) -> None:
    """Serve the HTTP API and web page of MODULE:APP, with its worker."""
    try:
        http = importlib.import_module("durable.http")
    except ModuleNotFoundError as exc:
        if exc.name != "durable.http" and (exc.name or "").partition(".")[0] not in ("fastapi", "uvicorn", "starlette"):
            raise
        raise Failure("durable serve needs the server extra: pip install 'durable[server]'") from None
    app = load_app(app_spec, db)
    # The HTTP module (a later change) provides serve(app, host=..., port=...): API, page and worker.
    with logging_to_stderr(), durable_errors_exit_1():
        http.serve(app, host=host, port=port)
