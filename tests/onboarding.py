"""A workflow whose prompts need each kind of answer form: number, text, a choice, and an object (a form of its fields).

Served by the browser test with `durable serve onboarding:app` (the journal from $DURABLE_DB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import durable

app = durable.App(poll_interval=0.05)


@dataclass
class Address:
    street: str
    city: str
    kind: Literal["office", "home"]
    floor: int | None = None


@app.workflow
async def onboarding(ctx: durable.Context) -> dict:
    seats = await ctx.ask("How many seats?", type=int, key="seats")
    team = await ctx.ask("What is the team called?", type=str, key="team")
    plan = await ctx.ask("Which plan?", type=Literal["team", "business"], key="plan")
    address = await ctx.ask("Billing address?", type=Address, key="address")
    return {"seats": seats, "team": team, "plan": plan, "city": address.city}
