"""Races: ctx.wait and ctx.as_completed on both stores; the decision is recorded, so a replay takes the same branch."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import msgspec
import pytest

import durable
from durable.testing import VirtualClock
from helpers import eventually, finish, log_lines, make_app, records, spawn, stored_records, unloaded, wait_until


async def _status(app: durable.App, run_id: str, status: str) -> bool:
    return await app.status(run_id) == status


def decisions(db: str, run_id: str) -> list[tuple[int, str, str, object]]:
    """(seq, name, status, the decision) of a run's race records."""
    return [
        (r.seq, r.name, r.status, msgspec.json.decode(r.value) if r.status == "completed" else None)
        for r in stored_records(db, run_id)
        if r.kind == "wait"
    ]


async def test_a_message_wins_against_a_timer_while_the_run_is_unloaded_and_replays_the_same(db: str) -> None:
    app = make_app(db)

    @app.workflow
    async def order(ctx: durable.Context) -> str:
        paid = ctx.receive("payment", type=int)
        done, pending = await ctx.wait([paid, ctx.sleep(3600)])
        assert paid in done and len(pending) == 1 and next(iter(pending)).cancelled()
        return f"paid {done[paid].result()}"

    async with app:
        handle = await app.start(order, run_id="o")
        await eventually(lambda: _status(app, "o", "waiting"), what="the run to unload, racing")
        await unloaded(app, "o")  # nothing held in memory while both wait
        await app.send("o", "payment", 42)
        assert await handle.result(timeout=10) == "paid 42"
        assert await app.run(order, run_id="o") == "paid 42"
    assert records(db, "o") == [(0, "receive", "payment", "received"), (1, "sleep", "sleep", "withdrawn"),
                                (2, "wait", "FIRST_COMPLETED", "completed")]  # fmt: skip
    assert decisions(db, "o")[0][3] == {"done": [0], "withdrawn": [1]}


async def test_a_timer_that_wins_withdraws_the_receive_and_the_message_goes_to_the_next_receive(
    db: str, durable_clock: VirtualClock
) -> None:
    app = make_app(db, clock=durable_clock)

    @app.workflow
    async def order(ctx: durable.Context) -> list[object]:
        paid = ctx.receive("payment", type=int)
        done, _ = await ctx.wait([paid, ctx.sleep(60)])
        first = "paid" if paid in done else "timed out"
        return [first, await ctx.receive("payment", type=int)]

    async with app:
        handle = await app.start(order, run_id="o")
        await eventually(lambda: _status(app, "o", "waiting"), what="the race")
        await durable_clock.advance(60)
        await eventually(lambda: _status(app, "o", "waiting"), what="the second receive")
        await app.send("o", "payment", 7)
        assert await handle.result(timeout=10) == ["timed out", 7]
    assert records(db, "o") == [(0, "receive", "payment", "withdrawn"), (1, "sleep", "sleep", "completed"),
                                (2, "wait", "FIRST_COMPLETED", "completed"), (3, "receive", "payment", "received")]  # fmt: skip


async def test_a_prompt_that_loses_leaves_the_inbox_and_a_child_that_loses_is_cancelled(
    db: str, durable_clock: VirtualClock
) -> None:
    app = make_app(db, clock=durable_clock)

    @app.workflow
    async def slow_kid(ctx: durable.Context) -> str:
        await ctx.ask("kid's question", key="kid")
        return "kid"

    @app.workflow
    async def approve(ctx: durable.Context) -> str:
        done, _ = await ctx.wait([ctx.ask("Approve?", type=bool, key="ok"), ctx.child(slow_kid)], timeout=3600)
        return "answered" if done else "nobody"

    async with app:
        handle = await app.start(approve, run_id="a")
        await eventually(lambda: _status(app, "a", "waiting"), what="the race")
        await eventually(lambda: _status(app, "a.1", "waiting"), what="the child to wait")
        assert sorted(p.key for p in await app.prompts()) == ["kid", "ok"]
        await durable_clock.advance(3600)
        assert await handle.result(timeout=10) == "nobody"
        assert await app.prompts() == []
        assert await app.status("a.1") == "cancelled"
        with pytest.raises(durable.RunAlreadyFinished, match="'completed': its prompts take no more answers"):
            await app.answer("a", "ok", True)  # withdrawn, and its run has ended since
    assert decisions(db, "a")[0] == (2, "FIRST_COMPLETED", "completed", {"done": [], "timed_out": True, "withdrawn": [0, 1]})


async def test_a_message_wins_against_a_step_still_running_which_is_cancelled_and_never_run_again(db: str) -> None:
    app = make_app(db)
    calls: list[str] = []

    async def crunch() -> str:
        calls.append("start")
        await asyncio.sleep(30)
        calls.append("done")
        return "crunched"

    @app.workflow
    async def job(ctx: durable.Context) -> str:
        stop = ctx.receive("stop", type=str)
        done, _ = await ctx.wait([ctx.step(crunch), stop])
        return done[stop].result() if stop in done else done.pop().result()

    async with app:
        handle = await app.start(job, run_id="j")
        await eventually(lambda: asyncio.sleep(0, [r for r in stored_records(db, "j") if r.kind == "receive"]), what="the receive")
        assert await app.status("j") == "running"  # the step works: the run stays loaded
        await app.send("j", "stop", "stopped")
        assert await handle.result(timeout=10) == "stopped"
        assert await app.run(job, run_id="j") == "stopped"
    assert calls == ["start"]  # cancelled, never recorded, and the replay does not run it again
    assert records(db, "j") == [(0, "receive", "stop", "received"), (2, "wait", "FIRST_COMPLETED", "completed")]  # no step: 1


async def test_all_completed_with_a_timeout_and_first_exception(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)

    def fail() -> None:
        raise ValueError("no stock")

    @app.workflow
    async def gather_some(ctx: durable.Context) -> list[str]:
        quick, late = ctx.receive("a", type=str), ctx.receive("b", type=str)
        done, pending = await ctx.wait([quick, late], return_when=asyncio.ALL_COMPLETED, timeout=600)
        broke = ctx.step(fail)
        errors, _ = await ctx.wait([broke, ctx.sleep(600)], return_when=asyncio.FIRST_EXCEPTION)
        return [done[quick].result(), str(late in pending), type(errors[broke].exception()).__name__]

    async with app:
        handle = await app.start(gather_some, run_id="g")
        await eventually(lambda: _status(app, "g", "waiting"), what="the race")
        await app.send("g", "a", "A")
        await eventually(lambda: _status(app, "g", "waiting"), what="the race, again after one message")
        await durable_clock.advance(600)
        assert await handle.result(timeout=10) == ["A", "True", "ValueError"]
    assert [d[3] for d in decisions(db, "g")] == [{"done": [0], "timed_out": True, "withdrawn": [1]}, {"done": [3], "withdrawn": [4]}]


async def test_as_completed_takes_results_in_the_order_they_finish_and_replays_that_order(db: str) -> None:
    app = make_app(db)

    async def paced(name: str, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return name

    @app.workflow
    async def quotes(ctx: durable.Context) -> list[str]:
        calls = [ctx.step(paced, "slow", 0.3), ctx.step(paced, "fast", 0.01), ctx.step(paced, "middle", 0.1)]
        return [await next_done for next_done in ctx.as_completed(calls)]

    async with app:
        assert await app.run(quotes, run_id="q") == ["fast", "middle", "slow"]
        # Replayed: every step is recorded, so without the recorded order they would come back in seq order.
        assert await app.run(quotes, run_id="q") == ["fast", "middle", "slow"]
    assert [d[3] for d in decisions(db, "q")] == [{"done": [1]}, {"done": [2]}, {"done": [0]}]


async def test_as_completed_with_a_timeout_raises_timeout_error_for_what_is_left(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)

    @app.workflow
    async def offers(ctx: durable.Context) -> list[str]:
        got: list[str] = []
        try:
            for next_offer in ctx.as_completed([ctx.receive("a", type=str), ctx.receive("b", type=str)], timeout=60):
                got.append(await next_offer)
        except TimeoutError:
            got.append("timeout")
        return got

    async with app:
        handle = await app.start(offers, run_id="o")
        await eventually(lambda: _status(app, "o", "waiting"), what="the offers")
        await app.send("o", "b", "B")
        await eventually(lambda: _status(app, "o", "waiting"), what="the second offer")
        await durable_clock.advance(60)
        assert await handle.result(timeout=10) == ["B", "timeout"]


async def test_a_race_timeout_fires_in_a_worker_started_after_it_fell_due(db: str) -> None:
    clock = [1_000_000.0]

    def make() -> durable.App:
        app = make_app(db, clock=lambda: clock[0])

        @app.workflow(name="wf")
        async def wf(ctx: durable.Context) -> str:
            done, _ = await ctx.wait([ctx.ask("ok?", key="ok")], timeout=3600)
            return "answered" if done else "expired"

        return app

    async with make() as app:
        await app.start("wf", run_id="r")
        await eventually(lambda: _status(app, "r", "waiting"), what="the race")
    clock[0] += 7200  # while no process runs
    async with make() as app:
        await eventually(lambda: _status(app, "r", "completed"), what="the race's timeout, after the restart")
        assert await app.run("wf", run_id="r") == "expired"


async def test_plain_asyncio_wait_and_as_completed_over_ctx_calls_are_refused(db: str) -> None:
    app = make_app(db)

    @app.workflow
    async def with_wait(ctx: durable.Context) -> str:
        tasks = [asyncio.ensure_future(ctx.step(asyncio.sleep, 0.01, "a")), asyncio.ensure_future(ctx.sleep(3600))]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return "went on"

    @app.workflow
    async def with_as_completed(ctx: durable.Context) -> str:
        for first in asyncio.as_completed([ctx.receive("a"), ctx.step(asyncio.sleep, 0.01, "b")]):
            return str(await first)
        return "none"

    async with app:
        for wf, fix in ((with_wait, "ctx.wait"), (with_as_completed, "ctx.as_completed")):
            with pytest.raises(durable.UnsafeRace, match=fix.replace(".", r"\.")):
                await app.run(wf, run_id=wf.__name__)
            assert await app.status(wf.__name__) == "blocked"
            assert [r for r in stored_records(db, wf.__name__) if r.kind == "step"] == []  # nothing recorded


async def test_ctx_wait_refuses_what_it_cannot_journal_and_writes_nothing(db: str) -> None:
    app = make_app(db)

    async def mine() -> int:
        return 1

    @app.workflow
    async def bad(ctx: durable.Context, what: str) -> str:
        if what == "coroutine":
            await ctx.wait([mine()])
        elif what == "empty":
            await ctx.wait([])
        else:
            await ctx.wait([ctx.sleep(1)], return_when="FIRST")
        return "no"

    async with app:
        for what, error, words in (("coroutine", TypeError, "Make the work a step"), ("empty", ValueError, "at least one"),
                                   ("when", ValueError, "FIRST_COMPLETED")):  # fmt: skip
            with pytest.raises(error, match=words):
                await app.run(bad, what, run_id=what)
            assert records(db, what) == []


@pytest.mark.parametrize("workflow", ["first_wins", "in_order"])
def test_a_race_killed_right_after_its_first_completion_takes_the_same_branch_when_rerun(
    db: str, tmp_path: Path, workflow: str
) -> None:
    log = tmp_path / "log"
    child = spawn(db, log, "r", workflow, "--block", "after-fast", RACE_SLOW="0.5")
    try:
        # Killed in the step after the first completion (and, for as_completed, once the slow one finished too).
        wait_until(lambda: "start after-fast" in log_lines(log), what="the step after the race")
        if workflow == "in_order":
            # Its record (seq 0), not its last log line: a kill between the two rightly runs the step again.
            wait_until(lambda: (0, "step", "paced", "completed") in records(db, "r"), what="the slow step to be recorded as well")
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    # Rerun with the timings swapped: 'slow' is now the fast one. A replay that did not read the
    # recorded decision would take the slow branch (first by seq, and now first to finish).
    out = finish(spawn(db, log, "r", workflow, RACE_FLIP="1", RACE_SLOW="0.5"))
    lines = log_lines(log)
    if workflow == "first_wins":
        assert out.strip().endswith('RESULT "after-fast-ok"')
        assert lines.count("start slow") == 1 and "done slow" not in lines  # the loser was cancelled, never rerun
    else:
        assert out.strip().endswith('RESULT ["after-fast-ok","after-slow-ok"]')
        assert lines.count("start slow") == 1 and lines.count("start fast") == 1  # both recorded once
    assert lines.count("start after-fast") == 2 and lines.index("start after-fast") < lines.index("done fast") + 2
    assert "start after-slow" not in lines[: lines.index("start after-fast") + 1]


async def test_a_fork_inside_a_race_runs_it_anew_and_one_after_it_keeps_its_decision(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)

    @app.workflow
    async def order(ctx: durable.Context) -> str:
        paid = ctx.receive("payment", type=int)
        done, _ = await ctx.wait([paid, ctx.sleep(60)])
        return f"paid {done[paid].result()}" if paid in done else "expired"

    async with app:
        first = await app.start(order, run_id="o")
        await eventually(lambda: _status(app, "o", "waiting"), what="the race")
        await durable_clock.advance(60)
        assert await first.result(timeout=10) == "expired"
        after = await app.fork("o", at_seq=3, new_run_id="after")  # the decision is copied: replayed as it was
        assert await after.result(timeout=10) == "expired"
        inside = await app.fork("o", at_seq=1, new_run_id="inside")  # only the withdrawn receive before: not copied
        await eventually(lambda: _status(app, "inside", "waiting"), what="the fork's race")
        await app.send("inside", "payment", 5)
        assert await inside.result(timeout=10) == "paid 5"
    assert records(db, "inside")[0] == (0, "receive", "payment", "received")


async def test_check_replays_decided_and_waiting_races_and_the_test_kit_replays_every_step(db: str) -> None:
    app = make_app(db, replay_every_step=True)

    @app.workflow
    async def race(ctx: durable.Context) -> list[str]:
        done, _ = await ctx.wait([ctx.step(str.upper, "a"), ctx.receive("never", type=str)])
        got = [b.result() for b in done]
        done, _ = await ctx.wait([ctx.receive("go", type=str), ctx.ask("or answer", key="k")])
        return got + [b.result() for b in done]

    async with app:
        handle = await app.start(race, run_id="r")
        async def asked() -> bool:  # the second race's prompt (replay_every_step parks the run after each record)
            return any(p.key == "k" for p in await app.prompts(run_id="r"))

        await eventually(asked, what="the second race's prompt")

        async def checked() -> bool:  # replay_every_step replays the parked run once more: check skips it meanwhile
            return [(c.run_id, c.verdict) for c in await app.check()] == [("r", "ok")]

        await eventually(checked, what="check() to replay the parked run: ok")
        await app.answer("r", "k", "yes")
        assert await handle.result(timeout=10) == ["A", "yes"]
    assert [d[3] for d in decisions(db, "r")] == [{"done": [0], "withdrawn": [1]}, {"done": [4], "withdrawn": [3]}]


async def test_a_step_waiting_to_retry_in_a_race_lets_the_run_unload_and_the_other_branch_win(
    db: str, durable_clock: VirtualClock
) -> None:
    app = make_app(db, clock=durable_clock)
    attempts: list[int] = []

    @durable.step(retries=3, backoff_seconds=600)
    def flaky() -> str:
        attempts.append(1)
        raise ConnectionError("down")

    @app.workflow
    async def job(ctx: durable.Context) -> str:
        stop = ctx.receive("stop", type=str)
        done, _ = await ctx.wait([ctx.step(flaky), stop])
        return done[stop].result() if stop in done else "retried"

    async with app:
        handle = await app.start(job, run_id="j")
        await eventually(lambda: _status(app, "j", "waiting"), what="the run to unload while its step waits to retry")
        await app.send("j", "stop", "stopped")
        assert await handle.result(timeout=10) == "stopped"
    assert attempts == [1]


async def test_an_as_completed_left_early_does_not_keep_later_waits_from_waking_the_run(db: str) -> None:
    app = make_app(db)

    @app.workflow
    async def first_only(ctx: durable.Context) -> list[str]:
        for next_done in ctx.as_completed([ctx.receive("a", type=str), ctx.receive("b", type=str)]):
            first = await next_done
            break
        return [first, await ctx.receive("c", type=str), await ctx.receive("d", type=str)]

    async with app:
        handle = await app.start(first_only, run_id="r")
        for topic in "acd":
            await eventually(lambda: _status(app, "r", "waiting"), what=f"the run to wait before {topic}")
            await app.send("r", topic, topic.upper())
        assert await handle.result(timeout=10) == ["A", "C", "D"]


async def test_a_receive_timeout_in_a_race_fires_while_a_step_still_works(db: str) -> None:
    app = make_app(db)

    async def crunch() -> str:
        await asyncio.sleep(20)
        return "crunched"

    @app.workflow
    async def job(ctx: durable.Context) -> str:
        late = ctx.receive("x", type=str, timeout=0.2, default="timed out")
        done, _ = await ctx.wait([ctx.step(crunch), late])
        return done[late].result()

    async with app:
        assert await asyncio.wait_for(app.run(job, run_id="j"), 10) == "timed out"


async def test_cancel_stops_a_step_running_in_a_race_at_once(db: str) -> None:
    app = make_app(db)
    calls: list[str] = []

    async def crunch() -> str:
        calls.append("start")
        await asyncio.sleep(20)
        calls.append("done")
        return "crunched"

    @app.workflow
    async def job(ctx: durable.Context) -> str:
        done, _ = await ctx.wait([ctx.step(crunch), ctx.receive("x", type=str)])
        return "no"

    async with app:
        handle = await app.start(job, run_id="j")
        await eventually(lambda: asyncio.sleep(0, calls), what="the step to start")
        await app.cancel("j")
        with pytest.raises(durable.RunCancelled):
            await asyncio.wait_for(handle.result(), 5)
        await eventually(lambda: asyncio.sleep(0, app.engine.executing("j") is None), what="the execution to end")
    assert calls == ["start"]


async def test_done_comes_in_the_order_the_calls_finished_and_other_tasks_may_make_ctx_calls_meanwhile(db: str) -> None:
    app = make_app(db)

    async def paced(name: str, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return name

    @app.workflow
    async def fan(ctx: durable.Context) -> list[str]:
        async with asyncio.TaskGroup() as tg:  # a ctx call in another task while the race waits: not a plain race
            side = tg.create_task(ctx.step(paced, "side", 0.05))
            done, _ = await ctx.wait(
                [ctx.step(paced, "c", 0.3), ctx.step(paced, "b", 0.15), ctx.step(paced, "a", 0.01)],
                return_when=asyncio.ALL_COMPLETED,
            )
        return [b.result() for b in done] + [side.result()]

    async with app:
        assert await app.run(fan, run_id="f") == ["a", "b", "c", "side"]
        assert await app.run(fan, run_id="f") == ["a", "b", "c", "side"]  # replayed: the recorded order
