"""A workflow that records a step every few milliseconds: an event stream that is always sending."""

from __future__ import annotations

import asyncio

import durable

app = durable.App(poll_interval=0.05)


async def tick(i: int) -> int:
    await asyncio.sleep(0.005)
    return i


@app.workflow
async def ticker(ctx: durable.Context, n: int = 2000) -> int:
    for i in range(n):
        await ctx.step(tick, i)
    return n
