"""The commands for queues and schedules: ``durable submit`` (a run from the command line, no Python),
``durable queues`` and ``durable schedules`` (list, pause, resume)."""

from __future__ import annotations

from typing import Any

import click

from .schedules import ScheduleInfo
from .cli_base import db_option, echo_json, echo_table, json_option, json_or_text, with_app

__all__ = ["COMMANDS"]


@click.command()
@click.argument("workflow")
@click.argument("args", required=False)
@click.option("--run-id", help="The run's id (default: a new one). A run already stored under it is left as it is.")
@click.option("--queue", help="The queue to put it on (default: none, or the workflow's own where it is registered).")
@click.option("--key", help="Its key on the queue (see key_concurrency).")
@click.option("--delay", type=click.FloatRange(min=0), help="Seconds to wait before it may start.")
@click.option("--priority", type=int, default=0, show_default=True, help="Runs of higher priority start first.")
@click.option("--debounce", type=click.FloatRange(min=0), help="Start once no submit of --key came for this many seconds.")
@db_option
def submit(workflow: str, args: str | None, run_id: str | None, queue: str | None, key: str | None,
           delay: float | None, priority: int, debounce: float | None, db: str) -> None:  # fmt: skip
    """Record a run of WORKFLOW as pending, for any worker that has it; ARGS is a JSON list (or object: keyword arguments)."""
    parsed = [] if args is None else json_or_text(args)
    if isinstance(parsed, dict):
        positional, named = [], parsed
    elif isinstance(parsed, list):
        positional, named = parsed, {}
    else:
        raise click.UsageError(f"ARGS is a JSON list of arguments or an object of keyword arguments, not {args!r}.")
    handle = with_app(db, lambda app: app.submit(
        workflow, *positional, run_id=run_id, queue=queue, key=key, delay=delay, priority=priority, debounce=debounce,
        **named,
    ))  # fmt: skip
    where = f", queue {queue}" if queue else ""
    click.echo(f"submitted {handle.run_id} ({workflow}{where})" if handle.created else f"{handle.run_id} exists already; left as it is")


@click.command()
@json_option
@db_option
def queues(as_json: bool, db: str) -> None:
    """Each queue's runs that have not ended, by status (pending: waiting for a place; running: executing)."""
    counts = with_app(db, lambda app: app.store.queue_counts(), read_only=True)
    if as_json:
        echo_json(counts)
    elif not counts:
        click.echo("no queued runs")
    else:
        rows = [[name, ", ".join(f"{n} {status}" for status, n in sorted(by.items()))] for name, by in sorted(counts.items())]
        echo_table(["queue", "runs"], rows)


def _shown(info: ScheduleInfo) -> dict[str, Any]:
    when = lambda t: None if t is None else t.isoformat(timespec="seconds").replace("+00:00", "Z")  # noqa: E731
    return {**info._asdict(), "last": when(info.last), "next": when(info.next)}


@click.group(invoke_without_command=True)
@json_option
@db_option
@click.pass_context
def schedules(ctx: click.Context, as_json: bool, db: str) -> None:
    """Each schedule in the store: its cron, its latest slot fired and its next one; pause or resume one."""
    if ctx.invoked_subcommand is not None:
        return
    found = [_shown(info) for info in with_app(db, lambda app: app.schedules(), read_only=True)]
    if as_json:
        echo_json(found)
    elif not found:
        click.echo("no schedules (an App registers its own when it opens)")
    else:
        echo_table(["schedule", "cron", "timezone", "last", "next"], [
            [s["name"], s["cron"], s["timezone"], s["last"] or "-", "paused" if s["paused"] else s["next"]] for s in found
        ])  # fmt: skip


@schedules.command("pause")
@click.argument("name")
@db_option
def pause_schedule(name: str, db: str) -> None:
    """Fire no slot of schedule NAME, in any process, until it is resumed."""
    with_app(db, lambda app: app.pause_schedule(name))
    click.echo(f"paused schedule {name}")


@schedules.command("resume")
@click.argument("name")
@db_option
def resume_schedule(name: str, db: str) -> None:
    """Fire the slots of schedule NAME again, from its next one (those passed while paused are skipped)."""
    info = with_app(db, lambda app: app.resume_schedule(name))
    click.echo(f"resumed schedule {name}; next slot {_shown(info)['next']}")


@schedules.command("remove")
@click.argument("name")
@db_option
def remove_schedule(name: str, db: str) -> None:
    """Forget schedule NAME, which the code no longer has (its runs stay; an App that still has it adds it back)."""
    with_app(db, lambda app: app.remove_schedule(name))
    click.echo(f"removed schedule {name}")


COMMANDS = [submit, queues, schedules]
