"""A schedule for worker-process tests: `durable worker scheduled:app` with tests/ on the path.

The journal is $DURABLE_DB. It fires every second (a sixth cron field, seconds first) and catches up every
missed slot, so the test can ask for each slot once, with none left out. Each run's step appends
`RUN_ID PID` to $SCHEDULED_LOG under an exclusive lock. The page's test serves it too, for its queue and schedule.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os

import durable

app = durable.App(poll_interval=0.05, lease_seconds=2.0)
LOG = os.environ.get("SCHEDULED_LOG", "scheduled.log")


def mark(run_id: str) -> None:
    with open(LOG, "a") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.write(f"{run_id} {os.getpid()}\n")


@app.schedule("* * * * * *", name="every_second", catch_up=1000)
async def every_second(ctx: durable.Context, at: dt.datetime) -> str:
    await ctx.step(mark, ctx.run_id)
    return at.isoformat()


# For the page: a queue, and a run on it that waits for a person.
app.add_queue(durable.Queue("reports", concurrency=1, rate=(10, 60)))


@app.workflow(queue="reports")
async def report(ctx: durable.Context) -> bool:
    return await ctx.ask("Send the report?", type=bool, key="send")
