"""A workflow that fails until its bug is fixed (a file appears), and one that waits for a person.

Served by the browser test with `durable serve refunds:app` (the journal from $DURABLE_DB).
"""

from __future__ import annotations

import os

import durable

app = durable.App(poll_interval=0.05)
FIXED = os.environ.get("REFUNDS_FIXED", "fixed")  # the file whose presence is the deployed fix


def refund(order: str) -> str:
    if not os.path.exists(FIXED):
        raise RuntimeError("the refund service rejects the request")
    return f"refunded {order}"


@app.workflow
async def refund_order(ctx: durable.Context, order: str) -> str:
    return await ctx.step(refund, order)


@app.workflow
async def review(ctx: durable.Context, order: str) -> bool:
    return await ctx.ask(f"Refund {order}?", type=bool, key="ok")


@app.workflow
async def claim(ctx: durable.Context, order: str) -> bool:
    await ctx.publish("stage", f"reviewing {order}")
    return await ctx.child(review, order)
