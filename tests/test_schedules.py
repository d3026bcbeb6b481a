"""Schedules on both stores: one run per slot across processes, catch-up after downtime, pause and resume."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import durable
from durable.cli import main
from durable.testing import VirtualClock
from helpers import HERE, eventually, make_app, wait_until

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # the virtual clock's start, on a five-minute boundary


def iso(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduled_app(db: str, clock: VirtualClock, seen: list[tuple[str, dt.datetime]], **options: object) -> durable.App:
    app = make_app(db, clock=clock)

    @app.schedule("*/5 * * * *", name="report", **options)  # type: ignore[arg-type]
    async def report(ctx: durable.Context, at: dt.datetime) -> str:
        seen.append((ctx.run_id, at))
        return iso(at)

    return app


async def report_runs(app: durable.App) -> list[str]:
    return sorted(run.run_id for run in await app.list_runs(workflow="report", limit=1000))


async def test_each_slot_runs_once_with_its_time_and_run_id(db: str, durable_clock: VirtualClock) -> None:
    seen: list[tuple[str, dt.datetime]] = []
    async with scheduled_app(db, durable_clock, seen) as app:
        await durable_clock.advance(299)
        assert await report_runs(app) == []  # the first slot after the App opened is five minutes on
        for _ in range(3):
            await durable_clock.advance(300)
        slots = [START + dt.timedelta(minutes=m) for m in (5, 10, 15)]
        assert await report_runs(app) == [f"report@{iso(at)}" for at in slots]
        await eventually(lambda: _ended(app, 3), what="the three runs to complete")
        assert sorted(seen) == [(f"report@{iso(at)}", at) for at in slots]
        assert all(type(at) is dt.datetime and at.tzinfo is not None for _, at in seen)
        handle = durable.RunHandle(app, f"report@{iso(slots[0])}")
        assert await handle.result() == iso(slots[0])


async def _ended(app: durable.App, n: int) -> bool:
    return sum(run.status == "completed" for run in await app.list_runs(workflow="report")) == n


async def test_two_apps_on_one_store_fire_each_slot_once(db: str, durable_clock: VirtualClock) -> None:
    seen: list[tuple[str, dt.datetime]] = []
    async with scheduled_app(db, durable_clock, seen) as first, scheduled_app(db, durable_clock, seen):
        for _ in range(4):
            await durable_clock.advance(300)  # both workers look at each slot, in the same pass
        await eventually(lambda: _ended(first, 4), what="four runs to complete")
        assert len(await report_runs(first)) == 4
        assert sorted(run_id for run_id, _ in seen) == await report_runs(first)  # each executed once


async def test_a_pruned_slot_is_not_fired_again(db: str, durable_clock: VirtualClock) -> None:
    seen: list[tuple[str, dt.datetime]] = []
    async with scheduled_app(db, durable_clock, seen) as app:
        await durable_clock.advance(300)
        await eventually(lambda: _ended(app, 1), what="the first slot's run")
        await durable_clock.advance(1)
        assert await app.prune(older_than=0) == 1
    async with scheduled_app(db, durable_clock, seen) as app:  # a restart at the same time: the slot is handled
        await durable_clock.advance(1)
        assert await report_runs(app) == []
    assert len(seen) == 1


@pytest.mark.parametrize("catch_up, missed", [(1, [30]), (3, [20, 25, 30])])
async def test_after_downtime_the_latest_catch_up_slots_run(
    db: str, durable_clock: VirtualClock, catch_up: int, missed: list[int]
) -> None:
    seen: list[tuple[str, dt.datetime]] = []
    async with scheduled_app(db, durable_clock, seen, catch_up=catch_up):
        await durable_clock.advance(1)  # registered at the start
    await durable_clock.advance(30 * 60 + 60)  # down for six slots (5, 10, ... 30 minutes)
    async with scheduled_app(db, durable_clock, seen, catch_up=catch_up) as app:
        await durable_clock.advance(0)
        assert await report_runs(app) == [f"report@{iso(START + dt.timedelta(minutes=m))}" for m in missed]
        await durable_clock.advance(4 * 60)  # then on time again: 35 minutes
        assert (await report_runs(app))[-1] == f"report@{iso(START + dt.timedelta(minutes=35))}"
        assert len(await report_runs(app)) == len(missed) + 1


async def test_a_paused_schedule_fires_nothing_and_resumes_from_its_next_slot(db: str, durable_clock: VirtualClock) -> None:
    seen: list[tuple[str, dt.datetime]] = []
    async with scheduled_app(db, durable_clock, seen) as app:
        await durable_clock.advance(300)
        info = await app.pause_schedule("report")
        assert info.paused and info.next is None and info.last == START + dt.timedelta(minutes=5)
        await durable_clock.advance(900)  # 10, 15, 20: paused
        assert len(await report_runs(app)) == 1
        info = await app.resume_schedule("report")
        assert not info.paused and info.next == START + dt.timedelta(minutes=25)
        await durable_clock.advance(300)
        assert await report_runs(app) == [f"report@{iso(START + dt.timedelta(minutes=m))}" for m in (5, 25)]
        [listed] = await app.schedules()
        assert (listed.name, listed.workflow, listed.cron, listed.timezone) == ("report", "report", "*/5 * * * *", "UTC")
        assert listed.last == START + dt.timedelta(minutes=25) and listed.next == START + dt.timedelta(minutes=30)
        with pytest.raises(durable.ScheduleNotFound, match="No schedule 'nightly' in this store.*it has: report"):
            await app.pause_schedule("nightly")


async def test_a_timezone_schedule_fires_at_its_local_time(db: str, durable_clock: VirtualClock) -> None:
    app = make_app(db, clock=durable_clock)
    fired: list[dt.datetime] = []

    @app.schedule("0 9 * * *", name="morning", timezone="America/New_York")
    async def morning(ctx: durable.Context, at):  # type: ignore[no-untyped-def]  # unannotated: still a datetime
        fired.append(at)

    async with app:
        await durable_clock.advance(86400)
        await eventually(lambda: _count(fired, 1), what="the morning run")
    assert fired == [dt.datetime(2026, 1, 1, 14, tzinfo=dt.UTC)]  # 09:00 in New York in winter (UTC-5)


async def _count(items: list[object], n: int) -> bool:
    return len(items) >= n


def test_the_cli_lists_pauses_and_resumes_schedules(db: str, durable_clock: VirtualClock) -> None:
    from helpers import run_sync

    async def register() -> None:
        async with scheduled_app(db, durable_clock, []):
            await durable_clock.advance(300)

    run_sync(register())
    result = CliRunner().invoke(main, ["schedules", "--db", db])
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()
    assert header.split() == ["SCHEDULE", "CRON", "TIMEZONE", "LAST", "NEXT"]
    assert row.split()[:7] == ["report", "*/5", "*", "*", "*", "*", "UTC"]
    assert row.split()[7] == "2026-01-01T00:05:00Z"
    result = CliRunner().invoke(main, ["schedules", "pause", "report", "--db", db])
    assert (result.exit_code, result.output) == (0, "paused schedule report\n")
    result = CliRunner().invoke(main, ["schedules", "--json", "--db", db])
    assert '"paused": true' in result.output and '"next": null' in result.output
    result = CliRunner().invoke(main, ["schedules", "resume", "report", "--db", db])
    assert result.exit_code == 0 and result.output.startswith("resumed schedule report; next slot "), result.output
    result = CliRunner().invoke(main, ["schedules", "pause", "nope", "--db", db])
    assert result.exit_code == 1 and "No schedule 'nope'" in result.output
    result = CliRunner().invoke(main, ["schedules", "remove", "report", "--db", db])
    assert (result.exit_code, result.output) == (0, "removed schedule report\n")
    result = CliRunner().invoke(main, ["schedules", "--db", db])
    assert result.output == "no schedules (an App registers its own when it opens)\n"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"cron": "*/5 * * *"}, "is not a cron expression croniter reads"),
        ({"cron": "61 * * * *"}, "is not a cron expression croniter reads"),
        ({"timezone": "Mars/Olympus"}, "is not a timezone this machine knows"),
        ({"catch_up": 0}, "takes a whole number >= 1"),
    ],
)
def test_a_wrong_schedule_is_refused_where_it_is_declared(tmp_path: Path, options: dict[str, object], message: str) -> None:
    app = durable.App(tmp_path / "j.db")
    cron = options.pop("cron", "*/5 * * * *")
    with pytest.raises(durable.DefinitionError, match=message):

        @app.schedule(cron, **options)  # type: ignore[arg-type]
        async def job(ctx: durable.Context, at: dt.datetime) -> None: ...

    assert app.workflows == {}


def test_a_scheduled_workflow_must_take_the_slot_time(tmp_path: Path) -> None:
    app = durable.App(tmp_path / "j.db")
    with pytest.raises(durable.DefinitionError, match=r"called with the slot's time.*at: datetime"):

        @app.schedule("* * * * *")
        async def job(ctx: durable.Context) -> None: ...


# --- real processes ----------------------------------------------------------------------------------------------


def start_worker(db: str, log: Path) -> subprocess.Popen[str]:
    environ = dict(os.environ, DURABLE_DB=db, SCHEDULED_LOG=str(log))
    return subprocess.Popen(
        [sys.executable, "-m", "durable", "worker", "scheduled:app"], cwd=HERE, env=environ,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def marks(log: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in log.read_text().splitlines()] if log.exists() else []  # type: ignore[misc]


async def test_three_workers_one_killed_and_restarted_fire_each_second_once(db: str, tmp_path: Path) -> None:
    log = tmp_path / "log"
    workers = [start_worker(db, log) for _ in range(3)]
    stderr: list[str] = []
    try:
        wait_until(lambda: len(marks(log)) >= 3, what="three slots to run")
        victim = workers.pop(0)  # mid-stream: it may hold a slot's run, or be firing one
        victim.send_signal(signal.SIGKILL)
        stderr.append(victim.communicate(timeout=10)[1])
        time.sleep(2.5)
        workers.append(start_worker(db, log))
        seen = len(marks(log))
        wait_until(lambda: len(marks(log)) >= seen + 3, what="three more slots after the restart")
        async with make_app(db) as client:
            await client.pause_schedule("every_second")
            await eventually(lambda: _all_completed(client), timeout=30, what="every fired slot's run to complete")
            runs = await client.list_runs(workflow="every_second", limit=1000)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        stderr += [worker.communicate(timeout=30)[1] for worker in workers]
    fired = [run_id for text in stderr for line in text.splitlines() if "schedule every_second: " in line
             for run_id in line.split("schedule every_second: ", 1)[1].split(", ")]  # fmt: skip
    assert len(fired) == len(set(fired)), "a slot was fired twice"
    assert sorted(fired) == sorted(run.run_id for run in runs)
    seconds = sorted(dt.datetime.fromisoformat(run_id.split("@", 1)[1]) for run_id in fired)
    assert seconds == [seconds[0] + dt.timedelta(seconds=i) for i in range(len(seconds))], "a slot was left out"
    assert len(seconds) >= 8  # the run spans the kill, the 2.5 s gap and the restart
    by_run: dict[str, list[str]] = {}
    for run_id, pid in marks(log):
        by_run.setdefault(run_id, []).append(pid)
    assert sorted(by_run) == sorted(fired)
    # A step runs again only where the killed worker was executing it and had not recorded it.
    assert all(len(pids) == 1 or pids[0] == str(victim.pid) for pids in by_run.values()), by_run


async def _all_completed(app: durable.App) -> bool:
    runs = await app.list_runs(workflow="every_second", limit=1000)
    return bool(runs) and all(run.status == "completed" for run in runs)


# --- HTTP ------------------------------------------------------------------------------------------------------


async def test_http_lists_queues_and_schedules_and_pauses_one(db: str, durable_clock: VirtualClock) -> None:
    import httpx
    from asgi_lifespan import LifespanManager

    from durable.http import create_app

    seen: list[tuple[str, dt.datetime]] = []
    app = scheduled_app(db, durable_clock, seen)
    app.add_queue(durable.Queue("reports", concurrency=2, rate=(10, 60)))
    async with LifespanManager(create_app(app)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await durable_clock.advance(300)
            await app.submit("report", START, run_id="later", queue="reports", delay=3600)
            queues = (await client.get("/queues")).json()
            assert queues == [{"name": "reports", "runs": {"pending": 1}, "concurrency": 2, "worker_concurrency": None,
                               "key_concurrency": None, "rate": [10, 60.0]}]  # fmt: skip
            later = (await client.get("/runs", params={"queue": "reports"})).json()
            assert [run["run_id"] for run in later] == ["later"]
            [listed] = (await client.get("/schedules")).json()
            assert listed == {"name": "report", "workflow": "report", "cron": "*/5 * * * *", "timezone": "UTC",
                              "paused": False, "last": "2026-01-01T00:05:00Z", "next": "2026-01-01T00:10:00Z"}  # fmt: skip
            paused = await client.post("/schedules/report/pause")
            assert paused.status_code == 200 and paused.json()["paused"] is True and paused.json()["next"] is None
            await durable_clock.advance(300)
            assert await report_runs(app) == ["later", "report@2026-01-01T00:05:00Z"]  # none at 00:10, paused
            resumed = await client.post("/schedules/report/resume")
            assert resumed.json()["next"] == "2026-01-01T00:15:00Z"
            missing = await client.post("/schedules/nope/pause")
            assert missing.status_code == 404 and missing.json()["error"] == "ScheduleNotFound"


def test_slots_across_daylight_saving_changes_are_as_the_readme_says() -> None:
    from durable.schedules import Schedule, slot_text

    def slots(cron: str, zone: str, start: dt.datetime, end: dt.datetime) -> list[str]:
        schedule = Schedule(cron, "x", zone, 10, None)
        return [slot_text(at) for at in schedule.due(start.timestamp(), end.timestamp())]

    # Clocks go forward at 02:00 in Berlin on 29 March 2026: 02:30 does not exist, the slot is at 03:00 (01:00Z).
    spring = slots("30 2 * * *", "Europe/Berlin", dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC), dt.datetime(2026, 3, 30, 12, tzinfo=dt.UTC))
    assert spring == ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    # They go back at 02:00 in New York on 1 November 2026: 01:30 comes twice, an hour apart.
    autumn = slots("30 1 * * *", "America/New_York", dt.datetime(2026, 10, 31, 12, tzinfo=dt.UTC), dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC))
    assert autumn == ["2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-02T06:30:00Z"]


async def test_a_removed_schedule_is_forgotten_and_an_app_that_has_it_adds_it_back_from_now(
    db: str, durable_clock: VirtualClock
) -> None:
    seen: list[tuple[str, dt.datetime]] = []
    async with scheduled_app(db, durable_clock, seen) as app:
        await durable_clock.advance(300)
        await app.remove_schedule("report")
        with pytest.raises(durable.ScheduleNotFound):
            await app.remove_schedule("report")
        assert len(await report_runs(app)) == 1  # its runs stay
        await durable_clock.advance(301)  # this App still has it: registered again, from now on
        [again] = await app.schedules()
        assert again.next == START + dt.timedelta(minutes=15)
        await durable_clock.advance(300)
        assert await report_runs(app) == [f"report@{iso(START + dt.timedelta(minutes=m))}" for m in (5, 15)]
