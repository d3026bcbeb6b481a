"""Workflows for worker-process tests: `durable worker fleet:app` with tests/ on the path.

The journal is $DURABLE_DB; each step appends `start RUN:STEP PID` and
`done RUN:STEP PID` to $FLEET_LOG (O_APPEND: nothing written is lost to SIGKILL).
A step named in $FLEET_BLOCK blocks forever once it has started; one named in
$FLEET_PAUSE (`RUN:STEP=SECONDS`) takes that long in this process. The
App's lease is $FLEET_LEASE seconds (default 30).
"""

from __future__ import annotations

import asyncio
import os

import durable

# `durable worker --concurrency N` sets its limit.
app = durable.App(poll_interval=0.05, lease_seconds=float(os.environ.get("FLEET_LEASE", "30")))
LOG = os.environ.get("FLEET_LOG", "fleet.log")
BLOCK = os.environ.get("FLEET_BLOCK")
PAUSE = dict(item.split("=") for item in os.environ.get("FLEET_PAUSE", "").split(",") if item)


def note(line: str) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


async def work(run_id: str, step: int, delay: float) -> int:
    note(f"start {run_id}:{step}")
    if BLOCK == f"{run_id}:{step}" or BLOCK == f"*:{step}":
        await asyncio.Event().wait()
    await asyncio.sleep(float(PAUSE.get(f"{run_id}:{step}", delay)))
    note(f"done {run_id}:{step}")
    return step


@app.workflow
async def chain(ctx: durable.Context, steps: int = 3, step_seconds: float = 0.0) -> int:
    total = 0
    for i in range(steps):
        total += await ctx.step(work, ctx.run_id, i, step_seconds)
    return total


async def whoami(run_id: str, step: int) -> int:
    await work(run_id, step, 0.0)
    return os.getpid()


@app.workflow
async def who(ctx: durable.Context, steps: int = 3) -> list[int]:
    """Each step records the pid of the process that executed it."""
    return [await ctx.step(whoami, ctx.run_id, i) for i in range(steps)]


@app.workflow
async def approve(ctx: durable.Context) -> str:
    first = await ctx.ask("First approval?", type=bool, key="first")
    second = await ctx.ask("Second approval?", type=bool, key="second") if first else False
    await ctx.step(work, ctx.run_id, 0, 0.0)
    return f"{first}/{second}"


@app.workflow
async def nap(ctx: durable.Context, seconds: float) -> float:
    await ctx.sleep(seconds)
    await ctx.step(work, ctx.run_id, 0, 0.0)
    return seconds
