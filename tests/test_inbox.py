"""The team inbox on both stores: who answered (by, via, when) for good, assignees, reassignment, export."""

from __future__ import annotations

import sqlite3

import pytest

import durable
from durable.store import is_url
from helpers import eventually, make_app, run_sync


def inbox_app(db: str) -> durable.App:
    app = make_app(db)

    @app.workflow
    async def expense(ctx: durable.Context, amount: int) -> str:
        ok = await ctx.ask(f"Approve {amount} EUR?", type=bool, key="approve", assignee="finance")
        note = await ctx.ask("Anything to add?", key="note")
        return f"{ok} {note}"

    @app.workflow
    async def failing(ctx: durable.Context) -> None:
        await ctx.ask("Ship it?", type=bool, key="ship", assignee="ops", timeout=3600)

    return app


async def waiting_for(app: durable.App, run_id: str, key: str) -> None:
    async def asked() -> bool:
        return any(p.key == key for p in await app.prompts(run_id))

    await eventually(asked, what=f"prompt {key} of {run_id}")


async def test_an_answer_records_who_gave_it_how_and_when(db: str) -> None:
    async with inbox_app(db) as app:
        await app.start("expense", 120, run_id="e1")
        await waiting_for(app, "e1", "approve")
        await app.answer("e1", "approve", True, by="ada")
        await waiting_for(app, "e1", "note")
        await app.answer("e1", "note", "receipt attached", by="bob", via="http")
        assert await durable.RunHandle(app, "e1").result() == "True receipt attached"
        run = await app.get_run("e1")
        asks = [r for r in run.steps if r.kind == "ask"]
        assert [(r.name, r.by, r.via, r.assignee) for r in asks] == [
            ("approve", "ada", "python", "finance"), ("note", "bob", "http", None),
        ]  # fmt: skip
        exported = await app.export("e1")
        assert exported["run"]["status"] == "completed" and len(exported["run"]["steps"]) == 2
        log = [{k: e[k] for k in ("seq", "key", "action", "value", "by", "via")} for e in exported["prompt_log"]]
        assert log == [
            {"seq": 0, "key": "approve", "action": "answered", "value": True, "by": "ada", "via": "python"},
            {"seq": 1, "key": "note", "action": "answered", "value": "receipt attached", "by": "bob", "via": "http"},
        ]
        at = exported["prompt_log"][0]["at"]
        assert isinstance(at, str) and at.endswith("Z")  # when, as UTC ISO 8601
        with pytest.raises(ValueError, match="via= is one of python, cli, http, page"):
            await app.answer("e1", "note", "x", via="fax")


def test_a_recorded_answer_cannot_be_changed_in_the_store(db: str) -> None:
    async def answered() -> None:
        async with inbox_app(db) as app:
            await app.start("expense", 5, run_id="e2")
            await waiting_for(app, "e2", "approve")
            await app.answer("e2", "approve", False, by="ada")

    run_sync(answered())
    if is_url(db):
        import asyncpg

        async def tamper() -> None:
            conn = await asyncpg.connect(db)
            try:
                with pytest.raises(asyncpg.RaiseError, match="the prompt log only grows"):
                    await conn.execute("UPDATE durable.prompt_log SET who = 'mallory'")
            finally:
                await conn.close()

        run_sync(tamper())
    else:
        conn = sqlite3.connect(db)
        with pytest.raises(sqlite3.IntegrityError, match="the prompt log only grows"):
            conn.execute("UPDATE prompt_log SET who = 'mallory'")
        conn.close()


async def test_prompts_by_assignee_and_a_reassignment_logged_with_who_did_it(db: str) -> None:
    async with inbox_app(db) as app:
        await app.start("expense", 120, run_id="e3")
        await app.start("failing", run_id="f1")
        await waiting_for(app, "e3", "approve")
        await waiting_for(app, "f1", "ship")
        assert [p.run_id for p in await app.prompts(assignee="finance")] == ["e3"]
        assert [(p.run_id, p.assignee) for p in await app.prompts(assignee="ops")] == [("f1", "ops")]
        await app.reassign("e3", "approve", "ops", by="lea")
        assert sorted(p.run_id for p in await app.prompts(assignee="ops")) == ["e3", "f1"]
        assert await app.prompts(assignee="finance") == []
        await app.reassign("e3", "approve", None, by="lea", via="page")
        [prompt] = await app.prompts("e3")
        assert prompt.assignee is None
        log = (await app.export("e3"))["prompt_log"]
        assert [(e["action"], e["value"], e["by"], e["via"]) for e in log] == [
            ("reassigned", "ops", "lea", "python"), ("reassigned", None, "lea", "page"),
        ]  # fmt: skip
        with pytest.raises(durable.PromptNotFound):
            await app.reassign("e3", "nope", "ops")
        await app.answer("e3", "approve", True)
        with pytest.raises(durable.PromptAlreadyAnswered):
            await app.reassign("e3", "approve", "ops")


async def test_a_prompt_of_an_ended_run_leaves_the_inbox_and_takes_no_answer(db: str) -> None:
    async with inbox_app(db) as app:
        await app.start("failing", run_id="f2")
        await waiting_for(app, "f2", "ship")
        await app.cancel("f2")
        assert await app.prompts("f2") == []
        with pytest.raises(durable.RunAlreadyFinished, match="its prompts take no more answers"):
            await app.answer("f2", "ship", True, by="ada")
        with pytest.raises(durable.RunAlreadyFinished, match="its prompts are closed"):
            await app.reassign("f2", "ship", "ada")
        assert (await app.export("f2"))["prompt_log"] == []  # nothing was recorded


async def test_a_fork_keeps_who_answered_and_prune_takes_the_log_with_the_run(db: str) -> None:
    async with inbox_app(db) as app:
        await app.start("expense", 120, run_id="e4")
        await waiting_for(app, "e4", "approve")
        await app.answer("e4", "approve", True, by="ada", via="page")
        await waiting_for(app, "e4", "note")
        fork = await app.fork("e4", at_seq=2, new_run_id="e4-again")
        await waiting_for(app, fork.run_id, "note")
        copied = (await app.get_run("e4-again")).steps[0]
        assert (copied.status, copied.by, copied.via) == ("answered", "ada", "page")
        await app.answer("e4", "note", "-", by="bob")
        await durable.RunHandle(app, "e4").result()
        await app.cancel("e4-again")
        assert len((await app.export("e4"))["prompt_log"]) == 2
        assert await app.prune(older_than=0, status=("completed",)) == 1
        with pytest.raises(durable.RunNotFound):
            await app.export("e4")
