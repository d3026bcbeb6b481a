"""Workflows on queues for worker-process tests: `durable worker queued:app` with tests/ on the path.

The journal is $DURABLE_DB. Each run's step appends `start RUN KEY TIME PID` and
`end RUN KEY TIME PID` to $QUEUED_LOG, under an exclusive lock, so the order of
lines is the order of events across processes. The queues' limits are fixed here,
the same in every worker, as a deployment's would be.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time

import durable

app = durable.App(poll_interval=0.05)
app.add_queue(durable.Queue("pair", concurrency=2))
app.add_queue(durable.Queue("solo", worker_concurrency=1))
app.add_queue(durable.Queue("by_key", key_concurrency=1))
app.add_queue(durable.Queue("paced", rate=(5, 1.0)))
LOG = os.environ.get("QUEUED_LOG", "queued.log")
HOLD = float(os.environ.get("QUEUED_HOLD", "0.2"))


def note(word: str, run_id: str, key: str) -> None:
    with open(LOG, "a") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.write(f"{word} {run_id} {key} {time.time():.6f} {os.getpid()}\n")


async def hold(run_id: str, key: str) -> None:
    note("start", run_id, key)
    await asyncio.sleep(HOLD)
    note("end", run_id, key)


@app.workflow
async def job(ctx: durable.Context, key: str = "-") -> str:
    await ctx.step(hold, ctx.run_id, key)
    return ctx.run_id
