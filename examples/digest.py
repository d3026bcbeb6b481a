"""A digest on a schedule: every 2 seconds it mails each subscriber, through a rate-limited queue.

    python examples/digest.py

    digest@2026-12-01T09:30:02Z: mailed ada, bob, cy, dan, eve, fay over 1.0 s
    digest@2026-12-01T09:30:04Z: mailed ada, bob, cy, dan, eve, fay over 1.0 s
    digest@2026-12-01T09:30:06Z: mailed ada, bob, cy, dan, eve, fay over 1.0 s
    schedule digest: cron */2 * * * * *, last slot 2026-12-01T09:30:06Z

`@app.schedule("*/2 * * * * *")` (a sixth field, first: seconds) makes
`digest` a workflow run once per slot, its run_id `digest@<slot>` and its
argument the slot's time. However many processes open this App on one
journal, each slot runs once: the one that fires it moves the schedule's
cursor in the commit that creates the run, and the others find it moved.

Each digest starts one child run per subscriber (`ctx.child`); `send_email`
is on the queue `emails`, which starts at most 4 a second across every
process (`rate=(4, 1)`): a digest's six emails take a second, four then two.

Run it again a few seconds later: the first line is the latest slot missed
while nothing ran (`catch_up=1`, the default; `catch_up=3` would run the
three latest), then the schedule goes on. Delete digest.db (or set
$DURABLE_DB) to start afresh.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time

import durable

app = durable.App(os.environ.get("DURABLE_DB", "digest.db"), poll_interval=0.05)
app.add_queue(durable.Queue("emails", rate=(4, 1.0)))
SUBSCRIBERS = ["ada", "bob", "cy", "dan", "eve", "fay"]
DIGESTS = 3


def deliver(to: str, at: dt.datetime) -> float:
    """Send the mail (here: note when it went)."""
    return time.time()


@app.workflow(queue="emails")
async def send_email(ctx: durable.Context, to: str, at: dt.datetime) -> float:
    return await ctx.step(deliver, to, at)


@app.schedule("*/2 * * * * *", name="digest")
async def digest(ctx: durable.Context, at: dt.datetime) -> dict[str, float]:
    sent = await asyncio.gather(*(ctx.child(send_email, who, at) for who in SUBSCRIBERS))
    return dict(zip(SUBSCRIBERS, sent))


async def main() -> None:
    async with app:
        seen: set[str] = set()
        while len(seen) < DIGESTS:
            runs = await app.list_runs(workflow="digest", status="completed", limit=DIGESTS + 10)
            for run in sorted(runs, key=lambda run: run.run_id):
                if run.run_id not in seen and run.updated_at.timestamp() > started:
                    seen.add(run.run_id)
                    mailed = await durable.RunHandle(app, run.run_id).result()
                    spread = max(mailed.values()) - min(mailed.values())
                    print(f"{run.run_id}: mailed {', '.join(mailed)} over {spread:.1f} s")
            await asyncio.sleep(0.05)
        [schedule] = await app.schedules()
        last = schedule.last.isoformat().replace("+00:00", "Z") if schedule.last else "none"
        print(f"schedule {schedule.name}: cron {schedule.cron}, last slot {last}")


started = time.time()

if __name__ == "__main__":
    asyncio.run(main())
