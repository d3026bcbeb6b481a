"""Prompts: asked, listed, answered once with a validated value, moving the run on."""

from __future__ import annotations

import asyncio
import sys
import datetime as dt
from typing import Any, Literal

import pydantic
import pytest

import durable
from helpers import eventually, make_app, unloaded


class Review(pydantic.BaseModel):
    approved: bool
    reason: str = pydantic.Field(min_length=3)


def approval_app(db: str, executed: list[str]) -> durable.App:
    app = make_app(db)

    def charge(amount: int) -> str:
        executed.append(f"charge {amount}")
        return f"charged {amount}"

    @app.workflow
    async def expense(ctx: durable.Context, amount: int) -> str:
        if amount > 100:
            ok = await ctx.ask(f"Approve {amount}?", type=bool, key="approve")
            if not ok:
                return "rejected"
        return await ctx.step(charge, amount)

    return app


async def pending(app: durable.App, n: int = 1) -> list[durable.Prompt]:
    async def check() -> list[durable.Prompt] | None:
        prompts = await app.prompts()
        return prompts if len(prompts) >= n else None

    return await eventually(check, what=f"{n} pending prompt(s)")


async def parked_expense(app: durable.App) -> durable.RunHandle:
    """Start run e1 of `expense` for 500 and wait until it is unloaded, waiting for its approval."""
    handle = await app.start("expense", 500, run_id="e1")
    await pending(app)
    await eventually(lambda: _status_is(app, "e1", "waiting"), what="the run to unload")
    return handle


async def test_ask_waits_unloaded_then_an_answer_moves_the_run_on(db: str) -> None:
    executed: list[str] = []
    app = approval_app(db, executed)
    async with app:
        handle = await app.start("expense", 500, run_id="e1")
        (prompt,) = await pending(app)
        assert (prompt.run_id, prompt.key, prompt.question, prompt.workflow) == ("e1", "approve", "Approve 500?", "expense")
        assert prompt.schema == {"type": "boolean"}
        await eventually(lambda: _status_is(app, "e1", "waiting"), what="the run to unload")
        await unloaded(app, "e1")  # no coroutine kept
        await app.answer("e1", "approve", True)
        assert await handle.result(timeout=10) == "charged 500"
        run = await app.get_run("e1")
        assert [(r.kind, r.name, r.status, r.value) for r in run.steps] == [
            ("ask", "approve", "answered", True),
            ("step", "approval_app.<locals>.charge", "completed", "charged 500"),
        ]
        assert await app.prompts() == []
    assert executed == ["charge 500"]


async def test_answer_from_an_app_without_the_workflow_code(db: str) -> None:
    executed: list[str] = []
    worker = approval_app(db, executed)
    async with worker:
        handle = await worker.start("expense", 500, run_id="e1")
        await pending(worker)
        async with make_app(db) as inbox:  # no workflows registered, like the CLI
            (prompt,) = await inbox.prompts()
            await inbox.answer(prompt.run_id, prompt.key, False)
        assert await handle.result(timeout=10) == "rejected"
    assert executed == []


async def test_the_answering_app_resumes_the_run_itself_in_the_answers_commit(db: str) -> None:
    executed: list[str] = []
    app = approval_app(db, executed)
    async with app:
        handle = await parked_expense(app)
        assert app._worker is not None
        await app._worker.stop()  # no worker pass can resume it: the answer must
        await app.answer("e1", "approve", True)
        assert app.engine.executing("e1") is not None  # claimed and launched before answer() returned
        assert await handle.result(timeout=10) == "charged 500"
    assert executed == ["charge 500"]


async def test_an_app_without_room_leaves_an_answered_run_to_its_worker(db: str) -> None:
    executed: list[str] = []
    app = approval_app(db, executed)
    app.max_concurrent_runs = 1
    gate = asyncio.Event()

    @app.workflow
    async def busy(ctx: durable.Context) -> None:
        await gate.wait()

    async with app:
        await parked_expense(app)
        occupant = await app.start(busy, run_id="busy")
        await app.answer("e1", "approve", True)
        assert app.engine.executing("e1") is None
        assert (await app.get_run("e1")).status == "pending"  # ready for whoever has room
        gate.set()
        await occupant.result(timeout=10)
        assert await app.run("expense", 500, run_id="e1") == "charged 500"
    assert executed == ["charge 500"]


async def test_a_cancelled_answer_still_resumes_its_run(db: str) -> None:
    # The claiming write is queued before the caller gives up: it commits anyway,
    # so the run must still be resumed, not left claimed by an App that forgot it.
    executed: list[str] = []
    app = approval_app(db, executed)
    async with app:
        handle = await parked_expense(app)
        answering = asyncio.create_task(app.answer("e1", "approve", True))
        while not app.engine.busy("e1"):  # the answer and its claim are on their way to the writer
            assert not answering.done()
            await asyncio.sleep(0)
        answering.cancel()
        with pytest.raises(asyncio.CancelledError):
            await answering
        assert await handle.result(timeout=10) == "charged 500"
    assert executed == ["charge 500"]


async def test_an_answer_that_meets_close_hands_its_run_to_another_worker(db: str) -> None:
    executed: list[str] = []
    app = approval_app(db, executed)
    await app.open()
    await parked_expense(app)
    answering = asyncio.create_task(app.answer("e1", "approve", True))
    while not app.engine.busy("e1"):
        await asyncio.sleep(0)
    await app.close()
    await answering  # the answer stands
    assert executed == []  # nothing ran on a run the closing App no longer owns
    second = approval_app(db, executed)
    async with second:
        assert (await second.get_run("e1")).status == "pending"
        assert await second.run("expense", 500, run_id="e1") == "charged 500"
    assert executed == ["charge 500"]


async def test_a_run_cancelled_while_its_answer_claims_it_never_runs_another_step(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    executed: list[str] = []
    app = approval_app(db, executed)
    async with app:
        handle = await parked_expense(app)
        load = app.store.load_replay

        async def slow_load(run_id: str) -> list:  # type: ignore[type-arg]
            await asyncio.sleep(0.1)  # a long journal: the claim is committed, the run not yet launched
            return await load(run_id)

        monkeypatch.setattr(app.store, "load_replay", slow_load)
        answering = asyncio.create_task(app.answer("e1", "approve", True))
        await eventually(lambda: _status_is(app, "e1", "running"), what="the answer to claim the run")
        await app.cancel("e1")
        await answering
        with pytest.raises(durable.RunCancelled):
            await handle.result(timeout=10)
    assert executed == []


async def test_concurrent_answers_respect_max_concurrent_runs(db: str) -> None:
    app = make_app(db, max_concurrent_runs=1)
    seen: list[int] = []

    async def work() -> None:
        seen.append(app.engine.in_flight)
        await asyncio.sleep(0.05)

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        await ctx.ask("go?", type=bool, key="go")
        await ctx.step(work)
        return "done"

    async with app:
        handles = [await app.start(wf, run_id=f"r{i}") for i in range(4)]
        await pending(app, 4)
        for i in range(4):
            await eventually(lambda i=i: _status_is(app, f"r{i}", "waiting"), what="the runs to unload")
        await asyncio.gather(*(app.answer(f"r{i}", "go", True) for i in range(4)))
        assert [await h.result(timeout=10) for h in handles] == ["done"] * 4
    assert seen == [1, 1, 1, 1]


async def test_rerunning_a_waiting_run_replays_to_its_prompt_and_waits(db: str) -> None:
    executed: list[str] = []
    first = approval_app(db, executed)
    async with first:
        await first.start("expense", 500, run_id="e1")
        await pending(first)
    second = approval_app(db, executed)
    async with second:
        task = asyncio.create_task(second.run("expense", 500, run_id="e1"))
        await eventually(lambda: _status_is(second, "e1", "waiting"), what="the run to wait again")
        await second.answer("e1", "approve", True)
        assert await asyncio.wait_for(task, 10) == "charged 500"


async def _status_is(app: durable.App, run_id: str, status: str) -> bool:
    return (await app.get_run(run_id)).status == status


async def test_bad_answers_are_refused_and_write_nothing(db: str) -> None:
    app = make_app(db)

    @app.workflow
    async def review(ctx: durable.Context) -> str:
        r = await ctx.ask("Review?", type=Review, key="review")
        colour = await ctx.ask("Colour?", type=Literal["red", "blue"], key="colour")
        return f"{r.approved}/{r.reason}/{colour}"

    async with app:
        handle = await app.start(review, run_id="r")
        await pending(app)
        with pytest.raises(durable.InvalidAnswer, match=r"'approved' is a required property") as raised:
            await app.answer("r", "review", {"reason": "fine"})
        assert (raised.value.run_id, raised.value.key) == ("r", "review")
        with pytest.raises(durable.InvalidAnswer, match=r"'yes' is not of type 'boolean' at answer\['approved'\]"):
            await app.answer("r", "review", {"approved": "yes", "reason": "fine"})
        with pytest.raises(durable.InvalidAnswer, match="rejected: cannot encode objects of type object"):
            await app.answer("r", "review", object())
        with pytest.raises(durable.PromptNotFound, match="Run 'r' has no prompt with key 'nope' waiting"):
            await app.answer("r", "nope", 1)
        with pytest.raises(durable.PromptNotFound):
            await app.answer("no-such-run", "review", 1)
        run = await app.get_run("r")
        assert [(s.status, s.value) for s in run.steps] == [("waiting", None)]

        await app.answer("r", "review", Review(approved=True, reason="looks right"))
        with pytest.raises(durable.PromptAlreadyAnswered, match="has already been answered; the first answer stands"):
            await app.answer("r", "review", {"approved": False, "reason": "changed my mind"})
        (colour,) = await pending(app)
        assert colour.schema == {"enum": ["red", "blue"], "type": "string"}
        with pytest.raises(durable.InvalidAnswer, match="'green' is not one of"):
            await app.answer("r", "colour", "green")
        await app.answer("r", "colour", "blue")
        assert await handle.result(timeout=10) == "True/looks right/blue"


async def test_two_concurrent_answers_one_wins(db: str) -> None:
    executed: list[str] = []
    app = approval_app(db, executed)
    async with app:
        handle = await app.start("expense", 500, run_id="e1")
        await pending(app)
        async with make_app(db) as other:
            outcomes = await asyncio.gather(
                app.answer("e1", "approve", True), other.answer("e1", "approve", False), return_exceptions=True
            )
        assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "PromptAlreadyAnswered"]
        winner = outcomes.index(None)
        assert await handle.result(timeout=10) == ("charged 500" if winner == 0 else "rejected")


async def test_an_answer_that_lost_to_one_that_let_the_run_end_is_told_it_was_answered(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loser read the prompt as waiting before the winner committed; by its next read the run has ended.
    executed: list[str] = []
    app = approval_app(db, executed)
    async with app:
        handle = await parked_expense(app)
        await app.answer("e1", "approve", True)
        assert await handle.result(timeout=10) == "charged 500"
        real, reads = app.store.prompt, []

        async def read_from_before_the_winner(run_id: str, key: str) -> Any:
            found = await real(run_id, key)
            reads.append(found)
            return found if len(reads) > 1 else ("waiting", *found[1:])

        monkeypatch.setattr(app.store, "prompt", read_from_before_the_winner)
        with pytest.raises(durable.PromptAlreadyAnswered):
            await app.answer("e1", "approve", False)
        assert executed == ["charge 500"] and len(reads) == 2


class Reason(pydantic.BaseModel):
    text: str

    @pydantic.field_validator("text")
    @classmethod
    def not_shouting(cls, value: str) -> str:
        if value.isupper():
            raise ValueError("no shouting")
        return value


def why(app: durable.App) -> durable.App:
    """Register `wf`: it asks for a Reason (whose validator the JSON schema cannot carry) and returns its text."""

    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        reason = await ctx.ask("Why?", type=Reason, key="why")
        return reason.text

    return app


async def start_why(app: durable.App) -> durable.RunHandle:
    handle = await app.start("wf", run_id="r")
    await pending(app)
    return handle


async def test_answer_that_fits_the_schema_but_not_the_type_is_refused_where_the_type_is_known(app: durable.App) -> None:
    async with why(app):
        handle = await start_why(app)
        # a validator is not part of the JSON schema; this process asked the prompt, so it knows the type
        with pytest.raises(durable.InvalidAnswer, match="no shouting") as caught:
            await app.answer("r", "why", {"text": "BECAUSE"})
        assert caught.value.key == "why"
        (still,) = await pending(app)
        assert (still.key, (await app.get_run("r")).steps[0].status) == ("why", "waiting")  # nothing recorded
        await app.answer("r", "why", {"text": "because"})
        assert await handle.result(timeout=10) == "because"


async def test_answer_that_fits_the_schema_but_not_the_type_reopens_the_prompt_when_given_elsewhere(
    app: durable.App, db: str
) -> None:
    async with why(app):
        handle = await start_why(app)
        # `durable answer` in a process of its own knows only the stored schema: the answer is taken,
        # then refused by the type when the run resumes, and the prompt is asked again
        done = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "durable", "answer", "r", "why", '{"text": "BECAUSE"}', "--db", db,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await done.communicate()
        assert done.returncode == 0, output.decode()
        await eventually(lambda: _asked_again(app), what="the prompt to be asked again")
        await app.answer("r", "why", {"text": "because"})
        assert await handle.result(timeout=10) == "because"
        assert [(s.status, s.value) for s in (await app.get_run("r")).steps] == [("answered", {"text": "because"})]


async def _asked_again(app: durable.App) -> bool:
    run = await app.get_run("r")
    return run.status == "waiting" and run.steps[0].status == "waiting"


async def test_prompt_keys_default_by_position_and_must_be_unique(app: durable.App) -> None:
    @app.workflow
    async def two(ctx: durable.Context) -> list[int]:
        a, b = await asyncio.gather(ctx.ask("A?", type=int), ctx.ask("B?", type=int))
        return [a, b]

    @app.workflow
    async def dup(ctx: durable.Context) -> None:
        await ctx.ask("first", key="k")
        await ctx.ask("second", key="k")

    async with app:
        handle = await app.start(two, run_id="two")
        prompts = await pending(app, 2)
        assert sorted(p.key for p in prompts) == ["ask-0", "ask-1"]
        await eventually(lambda: _status_is(app, "two", "waiting"), what="the run to unload")
        await app.answer("two", "ask-1", 2)
        assert await handle.status() == "waiting"  # one prompt still pending
        await app.answer("two", "ask-0", 1)
        assert await handle.result(timeout=10) == [1, 2]

        dup_handle = await app.start(dup, run_id="dup")
        await eventually(lambda: app.prompts("dup"), what="the first prompt")
        await app.answer("dup", "k", "yes")
        with pytest.raises(durable.DuplicatePromptKey, match="already asked a prompt with key 'k'"):
            await dup_handle.result(timeout=10)


async def test_cancel_a_waiting_run(db: str) -> None:
    executed: list[str] = []
    app = approval_app(db, executed)
    async with app:
        handle = await app.start("expense", 500, run_id="e1")
        await pending(app)
        await app.cancel("e1")
        assert await handle.status() == "cancelled"
        assert await app.prompts() == []
        with pytest.raises(durable.RunAlreadyFinished, match="already ended with status 'cancelled'"):
            await app.answer("e1", "approve", True)  # the run ended: its prompt takes no answer (HTTP 409)
        with pytest.raises(durable.RunCancelled, match="Run 'e1' was cancelled"):
            await handle.result(timeout=5)
        with pytest.raises(durable.RunCancelled):
            await app.run("expense", 500, run_id="e1")
        await app.cancel("e1")  # cancelling twice is harmless
    assert executed == []


async def test_cancel_a_running_run_stops_it_at_once(app: durable.App) -> None:
    started = asyncio.Event()
    after: list[str] = []

    async def long() -> None:
        started.set()
        await asyncio.sleep(60)

    def later() -> None:
        after.append("ran")

    @app.workflow
    async def wf(ctx: durable.Context) -> None:
        await ctx.step(long)
        await ctx.step(later)

    async with app:
        handle = await app.start(wf, run_id="r")
        await started.wait()
        await app.cancel("r")
        with pytest.raises(durable.RunCancelled):
            await handle.result(timeout=5)
        run = await app.get_run("r")
        assert run.status == "cancelled" and run.steps == []
    assert after == []


async def test_cancel_a_finished_run_is_refused(app: durable.App) -> None:
    @app.workflow
    async def done(ctx: durable.Context) -> int:
        return 1

    async with app:
        await app.run(done, run_id="done")
        with pytest.raises(durable.RunAlreadyFinished, match="already ended with status 'completed'"):
            await app.cancel("done")
        with pytest.raises(durable.RunNotFound, match="No run 'nope'"):
            await app.cancel("nope")


async def test_typed_answers_come_back_as_their_type(app: durable.App) -> None:
    @app.workflow
    async def wf(ctx: durable.Context) -> str:
        when = await ctx.ask("When?", type=dt.date, key="when")
        review = await ctx.ask("Review?", type=Review, key="review")
        return f"{type(when).__name__} {when.isoformat()} {type(review).__name__} {review.reason}"

    async with app:
        handle = await app.start(wf, run_id="r")
        await pending(app)
        await app.answer("r", "when", "2026-12-24")
        await eventually(lambda: app.prompts("r"), what="the second prompt")
        await app.answer("r", "review", {"approved": True, "reason": "fine"})
        assert await handle.result(timeout=10) == "date 2026-12-24 Review fine"
