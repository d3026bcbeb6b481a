"""The ``durable`` commands for changing code safely: check, retry, fork, pause, resume, prune.

``check`` imports the App named by ``MODULE:APP`` (it replays runs against that
code); the others open a bare ``App(db)`` and never import workflow code.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import click

from .app import App
from .check import retirable
from .cli_base import (
    Failure, db_given, db_option, durable_errors_exit_1, echo_json, echo_table, json_option, load_app, with_app,
)
from .model import CheckResult
from .store import is_url, redact

__all__ = ["COMMANDS"]

VERDICT_COLOURS = {"ok": "green", "blocked": "magenta", "unknown-workflow": "red"}


@click.command()
@click.argument("app_spec", metavar="MODULE:APP")
@db_option
@click.option("--all", "include_ended", is_flag=True, help="Check every run, also those that ended.")
@json_option
def check(app_spec: str, db: str, include_ended: bool, as_json: bool) -> None:
    """Replay the journal's unfinished runs against the code of MODULE:APP; execute and write nothing.

    One line per run: ok, blocked (at which seq, recorded vs new call) or
    unknown-workflow. Exit 1 unless every run is ok. --db names the journal
    to check (a copy of production's, in CI), whatever path the App opens.
    """
    app = load_app(app_spec, db, any_db=True)
    target = db if db_given() else app.path
    if not is_url(target) and not os.path.exists(target):
        raise Failure(f"No journal at {target!r}. Pass --db PATH or set DURABLE_DB.")

    async def replay() -> list[CheckResult]:
        async with app.reader(target) as reader:
            return await reader.check(include_ended=include_ended)

    with durable_errors_exit_1():
        results = asyncio.run(replay())
    if as_json:
        echo_json(results)
    else:
        echo_table(
            ["VERDICT", "RUN", "WORKFLOW", "SEQ", "DETAIL"],
            [
                [click.style(r.verdict, fg=VERDICT_COLOURS[r.verdict]), r.run_id, r.workflow, "" if r.seq is None else str(r.seq), r.detail]
                for r in results
            ],
        )
        for patch_id, old in retirable(results).items():
            if old:
                click.echo(f"patch {patch_id!r}: {old} run{'s' if old != 1 else ''} still take{'' if old != 1 else 's'} its old path; keep it")
            else:
                click.echo(
                    f"patch {patch_id!r}: no {'' if include_ended else 'unfinished '}run takes its old path; it can be "
                    "retired (keep the new branch, drop the if and the old branch)"
                )
    bad = [r for r in results if r.verdict != "ok"]
    summary = f"{len(results)} run{'s' if len(results) != 1 else ''} checked against {app_spec} in {redact(target)}"
    if bad:
        raise Failure(
            f"{len(bad)} of {summary} would not replay. Deploying this code would block them: "
            "fix the code (or guard the change with ctx.patched), then check again."
        )
    click.echo(f"ok: {summary}", err=True)


@click.command()
@click.argument("run_ids", metavar="[RUN_ID]...", nargs=-1)
@click.option("--status", type=click.Choice(["failed", "blocked"]), help="Retry every run with this status.")
@click.option("--workflow", help="With --status: only runs of this workflow.")
@db_option
def retry(run_ids: tuple[str, ...], status: str | None, workflow: str | None, db: str) -> None:
    """Resume failed or blocked runs (after fixing their code) from where they stopped.

    Each run's failure is set aside (kept, shown by `durable show`) and the
    step that failed runs again; earlier steps replay. A worker with the
    workflow takes each run. Give RUN_IDs, or --status (and --workflow) for all matches.
    """
    if bool(run_ids) == bool(status):
        raise click.UsageError("Give RUN_IDs, or --status failed|blocked (with --workflow to narrow it), not both.")
    if workflow and not status:
        raise click.UsageError("--workflow narrows --status; give --status too.")

    async def go(app: App) -> list[str]:
        chosen = list(run_ids) or [run.run_id for run in await app.list_runs(status=status, workflow=workflow, limit=2**62)]
        for run_id in chosen:
            await app.retry(run_id)
            click.echo(f"retried run {run_id}")
        return chosen

    done = with_app(db, go)
    if status and not done:
        click.echo(f"no {status} runs{f' of workflow {workflow}' if workflow else ''}")


@click.command()
@click.argument("run_id")
@click.option("--at-seq", "at_seq", type=click.IntRange(min=0), required=True, help="Copy the records before this seq.")
@click.option("--run-id", "new_run_id", help="The new run's id (default: a fresh one).")
@db_option
def fork(run_id: str, at_seq: int, new_run_id: str | None, db: str) -> None:
    """Start a new run of RUN_ID's workflow and arguments with a copy of its records before --at-seq."""

    async def go(app: App) -> str:
        return (await app.fork(run_id, at_seq=at_seq, new_run_id=new_run_id)).run_id

    click.echo(f"forked run {run_id} at seq {at_seq} as {with_app(db, go)}")


@click.command()
@click.argument("run_id")
@db_option
def pause(run_id: str, db: str) -> None:
    """Stop a run at its next ctx call and keep it paused (no worker takes it) until `durable resume`."""
    with_app(db, lambda app: app.pause(run_id))
    click.echo(f"paused run {run_id}")


@click.command()
@click.argument("run_id")
@db_option
def resume(run_id: str, db: str) -> None:
    """Let a paused run go on."""
    with_app(db, lambda app: app.resume(run_id))
    click.echo(f"resumed run {run_id}")


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def moment(text: str) -> dt.datetime:
    """A point in time for --since/--until: that long ago ('90m', '2d'), or an ISO 8601 time (UTC if it names none)."""
    try:
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=parse_duration(text))
    except click.BadParameter:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither a duration ago (90m, 2d) nor an ISO time (2026-12-01T09:00).") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def parse_duration(text: str) -> float:
    """'30d', '12h', '90m', '45s', '2w' or plain seconds → seconds."""
    number, unit = (text[:-1], text[-1]) if text and text[-1] in DURATION_UNITS else (text, "s")
    try:
        seconds = float(number) * DURATION_UNITS[unit]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration such as 30d, 12h, 90m or 45s.") from None
    if seconds < 0:
        raise click.BadParameter(f"{text!r}: a duration cannot be negative.")
    return seconds


@click.command()
@click.option("--older-than", "older_than", required=True, metavar="DURATION", help="e.g. 30d, 12h: last updated longer ago.")
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice(["completed", "failed", "cancelled"]),
    help="Only runs that ended so (repeatable; default all three).",
)  # fmt: skip
@db_option
def prune(older_than: str, statuses: tuple[str, ...], db: str) -> None:
    """Delete ended runs last updated more than DURATION ago, with their records; never an unfinished run."""
    seconds = parse_duration(older_than)
    chosen = statuses or ("completed", "failed", "cancelled")
    count = with_app(db, lambda app: app.prune(older_than=seconds, status=chosen))
    click.echo(f"pruned {count} run{'s' if count != 1 else ''} ({', '.join(chosen)}) older than {older_than}")


COMMANDS = [check, retry, fork, pause, resume, prune]
