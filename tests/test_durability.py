"""Durability as behaviour: real child processes, killed with SIGKILL, then rerun."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import time
from pathlib import Path

import pytest

import durable
from helpers import finish, log_lines, make_app, records, spawn, stored_records, stored_run, wait_until


def starts(log: Path) -> collections.Counter[str]:
    return collections.Counter(line.split(" ", 1)[1] for line in log_lines(log) if line.startswith("start "))


def kill(proc) -> None:  # type: ignore[no-untyped-def]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def result_of(out: str) -> object:
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_completed_run_replays_in_another_process_without_executing(db: str, tmp_path: Path) -> None:
    log = tmp_path / "side-effects.log"
    first = result_of(finish(spawn(db, log, "r1", "sequential")))
    before = log_lines(log)
    second = result_of(finish(spawn(db, log, "r1", "sequential")))
    assert second == first == [f"s{i}-ok" for i in range(5)]
    assert log_lines(log) == before  # nothing executed the second time


def test_sigkill_mid_step_then_rerun_runs_each_completed_step_once(db: str, tmp_path: Path) -> None:
    log = tmp_path / "side-effects.log"
    proc = spawn(db, log, "r1", "sequential", "--block", "s2")
    wait_until(lambda: "start s2" in log_lines(log), what="step s2 to start")
    kill(proc)
    assert [r[2] for r in records(db, "r1")] == ["work", "work"]  # s0 and s1 are committed

    assert result_of(finish(spawn(db, log, "r1", "sequential"))) == [f"s{i}-ok" for i in range(5)]
    assert starts(log) == {"s0": 1, "s1": 1, "s2": 2, "s3": 1, "s4": 1}


def test_sigkill_during_gather_replays_the_committed_branches(db: str, tmp_path: Path) -> None:
    log = tmp_path / "side-effects.log"
    proc = spawn(db, log, "r1", "parallel", "--block", "p2")
    # p0, p1 and p3 committed (seq 1, 2, 4), p2 (seq 3) in flight.
    wait_until(lambda: {r[0] for r in records(db, "r1")} == {0, 1, 2, 4}, what="three branches to commit")
    kill(proc)

    out = finish(spawn(db, log, "r1", "parallel"))
    assert result_of(out) == ["before-ok", "p0-ok", "p1-ok", "p2-ok", "p3-ok", "after-ok"]
    assert starts(log) == {"before": 1, "p0": 1, "p1": 1, "p2": 2, "p3": 1, "after": 1}
    assert [r[0] for r in records(db, "r1")] == [0, 1, 2, 3, 4, 5]


def test_typed_values_are_identical_before_and_after_a_crash(db: str, tmp_path: Path) -> None:
    log = tmp_path / "side-effects.log"
    proc = spawn(db, log, "r1", "typed", "--block", "end")
    wait_until(lambda: "start end" in log_lines(log), what="the last step to start")
    # ctx.now()'s record is not awaited: it commits before anything recorded after it, not before the next
    # step starts. The values compared are those of the journal, so the kill waits for all four records.
    wait_until(lambda: [r[0] for r in records(db, "r1")] == [0, 1, 2, 3], what="the values to be recorded")
    kill(proc)
    assert result_of(finish(spawn(db, log, "r1", "typed"))) == "typed-ok"

    values = [line for line in log_lines(log) if line.startswith("values ")]
    types = [line for line in log_lines(log) if line.startswith("types ")]
    assert len(values) == 2 and values[0] == values[1]
    assert types[0] == types[1] == "types ['Invoice', 'Customer', 'list', 'datetime']"
    assert "Line(sku='a', qty=1)" in values[0] and "Colour.BLUE" in values[0]
    assert starts(log)["invoice"] == starts(log)["customer"] == starts(log)["lines"] == 1


def wake_time(db: str) -> float | None:
    sleep = next((r for r in stored_records(db, "r1") if r.kind == "sleep"), None)
    if sleep is None or sleep.value is None:
        return None
    from datetime import datetime

    return datetime.fromisoformat(json.loads(sleep.value).replace("Z", "+00:00")).timestamp()


def test_durable_sleep_killed_half_way_waits_only_the_remainder(db: str, tmp_path: Path) -> None:
    log = tmp_path / "side-effects.log"
    proc = spawn(db, log, "r1", "sleeper", "--seconds", "4")
    wake_at = wait_until(lambda: wake_time(db), what="the sleep to be recorded")
    wait_until(lambda: time.time() > wake_at - 2.5, what="half of the sleep")
    kill(proc)

    rerun_at = time.time()
    assert result_of(finish(spawn(db, log, "r1", "sleeper", "--seconds", "4"))) == "slept"
    assert wake_time(db) == wake_at  # the timer was not recorded again
    after_started = stored_records(db, "r1")[2].started_at
    assert after_started >= wake_at  # it did wait until the recorded time...
    assert after_started < rerun_at + 4.0  # ...and not a whole new 4 s from the rerun
    assert starts(log) == {"before": 1, "after": 1}


def test_two_processes_starting_one_run_id_execute_it_once(db: str, tmp_path: Path) -> None:
    log = tmp_path / "side-effects.log"
    procs = [spawn(db, log, "shared", "sequential") for _ in range(2)]
    results = [result_of(finish(p)) for p in procs]
    assert results[0] == results[1] == [f"s{i}-ok" for i in range(5)]
    assert starts(log) == {f"s{i}": 1 for i in range(5)}


@pytest.mark.parametrize("victim", ["s1", "s3"])
def test_rerun_after_crash_takes_over_at_once(db: str, tmp_path: Path, victim: str) -> None:
    log = tmp_path / "side-effects.log"
    proc = spawn(db, log, "r1", "sequential", "--block", victim)
    wait_until(lambda: f"start {victim}" in log_lines(log), what=f"{victim} to start")
    kill(proc)
    # The dead owner is recognised from its pid at once: no lease to wait out
    # (the lease is 30 s and the test's timeout would expire long before).
    out = finish(spawn(db, log, "r1", "sequential"), timeout=20)
    assert result_of(out) == [f"s{i}-ok" for i in range(5)]


executed: list[str] = []


def work(name: str) -> str:  # same qualified name as the step in procs.py, so its records replay here
    executed.append(name)
    return f"{name}-ok"


async def test_rerun_while_the_worker_recovers_the_run_executes_it_once(db: str, tmp_path: Path) -> None:
    log = tmp_path / "side-effects.log"
    proc = spawn(db, log, "r1", "sequential", "--block", "s2")
    wait_until(lambda: "start s2" in log_lines(log), what="step s2 to start")
    kill(proc)

    app = make_app(db)

    @app.workflow
    async def sequential(ctx: durable.Context) -> list[str]:
        return [await ctx.step(work, f"s{i}") for i in range(5)]

    executed.clear()
    claimed, go_on = asyncio.Event(), asyncio.Event()
    load_replay = app.store.load_replay

    async def load_after_gate(run_id: str) -> list[object]:
        claimed.set()
        await go_on.wait()
        return await load_replay(run_id)

    async with app:
        # Hold the worker between its claim of the orphan and the launch of the
        # replay: the window in which an explicit rerun once took the run twice.
        app.store.load_replay = load_after_gate  # type: ignore[method-assign]
        await claimed.wait()
        handle = await app.start(sequential, run_id="r1")
        go_on.set()
        assert await handle.result(timeout=20) == [f"s{i}-ok" for i in range(5)]
    assert executed == ["s2", "s3", "s4"]


@pytest.mark.parametrize(("how", "status"), [("exit", 3), ("interrupt", -signal.SIGINT)])
def test_sys_exit_or_ctrl_c_inside_a_step_exits_the_process_and_hands_the_run_back(
    db: str, tmp_path: Path, how: str, status: int
) -> None:
    log = tmp_path / "side-effects.log"
    proc = spawn(db, log, "r1", "leaver", PROCS_LEAVE=how)
    proc.communicate(timeout=30)  # it must not hang
    assert proc.returncode == status
    run = stored_run(db, "r1")
    assert run is not None and (run.status, run.owner) == ("pending", None)  # released, not failed
    assert [r[2].rsplit(".", 1)[-1] for r in records(db, "r1")] == ["work"]  # the leaving step is not recorded
    assert result_of(finish(spawn(db, log, "r1", "leaver"))) == ["before-ok", "stayed"]
    assert starts(log) == {"before": 1, "leave": 2}


def test_a_crash_during_a_retry_backoff_adds_no_attempt(db: str, tmp_path: Path) -> None:
    # retries=2: three attempts in all, whatever happens between them.
    log = tmp_path / "side-effects.log"
    proc = spawn(db, log, "r1", "retrier")
    wait_until(lambda: log_lines(log).count("start attempt") == 1, what="the first attempt to fail")
    wait_until(lambda: any(r[3] == "retrying" for r in records(db, "r1")), what="the retry to be journaled")
    kill(proc)  # during the backoff
    assert result_of(finish(spawn(db, log, "r1", "retrier"))) == "gave up"
    assert log_lines(log).count("start attempt") == 3
    (record,) = stored_records(db, "r1")
    assert (record.status, record.attempts) == ("failed", 3)
