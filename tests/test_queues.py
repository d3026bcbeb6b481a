"""Queues on both stores: limits hold across worker processes; delay and priority; `durable submit` and `queues`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import durable
from durable.store import is_url, make_store
from durable.cli import main
from helpers import HERE, eventually, make_app, run_sync


def start_workers(db: str, log: Path, n: int, **env: str) -> list[subprocess.Popen[str]]:
    environ = dict(os.environ, DURABLE_DB=db, QUEUED_LOG=str(log), **env)
    return [
        subprocess.Popen(
            [sys.executable, "-m", "durable", "worker", "queued:app"], cwd=HERE, env=environ,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for _ in range(n)
    ]


def stop_all(workers: list[subprocess.Popen[str]]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.communicate(timeout=30)


def events(log: Path) -> list[tuple[str, str, str, float, str]]:
    """(start|end, run_id, key, time, pid) of each line, in the order they happened."""
    rows = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return [(w, r, k, float(t), p) for w, r, k, t, p in rows]


async def recorded_starts(db: str, queue: str) -> list[float]:
    """The runs' first starts on `queue`, as the store recorded them (runs.started_at), in order."""
    store = make_store(db)
    await store.open()
    try:
        if is_url(db):
            rows = await store._fetch("SELECT started_at FROM durable.runs WHERE queue = $1", queue)  # type: ignore[attr-defined]
        else:
            rows = await store._fetch("SELECT started_at FROM runs WHERE queue = ?", (queue,))  # type: ignore[attr-defined]
    finally:
        await store.close()
    return sorted(row[0] for row in rows)


def peak(rows: list[tuple[str, str, str, float, str]], by: int | None = None) -> int:
    """The most runs executing at once (per value of field `by`: key or pid), from the ordered events."""
    live: dict[str, int] = {}
    most = 0
    for row in rows:
        group = "" if by is None else row[by]
        live[group] = live.get(group, 0) + (1 if row[0] == "start" else -1)
        most = max(most, live[group])
    return most


async def submit_and_finish(db: str, log: Path, queue: str, n: int, workers: int, **submit: object) -> list[tuple[str, str, str, float, str]]:
    procs = start_workers(db, log, workers)
    try:
        async with make_app(db) as producer:  # a process with no workflow code: it only submits
            for i in range(n):
                key = submit.get("key_of", lambda i: None)(i)  # type: ignore[operator]
                await producer.submit("job", *(() if key is None else (key,)), run_id=f"{queue}-{i}", queue=queue, key=key)
            await eventually(lambda: _all_done(producer, n), timeout=120, what=f"the {n} runs of {queue}")
    finally:
        stop_all(procs)
    return events(log)


async def _all_done(app: durable.App, n: int) -> bool:
    runs = await app.list_runs(limit=n + 10)
    return sum(r.status == "completed" for r in runs) == n


async def test_a_queue_of_concurrency_2_runs_at_most_2_at_once_across_three_workers(db: str, tmp_path: Path) -> None:
    log = tmp_path / "log"
    procs = start_workers(db, log, 3)
    try:
        async with make_app(db) as producer:
            for i in range(30):
                await producer.submit("job", run_id=f"pair-{i}", queue="pair")
            # The worker that took most so far is SIGKILLed mid-run: the others must take over its runs (its
            # dead claim holds its slot until one of them takes it back) and still never exceed the limit.
            await eventually(lambda: _ends(log, 6), what="six runs to finish")
            rows = events(log)
            busiest = max({r[4] for r in rows}, key=lambda pid: sum(r[4] == pid for r in rows))
            victim = next(p for p in procs if str(p.pid) == busiest)
            victim.send_signal(signal.SIGKILL)
            victim.communicate(timeout=10)
            cut = len(events(log))
            await eventually(lambda: _all_done(producer, 30), timeout=120, what="the 30 runs of pair")
    finally:
        stop_all([p for p in procs if p.poll() is None])
    rows = events(log)
    started = {r[1] for r in rows[:cut] if r[0] == "start"} - {r[1] for r in rows[:cut] if r[0] == "end"}
    # A run the kill cut short ended there: mark it so, then count.
    rows = rows[:cut] + [("end", run, "-", 0.0, busiest) for run in sorted(started)] + rows[cut:]
    assert {r[1] for r in rows if r[0] == "start"} == {f"pair-{i}" for i in range(30)}
    assert peak(rows) == 2  # reached, never passed
    assert len({r[4] for r in rows}) >= 2


async def _ends(log: Path, n: int) -> bool:
    return sum(r[0] == "end" for r in events(log)) >= n


async def test_worker_concurrency_1_allows_one_run_per_worker(db: str, tmp_path: Path) -> None:
    rows = await submit_and_finish(db, tmp_path / "log", "solo", 12, workers=2)
    assert peak(rows, by=4) == 1 and peak(rows) <= 2


async def test_key_concurrency_1_serialises_each_key_and_overlaps_different_keys(db: str, tmp_path: Path) -> None:
    rows = await submit_and_finish(db, tmp_path / "log", "by_key", 12, workers=2, key_of=lambda i: "ab"[i % 2])
    assert peak(rows, by=2) == 1  # one run of a key at a time
    assert peak(rows) == 2  # the two keys ran side by side


async def test_a_rate_of_5_per_second_starts_no_more_than_5_in_any_second(db: str, tmp_path: Path) -> None:
    await submit_and_finish(db, tmp_path / "log", "paced", 15, workers=2)
    starts = await recorded_starts(db, "paced")  # when each run was first claimed: what the rate limits
    assert len(starts) == 15
    for i, t in enumerate(starts):
        assert sum(1 for u in starts[i:] if u < t + 1.0 - 0.02) <= 5, f"more than 5 starts in the second after {t}"
    assert starts[-1] - starts[0] >= 2.0  # 15 runs at 5 a second take at least 2 s


async def test_higher_priority_starts_first_and_a_delayed_run_waits_for_its_time(db: str) -> None:
    clock = [1_000_000.0]
    order: list[str] = []

    def worker() -> durable.App:
        app = make_app(db, clock=lambda: clock[0])
        app.add_queue(durable.Queue("one", concurrency=1))

        @app.workflow(queue="one")
        async def note(ctx: durable.Context, name: str) -> str:
            order.append(name)
            return name

        return app

    async with make_app(db, clock=lambda: clock[0]) as producer:  # no workflow here: nothing starts yet
        for name, priority in (("low", 0), ("middle", 1), ("high", 5)):
            await producer.submit("note", name, run_id=name, queue="one", priority=priority)
        await producer.submit("note", "later", run_id="later", queue="one", delay=60)
    async with worker() as app:
        await eventually(lambda: _count_done(app, 3), what="the three runs")
        assert order == ["high", "middle", "low"]
        assert await app.status("later") == "pending"  # not before its time
        clock[0] += 61
        await eventually(lambda: _count_done(app, 4), what="the delayed run")
    assert order[-1] == "later"


async def _count_done(app: durable.App, n: int) -> bool:
    return sum(r.status == "completed" for r in await app.list_runs(limit=10)) == n


async def _create(db: str) -> None:
    async with durable.App(db):
        pass


def test_durable_submit_and_durable_queues_from_the_command_line(db: str) -> None:
    run_sync(_create(db))  # the journal exists (durable submit does not create one at a mistyped path)
    result = CliRunner().invoke(main, ["submit", "job", '["a"]', "--queue", "pair", "--key", "k", "--run-id", "r1", "--db", db])
    assert (result.exit_code, result.output) == (0, "submitted r1 (job, queue pair)\n"), result.output
    result = CliRunner().invoke(main, ["queues", "--db", db])
    assert result.exit_code == 0 and "pair" in result.output and "1 pending" in result.output, result.output
    result = CliRunner().invoke(main, ["runs", "--queue", "pair", "--db", db])
    assert result.exit_code == 0 and "r1" in result.output, result.output
    result = CliRunner().invoke(main, ["runs", "--queue", "other", "--db", db])
    assert result.exit_code == 0 and "r1" not in result.output


async def test_a_submit_of_a_known_run_id_with_other_arguments_is_reported_and_changes_nothing(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_app(db) as producer:
        first = await producer.submit("job", "a", run_id="r")
        again = await producer.submit("job", "b", run_id="r")
        same = await producer.submit("job", "a", run_id="r")
    assert (first.created, again.created, same.created) == (True, False, False)
    warned = [r.getMessage() for r in caplog.records if "exists already, with other arguments" in r.getMessage()]
    assert len(warned) == 1 and '"b"' in warned[0] and '"a"' in warned[0]


async def test_debounce_collapses_rapid_submits_of_a_key_into_one_run_with_the_last_arguments(db: str) -> None:
    clock = [1_000_000.0]
    app = make_app(db, clock=lambda: clock[0])
    got: list[str] = []

    @app.workflow
    async def reindex(ctx: durable.Context, version: str) -> str:
        got.append(version)
        return version

    async with app:
        handles = []
        for i in range(10):  # a burst: each within the 5 s of the one before
            handles.append(await app.submit(reindex, f"v{i}", key="catalog", debounce=5))
            clock[0] += 1
        assert len({h.run_id for h in handles}) == 1 and handles[0].created and not any(h.created for h in handles[1:])
        assert await handles[0].status() == "pending"
        clock[0] += 5  # quiet for 5 s since the last submit
        assert await handles[0].result(timeout=10) == "v9"
        later = await app.submit(reindex, "v10", key="catalog", debounce=5)  # the key's run has started: a new one
        assert later.run_id != handles[0].run_id
        clock[0] += 6
        assert await later.result(timeout=10) == "v10"
        with pytest.raises(TypeError, match="give it a key"):
            await app.submit(reindex, "x", debounce=5)
    assert got == ["v9", "v10"]


async def test_a_child_of_a_queued_workflow_goes_on_its_queue_within_its_limit(db: str) -> None:
    app = make_app(db)
    app.add_queue(durable.Queue("one", concurrency=1))
    live, most = [0], [0]

    async def hold() -> None:
        live[0] += 1
        most[0] = max(most[0], live[0])
        await asyncio.sleep(0.05)
        live[0] -= 1

    @app.workflow(queue="one")
    async def part(ctx: durable.Context, n: int) -> int:
        await ctx.step(hold)
        return n

    @app.workflow
    async def whole(ctx: durable.Context) -> list[int]:
        return list(await asyncio.gather(*(ctx.child(part, n) for n in range(4))))

    async with app:
        assert await app.run(whole, run_id="w") == [0, 1, 2, 3]
        queued = await app.list_runs(queue="one")
    assert sorted(r.run_id for r in queued) == ["w.0", "w.1", "w.2", "w.3"]
    assert most[0] == 1  # the children ran one at a time: the queue's limit
