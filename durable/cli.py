"""The ``durable`` command: inspect runs, answer prompts, cancel runs, run a worker.

Inspecting, answering and cancelling open a bare ``App(db)`` with no workflows,
so they never import workflow code. ``worker`` and ``serve`` import the App
named by ``MODULE:APP``, the way uvicorn does. Errors print ``error: <message>``
on stderr and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import asyncio
import importlib
import signal

import click

from . import __version__
from .app import STATUSES, App
from .cli_base import (
    STALE_PENDING_SECONDS, Failure, ago, db_option, durable_errors_exit_1, echo_json, echo_table, error_text, expects,
    instant, json_option, json_or_text, load_app, logging_to_stderr, plain, record_value, since, since_seconds,
    styled_status, with_app,
)
from .cli_change import COMMANDS, moment
from .cli_inbox import COMMANDS as INBOX_COMMANDS
from .cli_queues import COMMANDS as QUEUE_COMMANDS
from .model import Record, Run
from .store import redact

__all__ = ["ago", "expects", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="durable")
def main() -> None:
    """Inspect durable runs, answer their prompts, and run workers."""


@main.command()
@click.option("--status", "statuses", type=click.Choice(STATUSES), multiple=True, help="Only runs with this status (repeat it for several).")
@click.option("--workflow", help="Only runs of this workflow.")
@click.option("--queue", help="Only runs on this queue.")
@click.option("--since", "after", metavar="WHEN", help="Only runs created since then: a duration ago (90m, 2d) or an ISO time.")
@click.option("--until", "before", metavar="WHEN", help="Only runs created before then: a duration ago or an ISO time.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many runs.")
@json_option
@db_option
def runs(statuses: tuple[str, ...], workflow: str | None, queue: str | None, after: str | None, before: str | None,
         limit: int, as_json: bool, db: str) -> None:  # fmt: skip
    """List runs, newest first."""
    window = [None if w is None else moment(w) for w in (after, before)]
    found: list[Run] = with_app(db, lambda app: app.list_runs(
        status=statuses or None, workflow=workflow, limit=limit + 1, queue=queue, since=window[0], until=window[1],
    ), read_only=True)  # fmt: skip
    cut = len(found) > limit
    found = found[:limit]
    if cut:  # on stderr: the output itself stays what it says (a table, or JSON)
        click.echo(f"note: the newest {limit} runs are shown and more match; pass --limit to see more.", err=True)
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
@click.option("--follow", "-f", is_flag=True, help="Then print each record as it comes, until the run ends (as tail -f).")
@click.option("--verbose", "-v", is_flag=True, help="Print the traceback of each error too.")
@json_option
@db_option
def show(run_id: str, follow: bool, verbose: bool, as_json: bool, db: str) -> None:
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
    if run.parent is not None:
        fields.append(("parent", run.parent))
    if run.status == "completed":
        fields.append(("result", plain(run.result)))
    if run.error is not None:
        fields.append(("error", error_text(run.error)))
        fields += [("", f"caused by {cause}") for cause in run.error.get("causes") or ()]
    if run.wake_at is not None and run.status == "sleeping":
        fields.append(("wakes", instant(run.wake_at)))
    fields += [("created", instant(run.created_at)), ("updated", instant(run.updated_at))]
    for name, text in fields:
        click.echo(f"{name:<10}{text}")
    click.echo()
    if not run.steps and not follow:
        click.echo("no journal records")
        return
    rows = [
        [str(r.seq), r.kind, r.name, styled_status(r.status), str(r.attempts), record_value(r)]
        for r in run.steps
    ]
    echo_table(["seq", "kind", "name", "status", "attempts", "value"], rows)
    failed = [r for r in run.steps if r.error is not None]
    for record in failed:
        click.echo(f"\nseq {record.seq} {record.name} failed: {error_text(record.error)}")  # type: ignore[arg-type]
        for cause in record.error.get("causes") or ():  # type: ignore[union-attr]
            click.echo(f"  caused by {cause}")
        if verbose and record.error.get("traceback"):  # type: ignore[union-attr]
            click.echo("\n".join("  " + line for line in record.error["traceback"].rstrip().splitlines()))  # type: ignore[index]
    if verbose and run.error is not None and run.error.get("traceback"):
        click.echo("\nthe run's error:\n" + "\n".join("  " + line for line in run.error["traceback"].rstrip().splitlines()))
    if run.set_aside:
        click.echo()
        click.echo("set aside by retries (kept, not replayed):")
        echo_table(
            ["seq", "kind", "name", "status", "at", "error"],
            [
                ["" if r.seq < 0 else str(r.seq), r.kind, r.name, styled_status(r.status), instant(r.finished_at or r.started_at), record_value(r)]
                for r in run.set_aside
            ],
        )
    if follow:
        with_app(db, lambda app: follow_run(app, run_id, {r.seq: r for r in run.steps}), read_only=True)


async def follow_run(app: App, run_id: str, shown: dict[int, Record]) -> None:
    """Print each record that is new or changed since `shown`, as it comes, then how the run ended."""
    async for _, record in app.watch(run_id):
        if shown.get(record.seq) == record:
            continue
        shown[record.seq] = record
        status = styled_status(record.status) + " " * max(1, 11 - len(record.status))  # its colour codes take no width
        click.echo(f"{record.seq:<5}{record.kind:<6}{record.name:<12}{status}{record_value(record)}")
    click.echo(f"run {run_id} ended: {styled_status(await app.status(run_id))}")


@main.command()
@click.argument("run_id")
@click.argument("topic")
@click.argument("value")
@db_option
def send(run_id: str, topic: str, value: str, db: str) -> None:
    """Send run RUN_ID a message on TOPIC: VALUE (JSON, else taken as a plain string), for its ctx.receive(TOPIC)."""
    parsed = json_or_text(value)
    with_app(db, lambda app: app.send(run_id, topic, parsed))
    click.echo(f"sent run {run_id} a message on {topic}")


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


for command in COMMANDS + INBOX_COMMANDS + QUEUE_COMMANDS:
    main.add_command(command)
