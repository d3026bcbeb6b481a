"""The commands for the prompt inbox: ``durable prompts``, ``answer``, ``reassign``, ``export`` and ``token add``.

An answer from the command line records who gave it (``--by``, default the
login name) and that it came through the CLI, as the HTTP API records the
token's name; ``durable export`` prints all of it for one run.
"""

from __future__ import annotations

import getpass
import json
from typing import Any

import click

from .app import App
from .cli_base import Failure, db_option, echo_json, echo_table, expects, json_option, json_or_text, preview, since, with_app
from .errors import InvalidAnswer
from .model import Prompt
from .tokens import add_token

__all__ = ["COMMANDS"]


def login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's bare uid)
        return "unknown"


def by_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option("--by", default=login_name, show_default="your login name", help="Who is answering (recorded).")(fn)


@click.command()
@click.option("--assignee", help="Only prompts assigned to this name.")
@json_option
@db_option
def prompts(assignee: str | None, as_json: bool, db: str) -> None:
    """List prompts waiting for an answer, oldest first."""
    pending: list[Prompt] = with_app(db, lambda app: app.prompts(assignee=assignee), read_only=True)
    if as_json:
        echo_json(pending)
    elif not pending:
        click.echo("no pending prompts" + (f" assigned to {assignee}" if assignee else ""))
    else:
        rows = [[p.run_id, p.key, preview(p.question), expects(p.schema), p.assignee or "-", since(p.created_at)] for p in pending]
        echo_table(["run_id", "key", "question", "expects", "for", "age"], rows)


def takes_text(schema: dict[str, Any]) -> bool:
    """Whether a prompt's answer is a string (then VALUE is the text as typed, `42` included)."""
    node = schema
    ref = node.get("$ref")
    if isinstance(ref, str):
        node = schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {})
    return node.get("type") == "string"


@click.command()
@click.argument("run_id")
@click.argument("key")
@click.argument("value")
@click.option("--json", "as_json", is_flag=True, help="Read VALUE as JSON, whatever the prompt expects.")
@by_option
@db_option
def answer(run_id: str, key: str, value: str, as_json: bool, by: str, db: str) -> None:
    """Answer prompt KEY of run RUN_ID with VALUE, read as the prompt expects: its text for a text prompt, else JSON
    (falling back to the plain string)."""

    async def give(app: App) -> None:
        if as_json:
            try:
                parsed = json.loads(value)
            except ValueError as exc:
                raise Failure(f"VALUE is not JSON (--json): {exc}.") from None
        else:
            schema = next((p.schema for p in await app.prompts(run_id) if p.key == key), None)
            parsed = value if schema is not None and takes_text(schema) else json_or_text(value)
        try:
            await app.answer(run_id, key, parsed, by=by, via="cli")
        except InvalidAnswer as exc:
            if isinstance(parsed, str) or as_json:
                raise
            # VALUE read as JSON (a number, true, null...): the user may have meant the text.
            raise Failure(
                f"{exc} VALUE {value} was read as JSON; to answer the text {value!r}, quote it: '\"{value}\"'."
            ) from None

    with_app(db, give)
    click.echo(f"answered {key} of run {run_id} (by {by})")


@click.command()
@click.argument("run_id")
@click.argument("key")
@click.argument("assignee")
@by_option
@db_option
def reassign(run_id: str, key: str, assignee: str, by: str, db: str) -> None:
    """Assign prompt KEY of run RUN_ID to ASSIGNEE ('-': to nobody); recorded with who did it."""
    to = None if assignee == "-" else assignee
    with_app(db, lambda app: app.reassign(run_id, key, to, by=by, via="cli"))
    click.echo(f"assigned {key} of run {run_id} to {to or 'nobody'} (by {by})")


@click.command()
@click.argument("run_id")
@db_option
def export(run_id: str, db: str) -> None:
    """Print run RUN_ID as JSON: the run, every record, and every answer and reassignment with who, how and when."""
    echo_json(with_app(db, lambda app: app.export(run_id), read_only=True))




@click.group()
def token() -> None:
    """The tokens of people and services for `durable serve` (see $DURABLE_TOKENS)."""


@token.command("add")
@click.argument("name")
@click.option("--file", "path", envvar="DURABLE_TOKENS", show_envvar=True, required=True,
              type=click.Path(dir_okay=False), help="The tokens file `durable serve` reads.")  # fmt: skip
def token_add(name: str, path: str) -> None:
    """Give NAME a new token: its SHA-256 is added to the tokens file, and the token is printed, this once."""
    try:
        secret = add_token(path, name)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    click.echo(secret)
    click.echo(f"added {name} to {path}: give them the token above (it is stored only as its SHA-256)", err=True)


COMMANDS = [prompts, answer, reassign, export, token]
