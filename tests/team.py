"""A team's workflow for the page's sign-in test: `durable serve team:app` with tests/ on the path."""

from __future__ import annotations

import durable

app = durable.App(poll_interval=0.05)


@app.workflow
async def refund(ctx: durable.Context, amount: int, owner: str) -> bool:
    return await ctx.ask(f"Refund {amount} EUR?", type=bool, key="refund", assignee=owner)
