"""The `durable` command against a journal written by real runs."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pydantic
import pytest
from click.testing import CliRunner

import durable
from durable.cli import ago, expects, main
from helpers import eventually, make_app, wait_until

# Written next to the journal: the fixture runs these workflows in-process, and
# `durable worker cli_shop:app` imports the same file from its working directory.
SHOP = '''
import durable

app = durable.App(poll_interval=0.05)


def load_order(order_id: str) -> dict:
    return {"order_id": order_id, "total": 1200}


def charge(order_id: str) -> None:
    try:
        {}["card"]
    except KeyError as exc:
        raise ValueError(f"card declined for {order_id}") from exc


@app.workflow
async def checkout(ctx: durable.Context, order_id: str) -> dict:
    order = await ctx.step(load_order, order_id)
    ok = await ctx.ask(f"Approve order {order_id}?", type=bool, key="approve", assignee="finance")
    return {"order_id": order["order_id"], "approved": ok}


@app.workflow
async def pay(ctx: durable.Context, order_id: str) -> None:
    await ctx.step(charge, order_id)


@app.workflow
async def feedback(ctx: durable.Context) -> str:
    return await ctx.ask("Any comments?", key="comment")
'''

HOUR = 3600.0


@pytest.fixture
def shop(tmp_path: Path) -> ModuleType:
    path = tmp_path / "cli_shop.py"
    path.write_text(SHOP)
    spec = importlib.util.spec_from_file_location("cli_shop_fixture", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def journal(db: str, shop: ModuleType) -> str:
    """Three runs: order-1 waits on 'approve' (3h old), order-2 failed (2h), survey-1 waits on 'comment' (5m)."""
    asyncio.run(fill(db, shop))
    return db


async def fill(db: str, shop: ModuleType) -> None:
    age = [3 * HOUR]  # the App's clock runs behind, so the runs look that old
    app = make_app(db, clock=lambda: time.time() - age[0])
    for workflow in (shop.checkout, shop.pay, shop.feedback):
        app.workflow(workflow)
    async with app:
        await app.start(shop.checkout, "o-1", run_id="order-1")
        await eventually(lambda: app.prompts("order-1"), what="order-1 to ask")
        age[0] = 2 * HOUR
        with pytest.raises(ValueError, match="card declined for o-2"):
            await app.run(shop.pay, "o-2", run_id="order-2")
        age[0] = 300
        await app.start(shop.feedback, run_id="survey-1")
        await eventually(lambda: app.prompts("survey-1"), what="survey-1 to ask")


def get_run(db: str, run_id: str) -> durable.Run:
    async def read() -> durable.Run:
        async with durable.App(db) as app:
            return await app.get_run(run_id)

    return asyncio.run(read())


def cli(*args: str, **kwargs: Any) -> Any:
    return CliRunner().invoke(main, list(args), prog_name="durable", **kwargs)


def lines(text: str) -> list[str]:
    return text.splitlines()


def when(at: dt.datetime, relative: str) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC ({relative})"


# --- runs -------------------------------------------------------------------------


def test_runs_is_a_table_newest_first(journal: str) -> None:
    result = cli("runs", "--db", journal)

    assert result.exit_code == 0, result.output
    assert lines(result.stdout) == [
        "RUN_ID    WORKFLOW  STATUS   CREATED  UPDATED",
        "survey-1  feedback  waiting  5m ago   5m ago",
        "order-2   pay       failed   2h ago   2h ago",
        "order-1   checkout  waiting  3h ago   3h ago",
    ]
    assert result.stderr == ""


def test_runs_filters_by_status_workflow_and_limit(journal: str) -> None:
    waiting = cli("runs", "--status", "waiting", "--db", journal)
    by_workflow = cli("runs", "--workflow", "pay", "--db", journal)
    newest = cli("runs", "--limit", "1", "--db", journal)

    assert [line.split()[0] for line in lines(waiting.stdout)] == ["RUN_ID", "survey-1", "order-1"]
    assert [line.split()[0] for line in lines(by_workflow.stdout)] == ["RUN_ID", "order-2"]
    assert [line.split()[0] for line in lines(newest.stdout)] == ["RUN_ID", "survey-1"]
    assert lines(cli("runs", "--status", "cancelled", "--db", journal).stdout) == ["no runs"]
    assert newest.stderr == "note: the newest 1 runs are shown and more match; pass --limit to see more.\n"
    assert cli("runs", "--limit", "3", "--db", journal).stderr == ""  # all three shown: no note


def test_runs_of_several_statuses_and_a_time_window(journal: str) -> None:
    both = cli("runs", "--status", "failed", "--status", "waiting", "--db", journal)
    assert [line.split()[0] for line in lines(both.stdout)] == ["RUN_ID", "survey-1", "order-2", "order-1"]
    recent = cli("runs", "--since", "1h", "--db", journal)
    assert [line.split()[0] for line in lines(recent.stdout)] == ["RUN_ID", "survey-1"]
    older = cli("runs", "--until", "150m", "--db", journal)
    assert [line.split()[0] for line in lines(older.stdout)] == ["RUN_ID", "order-1"]
    window = cli("runs", "--since", "150m", "--until", "1h", "--db", journal)
    assert [line.split()[0] for line in lines(window.stdout)] == ["RUN_ID", "order-2"]
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert lines(cli("runs", "--since", future.isoformat(), "--db", journal).stdout) == ["no runs"]
    bad = cli("runs", "--since", "yesterday", "--db", journal)
    assert bad.exit_code == 2 and "'yesterday' is neither a duration ago (90m, 2d) nor an ISO time" in bad.stderr


def test_show_follow_prints_records_as_they_come_until_the_run_ends(journal: str, shop: ModuleType) -> None:
    async def answer_soon() -> None:
        await asyncio.sleep(0.5)
        async with make_app(journal) as app:
            app.workflow(shop.feedback)
            await app.answer("survey-1", "comment", "all good", by="ada")
            await eventually(lambda: _ended(app, "survey-1"), what="survey-1 to complete")

    import threading

    helper = threading.Thread(target=lambda: asyncio.run(answer_soon()))
    helper.start()
    try:
        result = cli("show", "survey-1", "--follow", "--db", journal)
    finally:
        helper.join(timeout=30)
    assert result.exit_code == 0, result.output
    shown = lines(result.stdout)
    assert "0    ask   comment  waiting  1         Any comments?" in shown  # the table, as it was
    at = f"{get_run(journal, 'survey-1').steps[0].finished_at:%Y-%m-%d %H:%M:%S} UTC"
    assert shown[-2:] == [
        f"0    ask   comment     answered   Any comments? → all good  [by ada, python, {at}]",
        "run survey-1 ended: completed",
    ]


async def _ended(app: durable.App, run_id: str) -> bool:
    return await app.status(run_id) == "completed"


def test_runs_colours_the_status_only_for_a_terminal(journal: str) -> None:
    coloured = cli("runs", "--db", journal, color=True)

    assert "\x1b[" not in cli("runs", "--db", journal).stdout
    assert "\x1b[33mwaiting\x1b[0m" in coloured.stdout
    assert "\x1b[31mfailed\x1b[0m" in coloured.stdout


def test_runs_json_is_the_runs(journal: str) -> None:
    result = cli("runs", "--json", "--db", journal)

    runs = json.loads(result.stdout)
    assert [(r["run_id"], r["workflow"], r["status"]) for r in runs] == [
        ("survey-1", "feedback", "waiting"),
        ("order-2", "pay", "failed"),
        ("order-1", "checkout", "waiting"),
    ]
    assert runs[1]["error"]["message"] == "card declined for o-2"
    assert result.stdout.startswith("[\n  {\n")  # indented for people reading it too


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--status", "lost"], "Invalid value for '--status': 'lost' is not one of"),
        (["--limit", "0"], "Invalid value for '--limit'"),
        (["--bogus"], "--bogus"),
    ],
)
def test_runs_rejects_bad_options_with_usage_exit_2(journal: str, args: list[str], complaint: str) -> None:
    result = cli("runs", *args, "--db", journal)

    assert result.exit_code == 2
    assert result.stderr.startswith("Usage: durable runs [OPTIONS]\n")
    assert complaint in result.stderr
    assert result.stdout == ""


def test_a_missing_journal_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"

    result = cli("runs", "--db", str(missing))

    assert result.exit_code == 1
    assert result.stderr == f"error: No journal at {str(missing)!r}. Pass --db PATH or set DURABLE_DB.\n"
    assert not missing.exists()


def test_db_defaults_to_durable_db_env(journal: str) -> None:
    result = cli("runs", "--limit", "1", env={"DURABLE_DB": journal})

    assert result.exit_code == 0, result.output
    assert lines(result.stdout)[1].startswith("survey-1 ")


# --- show -------------------------------------------------------------------------


def test_show_prints_the_run_and_its_journal(journal: str) -> None:
    run = get_run(journal, "order-1")

    result = cli("show", "order-1", "--db", journal)

    assert result.exit_code == 0, result.output
    assert lines(result.stdout) == [
        "run_id    order-1",
        "workflow  checkout",
        "status    waiting",
        'args      ["o-1"]',
        f"created   {when(run.created_at, '3h ago')}",
        f"updated   {when(run.updated_at, '3h ago')}",
        "",
        "SEQ  KIND  NAME        STATUS     ATTEMPTS  VALUE",
        '0    step  load_order  completed  1         {"order_id":"o-1","total":1200}',
        "1    ask   approve     waiting    1         Approve order o-1?  [for finance]",
    ]


def test_show_a_failed_run_gives_its_error(journal: str) -> None:
    result = cli("show", "order-2", "--db", journal)

    assert result.exit_code == 0, result.output
    shown = lines(result.stdout)
    assert "error     ValueError: card declined for o-2" in shown
    assert "          caused by KeyError: 'card'" in shown
    assert "0    step  charge  failed  1         ValueError: card declined for o-2" in shown
    assert shown[-2:] == ["seq 0 charge failed: ValueError: card declined for o-2", "  caused by KeyError: 'card'"]
    verbose = lines(cli("show", "order-2", "-v", "--db", journal).stdout)
    assert "  Traceback (most recent call last):" in verbose
    assert "  The above exception was the direct cause of the following exception:" in verbose


def test_show_json_is_the_run_with_its_records(journal: str) -> None:
    run = json.loads(cli("show", "order-1", "--json", "--db", journal).stdout)

    assert run["run_id"] == "order-1"
    assert run["args"] == ["o-1"]
    assert [(r["seq"], r["kind"], r["name"], r["status"]) for r in run["steps"]] == [
        (0, "step", "load_order", "completed"),
        (1, "ask", "approve", "waiting"),
    ]
    assert run["steps"][1]["question"] == "Approve order o-1?"


def test_show_an_unknown_run_exits_1(journal: str) -> None:
    result = cli("show", "nope", "--db", journal)

    assert result.exit_code == 1
    assert result.stderr == f"error: {durable.RunNotFound('nope')}\n"
    assert result.stdout == ""


# --- prompts ----------------------------------------------------------------------


def test_prompts_lists_pending_prompts_oldest_first(journal: str) -> None:
    result = cli("prompts", "--db", journal)

    assert result.exit_code == 0, result.output
    assert lines(result.stdout) == [
        "RUN_ID    KEY      QUESTION            EXPECTS  FOR      AGE",
        "order-1   approve  Approve order o-1?  boolean  finance  3h ago",
        "survey-1  comment  Any comments?       string   -        5m ago",
    ]


def test_prompts_of_one_assignee_and_a_reassignment(journal: str) -> None:
    assert [line.split()[0] for line in lines(cli("prompts", "--assignee", "finance", "--db", journal).stdout)] == [
        "RUN_ID", "order-1",
    ]  # fmt: skip
    assert lines(cli("prompts", "--assignee", "ops", "--db", journal).stdout) == ["no pending prompts assigned to ops"]
    result = cli("reassign", "order-1", "approve", "ops", "--by", "lea", "--db", journal)
    assert (result.exit_code, lines(result.stdout)) == (0, ["assigned approve of run order-1 to ops (by lea)"])
    assert [line.split()[0] for line in lines(cli("prompts", "--assignee", "ops", "--db", journal).stdout)] == [
        "RUN_ID", "order-1",
    ]  # fmt: skip
    assert lines(cli("show", "order-1", "--db", journal).stdout)[-1] == (
        "1    ask   approve     waiting    1         Approve order o-1?  [for ops]"
    )
    result = cli("reassign", "survey-1", "nope", "ops", "--db", journal)
    assert result.exit_code == 1 and "has no prompt with key 'nope' waiting" in result.output, result.output


def test_prompts_json_carries_each_schema(journal: str) -> None:
    prompts = json.loads(cli("prompts", "--json", "--db", journal).stdout)

    assert [(p["run_id"], p["key"], p["schema"]) for p in prompts] == [
        ("order-1", "approve", {"type": "boolean"}),
        ("survey-1", "comment", {"type": "string"}),
    ]


class Address(pydantic.BaseModel):
    city: str


@pytest.mark.parametrize(
    ("tp", "expected"),
    [
        (bool, "boolean"),
        (int, "integer"),
        (str, "string"),
        (Literal["a", "b"], "one of: a, b"),
        (Literal[1], "exactly 1"),
        (dict, "object"),
        (Address, "object"),
        (list[int], "array of integer"),
        (list[Address], "array of object"),
        (int | None, "integer or null"),
        (dt.date, "string (date)"),
    ],
)
def test_expects_names_the_answer_type(tp: Any, expected: str) -> None:
    assert expects(pydantic.TypeAdapter(tp).json_schema()) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s ago"),
        (3.9, "3s ago"),
        (150, "2m ago"),
        (5 * HOUR + 5, "5h ago"),
        (4 * 24 * HOUR + 9, "4d ago"),
        (-200, "in 3m"),
    ],
)
def test_ages_read_as_people_say_them(seconds: float, text: str) -> None:
    assert ago(seconds) == text


# --- answer -----------------------------------------------------------------------


def test_answer_records_a_json_value(journal: str) -> None:
    result = cli("answer", "order-1", "approve", "true", "--by", "ada", "--db", journal)

    assert result.exit_code == 0, result.output
    assert lines(result.stdout) == ["answered approve of run order-1 (by ada)"]
    run = get_run(journal, "order-1")
    assert (run.steps[1].kind, run.steps[1].status, run.steps[1].value) == ("ask", "answered", True)
    assert run.status != "waiting"
    at = f"{run.steps[1].finished_at:%Y-%m-%d %H:%M:%S} UTC"  # when it was answered
    assert lines(cli("show", "order-1", "--db", journal).stdout)[-1] == (
        f"1    ask   approve     answered   1         Approve order o-1? → true  [by ada, cli, {at}]"
    )
    exported = json.loads(cli("export", "order-1", "--db", journal).stdout)
    assert exported["run"]["run_id"] == "order-1" and len(exported["run"]["steps"]) == 2
    [entry] = exported["prompt_log"]
    assert {k: entry[k] for k in ("seq", "key", "action", "value", "by", "via")} == {
        "seq": 1, "key": "approve", "action": "answered", "value": True, "by": "ada", "via": "cli",
    }  # fmt: skip
    assert [line.split()[0] for line in lines(cli("prompts", "--db", journal).stdout)] == ["RUN_ID", "survey-1"]


def test_answer_that_is_not_json_is_a_plain_string(journal: str) -> None:
    result = cli("answer", "survey-1", "comment", "ship it, fast", "--db", journal)

    assert lines(result.stdout) == [f"answered comment of run survey-1 (by {getpass.getuser()})"]  # the login name
    assert get_run(journal, "survey-1").steps[0].value == "ship it, fast"


def test_a_text_prompt_takes_42_as_text_and_json_forces_json(journal: str) -> None:
    forced = cli("answer", "survey-1", "comment", "42", "--json", "--db", journal)
    assert forced.exit_code == 1
    refused = durable.InvalidAnswer("survey-1", "comment", "42 is not of type 'string'")
    assert forced.stderr == f"error: {refused}\n"
    assert get_run(journal, "survey-1").steps[0].status == "waiting"
    bad = cli("answer", "survey-1", "comment", "{oops", "--json", "--db", journal)
    assert bad.exit_code == 1 and bad.stderr.startswith("error: VALUE is not JSON (--json): ")
    assert cli("answer", "survey-1", "comment", "42", "--db", journal).exit_code == 0  # the prompt takes text
    assert get_run(journal, "survey-1").steps[0].value == "42"


def test_a_word_for_a_yes_no_prompt_is_refused_with_what_it_expects(journal: str) -> None:
    result = cli("answer", "order-1", "approve", "yes", "--db", journal)
    assert result.exit_code == 1
    assert result.stderr == f"error: {durable.InvalidAnswer('order-1', 'approve', repr('yes') + ' is not of type ' + repr('boolean'))}\n"
    assert get_run(journal, "order-1").steps[1].status == "waiting"


def test_answer_twice_exits_1_and_keeps_the_first(journal: str) -> None:
    cli("answer", "order-1", "approve", "false", "--db", journal)

    again = cli("answer", "order-1", "approve", "true", "--db", journal)

    assert again.exit_code == 1
    assert again.stderr == f"error: {durable.PromptAlreadyAnswered('order-1', 'approve')}\n"
    assert again.stdout == ""
    assert get_run(journal, "order-1").steps[1].value is False


def test_answer_of_the_wrong_type_exits_1_and_records_nothing(journal: str) -> None:
    result = cli("answer", "order-1", "approve", "maybe", "--db", journal)

    assert result.exit_code == 1
    reason = "'maybe' is not of type 'boolean'"
    assert result.stderr == f"error: {durable.InvalidAnswer('order-1', 'approve', reason)}\n"
    assert get_run(journal, "order-1").steps[1].status == "waiting"


def test_answer_to_an_unknown_prompt_exits_1(journal: str) -> None:
    result = cli("answer", "order-1", "reject", "true", "--db", journal)

    assert result.exit_code == 1
    assert result.stderr == f"error: {durable.PromptNotFound('order-1', 'reject')}\n"


def test_answer_needs_all_three_arguments(journal: str) -> None:
    result = cli("answer", "order-1", "approve", "--db", journal)

    assert result.exit_code == 2
    assert "Missing argument 'VALUE'" in result.stderr


# --- cancel -----------------------------------------------------------------------


def test_cancel_stops_the_run(journal: str) -> None:
    result = cli("cancel", "order-1", "--db", journal)

    assert result.exit_code == 0, result.output
    assert lines(result.stdout) == ["cancelled run order-1"]
    assert get_run(journal, "order-1").status == "cancelled"


def test_cancel_of_a_finished_or_unknown_run_exits_1(journal: str) -> None:
    finished = cli("cancel", "order-2", "--db", journal)
    unknown = cli("cancel", "nope", "--db", journal)

    assert (finished.exit_code, unknown.exit_code) == (1, 1)
    assert finished.stderr == f"error: {durable.RunAlreadyFinished('order-2', 'failed')}\n"
    assert unknown.stderr == f"error: {durable.RunNotFound('nope')}\n"
    assert get_run(journal, "order-2").status == "failed"


# --- worker and serve -------------------------------------------------------------


@pytest.fixture
def importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run from tmp_path (where cli_shop.py is) and undo what importing MODULE:APP changes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("DURABLE_DB", str(tmp_path / "env.db"))  # restored after the test
    (tmp_path / "fixed_path.py").write_text("import durable\napp = durable.App('elsewhere.db')\n")
    yield tmp_path
    for name in ("cli_shop", "fixed_path"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("spec", "exit_code", "message"),
    [
        ("cli_shop", 2, "Invalid value for MODULE:APP: 'cli_shop' is not MODULE:APP, e.g. shop:app."),
        ("nowhere:app", 1, "error: Cannot import module 'nowhere': No module named 'nowhere'. "
         "Run from the directory that holds it."),
        ("cli_shop:nope", 1, "error: Module 'cli_shop' has no attribute 'nope'."),
        ("cli_shop:load_order", 1, "error: cli_shop:load_order is a function, not a durable.App."),
        ("fixed_path:app", 1, "error: fixed_path:app opens the journal 'elsewhere.db', not --db 'other.db'. "
         "Drop --db, or create the App without a path so that --db chooses it."),
    ],
)  # fmt: skip
def test_worker_explains_a_bad_module_app(
    shop: ModuleType, importable: Path, spec: str, exit_code: int, message: str
) -> None:
    result = cli("worker", spec, "--db", "other.db")

    assert result.exit_code == exit_code
    assert message in result.stderr


def test_serve_without_the_server_extra_exits_1(
    shop: ModuleType, importable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "durable.http", None)  # as if it could not be imported

    result = cli("serve", "cli_shop:app")

    assert result.exit_code == 1
    assert result.stderr == "error: durable serve needs the server extra: pip install 'durable[server]'\n"


def test_worker_resumes_a_run_answered_from_the_cli_and_stops_on_sigterm(journal: str, tmp_path: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "durable", "worker", "cli_shop:app", "--db", journal],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "DURABLE_DB"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert lines(cli("answer", "order-1", "approve", "true", "--by", "ada", "--db", journal).stdout) == [
            "answered approve of run order-1 (by ada)"
        ]
        wait_until(lambda: get_run(journal, "order-1").status == "completed", what="order-1 to complete")
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)

    assert worker.returncode == 0, err
    assert out == ""
    log = lines(err)
    assert log[0] == f"worker started on {journal}; workflows: checkout, feedback, pay"
    assert any(re.search(r"order-1 .*checkout resumed", line) for line in log), err
    assert log[-2:] == ["worker stopping: letting steps in flight finish", "worker stopped"]
    assert get_run(journal, "order-1").result == {"order_id": "o-1", "approved": True}


# --- as installed -----------------------------------------------------------------


def test_python_m_durable_help_lists_the_commands() -> None:
    done = subprocess.run([sys.executable, "-m", "durable", "--help"], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: durable [OPTIONS] COMMAND [ARGS]...")
    commands = re.findall(r"^  (\w+) ", done.stdout.split("Commands:")[1], re.MULTILINE)
    assert commands == [
        "answer", "cancel", "check", "doctor", "export", "fork", "pause", "prompts", "prune", "queues", "reassign", "resume", "retry",
        "runs", "schedules", "send",
        "serve", "show", "submit", "token", "worker",
    ]


def test_the_durable_script_lists_prompts(journal: str) -> None:
    script = shutil.which("durable", path=str(Path(sys.executable).parent))
    assert script is not None, "the durable script is not installed: pip install -e ."

    done = subprocess.run([script, "prompts", "--db", journal], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert lines(done.stdout)[1] == "order-1   approve  Approve order o-1?  boolean  finance  3h ago"
