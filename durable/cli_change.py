"""The ``durable`` commands for changing code safely: check, retry, fork, pause, resume, prune.

``check`` imports the App named by ``MODULE:APP`` (it replays runs against that
code); the others open a bare ``App(db)`` and never import workflow code.
"""

from __future__ import annotations

import asyncio
import os

import click

from .app import App
from .check import retirable
from .cli_base import Failure, db_given, db_option, durable_errors_exit_1, echo_json, echo_table, json_option, load_app
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


COMMANDS = [check]
