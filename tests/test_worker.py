"""Workers in real processes: runs move on by themselves, and nothing runs twice."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import durable
from helpers import HERE, eventually, make_app, wait_until


def start_worker(
    db: str, log: Path, *, block: str | None = None, concurrency: int = 100, **settings: str
) -> subprocess.Popen[str]:
    """`durable worker fleet:app`; settings are fleet.py's FLEET_* variables (pause="r:1=3", lease="1.5")."""
    env = dict(os.environ, DURABLE_DB=db, FLEET_LOG=str(log), **{f"FLEET_{k.upper()}": v for k, v in settings.items()})
    if block:
        env["FLEET_BLOCK"] = block
    return subprocess.Popen(
        [sys.executable, "-m", "durable", "worker", "fleet:app", "--concurrency", str(concurrency)],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return err


def entries(log: Path, kind: str) -> list[tuple[str, str]]:
    """(run:step, pid) of each `kind` line ('start' or 'done')."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        word, key, pid = line.split()
        if word == kind:
            out.append((key, pid))
    return out


async def statuses(app: durable.App, n: int) -> collections.Counter[str]:
    return collections.Counter(r.status for r in await app.list_runs(limit=n))


async def all_completed(app: durable.App, n: int) -> bool:
    return (await statuses(app, n))["completed"] == n


async def test_two_workers_complete_100_runs_each_step_once(db: str, tmp_path: Path) -> None:
    log = tmp_path / "fleet.log"
    async with make_app(db) as producer:  # has no workflow code: it only submits by name
        for i in range(100):
            await producer.submit("chain", steps=4, step_seconds=0.01, run_id=f"run-{i:03}")
        # neither worker can hold all 100 runs at once, so both take part
        workers = [start_worker(db, log, concurrency=20), start_worker(db, log, concurrency=20)]
        try:
            await eventually(lambda: all_completed(producer, 100), timeout=120, what="100 runs to complete")
            results = {r.run_id: r.result for r in await producer.list_runs(limit=100)}
        finally:
            errs = [stop(w) for w in workers]
    assert set(results.values()) == {0 + 1 + 2 + 3}
    starts = collections.Counter(key for key, _ in entries(log, "start"))
    assert len(starts) == 400 and set(starts.values()) == {1}
    by_pid = collections.Counter(pid for _, pid in entries(log, "start"))
    assert len(by_pid) == 2, f"both workers should have taken runs: {by_pid}"
    assert all("stopped" in err for err in errs)


async def test_sigkill_one_worker_the_other_finishes_its_runs(db: str, tmp_path: Path) -> None:
    log = tmp_path / "fleet.log"
    async with make_app(db) as producer:
        for i in range(40):
            await producer.submit("chain", steps=5, step_seconds=0.02, run_id=f"run-{i:02}")
        victim = start_worker(db, log, concurrency=10)
        wait_until(lambda: len(entries(log, "done")) >= 30, what="the first worker to get going")
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
        survivor = start_worker(db, log)
        try:
            await eventually(lambda: all_completed(producer, 40), timeout=120, what="the survivor to finish")
        finally:
            stop(survivor)
    starts = collections.Counter(key for key, _ in entries(log, "start"))
    assert len(starts) == 200
    twice = {key for key, n in starts.items() if n == 2}
    assert set(starts.values()) <= {1, 2}
    # only steps in flight in the dead worker ran again: at most one per run it held
    assert len(twice) <= 10
    first_start = {}
    for key, pid in entries(log, "start"):
        first_start.setdefault(key, pid)
    assert {first_start[k] for k in twice} <= {str(victim.pid)}
    done_by = collections.Counter(key for key, _ in entries(log, "done"))
    assert all(done_by[k] == 1 for k in starts if k not in twice)


async def test_runs_answered_from_the_cli_resume_when_a_worker_starts(db: str, tmp_path: Path) -> None:
    log = tmp_path / "fleet.log"
    async with make_app(db) as producer:
        for i in range(50):
            await producer.submit("approve", run_id=f"a-{i:02}")
        worker = start_worker(db, log)
        try:
            await eventually(lambda: _n_prompts(producer, 50), timeout=60, what="50 prompts")
        finally:
            stop(worker)
    # answered with no worker alive, from a process that has no workflow code
    for i in range(50):
        answer = "true" if i % 2 == 0 else "false"
        done = subprocess.run(
            [sys.executable, "-m", "durable", "answer", f"a-{i:02}", "first", answer, "--db", db],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    worker = start_worker(db, log)
    async with make_app(db) as inbox:
        try:
            # the 25 approved runs ask their second question; the 25 refused ones complete
            await eventually(lambda: _n_prompts(inbox, 25), timeout=60, what="25 second prompts")
            await eventually(lambda: _n_status(inbox, "completed", 25), timeout=60, what="25 refused runs")
            assert {p.key for p in await inbox.prompts()} == {"second"}
            for prompt in await inbox.prompts():
                await inbox.answer(prompt.run_id, "second", True)
            await eventually(lambda: all_completed(inbox, 50), timeout=60, what="all 50 runs")
            results = collections.Counter(r.result for r in await inbox.list_runs(limit=50))
        finally:
            stop(worker)
    assert results == {"True/True": 25, "False/False": 25}


async def _n_prompts(app: durable.App, n: int) -> bool:
    return len(await app.prompts()) == n


async def _n_status(app: durable.App, status: str, n: int) -> bool:
    return (await statuses(app, 100))[status] == n


async def test_restarted_worker_wakes_sleeping_runs_at_their_recorded_time(db: str, tmp_path: Path) -> None:
    log = tmp_path / "fleet.log"
    async with make_app(db) as producer:
        for i, seconds in enumerate([2.5, 3.0, 3.5, 4.0]):
            await producer.submit("nap", seconds, run_id=f"nap-{i}")
        first = start_worker(db, log)
        try:
            await eventually(lambda: _n_status(producer, "sleeping", 4), timeout=30, what="4 sleeping runs")
        finally:
            stop(first)
        second = start_worker(db, log)
        try:
            await eventually(lambda: all_completed(producer, 4), timeout=60, what="the runs to wake")
        finally:
            stop(second)
        for i in range(4):
            run = await producer.get_run(f"nap-{i}")
            sleep, step = run.steps
            wake_at = durable_time(sleep.value)
            # woke at its recorded time, not before, and not long after (generous bound: loaded CI machines)
            assert wake_at <= step.started_at.timestamp() < wake_at + 2.0


def durable_time(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def test_cancel_from_another_process_while_executing_and_while_waiting(db: str, tmp_path: Path) -> None:
    log = tmp_path / "fleet.log"
    async with make_app(db) as control:
        await control.submit("chain", steps=3, run_id="busy")
        await control.submit("approve", run_id="idle")
        worker = start_worker(db, log, block="busy:1")
        try:
            wait_until(lambda: ("busy:1" in {k for k, _ in entries(log, "start")}), what="busy to block in step 1")
            await eventually(lambda: control.prompts("idle"), what="idle to wait")
            await control.cancel("busy")
            await control.cancel("idle")
            assert (await control.get_run("busy")).status == "cancelled"
            # the worker notices the foreign write and drops its claim: nothing more is written
            await asyncio.sleep(0.5)
            run = await control.get_run("busy")
        finally:
            err = stop(worker)
        assert run.status == "cancelled" and [s.seq for s in run.steps] == [0]
        assert (await control.get_run("idle")).status == "cancelled"
        assert await control.prompts() == []
    assert "busy:2" not in {k for k, _ in entries(log, "start")}
    assert "run busy ✋ chain stopped: cancelled or taken over by another process" in err


async def test_claim_race_on_an_orphan_has_one_winner(db: str, tmp_path: Path) -> None:
    log = tmp_path / "fleet.log"
    async with make_app(db) as control:
        await control.submit("chain", steps=3, run_id="orphan")
        owner = start_worker(db, log, block="orphan:1")
        wait_until(lambda: "orphan:1" in {k for k, _ in entries(log, "start")}, what="the orphan-to-be to block")
        owner.send_signal(signal.SIGKILL)
        owner.communicate(timeout=30)
        assert (await control.get_run("orphan")).status == "running"  # its owner is dead
        workers = [start_worker(db, log) for _ in range(6)]
        try:
            await eventually(lambda: all_completed(control, 1), timeout=60, what="the orphan to be finished")
        finally:
            errs = [stop(w) for w in workers]
    recovered = [e for e in errs if f"run orphan ↻ chain resumed: recovered from pid {owner.pid}, which died" in e]
    assert len(recovered) == 1
    starts = [(k, pid) for k, pid in entries(log, "start")]
    resumed = [pid for k, pid in starts if k == "orphan:1" and pid != str(owner.pid)]
    assert len(resumed) == 1  # exactly one of the six took it
    assert collections.Counter(k for k, _ in starts) == {"orphan:0": 1, "orphan:1": 2, "orphan:2": 1}


async def test_a_worker_stopped_past_its_lease_writes_nothing_into_the_run_another_took(db: str, tmp_path: Path) -> None:
    # Same machine, same PID namespace: the stopped process is alive, so only its
    # lease can tell; once it has expired another worker takes the run over.
    log = tmp_path / "fleet.log"
    async with make_app(db) as control:
        await control.submit("who", steps=3, run_id="stale")
        first = start_worker(db, log, pause="stale:1=3", lease="1.5")
        wait_until(lambda: "stale:1" in {k for k, _ in entries(log, "start")}, what="step 1 to start")
        first.send_signal(signal.SIGSTOP)
        second = start_worker(db, log, lease="1.5")
        try:
            await eventually(lambda: all_completed(control, 1), timeout=30, what="the second worker to finish the run")
            taken = await control.get_run("stale")
        finally:
            # The first worker wakes with its step in flight; a stop lets it finish
            # (a graceful stop records what finishes), so it exits only after it
            # has tried to go on with the run, or learnt that it lost it.
            first.send_signal(signal.SIGCONT)
            err_first, err_second = stop(first), stop(second)
        after = await control.get_run("stale")
    assert after == taken  # nothing written after the takeover
    assert after.result == [first.pid, second.pid, second.pid]  # step 0 stands; 1 and 2 by the second worker
    assert [s.value for s in after.steps] == [first.pid, second.pid, second.pid]
    assert f"run stale ↻ who resumed: recovered from pid {first.pid}, whose lease expired" in err_second
    assert "run stale ✋ who stopped: cancelled or taken over by another process" in err_first


async def test_a_graceful_stop_records_the_steps_it_lets_finish(db: str, tmp_path: Path) -> None:
    # SIGTERM while step 1 is in flight: the worker lets it finish, records it, then
    # hands the run back. The next worker must not run step 1 again (a deploy would
    # otherwise repeat every side effect in flight).
    log = tmp_path / "fleet.log"
    async with make_app(db) as control:
        await control.submit("chain", steps=3, run_id="deploy")
        first = start_worker(db, log, pause="deploy:1=1.0")
        wait_until(lambda: "deploy:1" in {k for k, _ in entries(log, "start")}, what="step 1 to start")
        err = stop(first)  # SIGTERM, and wait for the worker to exit
        run = await control.get_run("deploy")
        assert [s.seq for s in run.steps] == [0, 1] and run.status == "pending"
        second = start_worker(db, log)
        try:
            await eventually(lambda: all_completed(control, 1), timeout=30, what="the run to complete")
        finally:
            stop(second)
    assert collections.Counter(k for k, _ in entries(log, "start")) == {"deploy:0": 1, "deploy:1": 1, "deploy:2": 1}
    assert "run deploy ⇠ chain released for another worker (shutdown)" in err


async def test_a_dead_processs_run_is_taken_before_a_backlog_of_new_ones(db: str) -> None:
    from durable.owner import _here

    host, boot, pidns = _here()
    dead = f"{host}|{boot}|{pidns}|999999|1|gone"  # this machine, no such process
    started: list[str] = []

    async def work(run_id: str) -> None:
        started.append(run_id)
        await asyncio.sleep(0.02)

    app = make_app(db, max_concurrent_runs=2)

    @app.workflow
    async def job(ctx: durable.Context) -> None:
        await ctx.step(work, ctx.run_id)

    async with make_app(db) as producer:
        for i in range(50):
            await producer.submit("job", run_id=f"new-{i:02}")
        blob = b'{"args":[],"kwargs":{}}'
        assert await producer.store.create_run("orphan", "job", blob, dead, 30.0, 1.0) is None
    async with app:
        await eventually(lambda: _all_done(app, 51), timeout=60, what="every run to complete")
    assert "orphan" in started[:2]  # in the first pass, ahead of the 50 pending ones


async def _all_done(app: durable.App, n: int) -> bool:
    return len(await app.list_runs(status="completed", limit=n + 1)) == n


async def test_runs_of_a_workflow_nobody_registers_are_named_in_the_log_and_by_durable_runs(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from click.testing import CliRunner

    from durable.cli import main

    caplog.set_level(logging.WARNING, logger="durable")
    app = make_app(db)

    @app.workflow
    async def known(ctx: durable.Context) -> None:
        pass

    async with app:
        await app.submit("forgotten", run_id="lost-1")
        await app.submit("forgotten", run_id="lost-2")
        await eventually(lambda: _logged(caplog, "of workflow 'forgotten'"), what="the warning")  # 1 or 2, as the pass saw them
    assert "this worker does not have that workflow (it has: known)" in caplog.text
    caplog.clear()
    async with make_app(db) as client:  # registers no workflow: a client, which has nothing to say about them
        await client._worker._tell_unknown()  # the pass that warns, run at once
    assert "does not have that workflow" not in caplog.text
    async with make_app(db, clock=lambda: time.time() - 60) as old:
        await old.submit("forgotten", run_id="lost-3")
    result = await asyncio.to_thread(CliRunner().invoke, main, ["runs", "--db", db])
    assert result.exit_code == 0, result.output
    assert "note: runs of 'forgotten' have been pending for over 10 s: no worker with that workflow has taken them" in result.output


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text
