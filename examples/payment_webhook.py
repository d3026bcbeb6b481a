"""An order that waits for its payment webhook, the customer's cancel or an hour, whichever comes first; then ships.

Shows `ctx.wait` (a race of two `ctx.receive` and a `ctx.sleep`, whose winner
is recorded, so a replay takes the same branch), messages sent by `app.send`
(here by a webhook handler in another App with no workflow code), `ctx.child`
(the shipment is a run of its own, which any worker executes), `ctx.publish`
(progress a page or a program can follow) and `ctx.logger`, which stays quiet
on replay. Its clock is a virtual one, so the hour passes at once:

    python examples/payment_webhook.py

    o-1: waiting for payment (published: 'awaiting payment')
    o-1: the payment webhook arrives: {'amount': 4200, 'reference': 'pay-81'}
    o-1: {'status': 'shipped', 'paid': 4200, 'tracking': 'TRACK-o-1'}
       its journal: publish stage, receive payment, receive cancel (withdrawn), sleep sleep (withdrawn), wait FIRST_COMPLETED, child ship_order (run o-1.5), publish stage
    o-2: nobody pays; an hour passes
    o-2: {'status': 'cancelled', 'reason': 'no payment within 3600 s'}
    o-3: the customer cancels: 'ordered twice'
    o-3: {'status': 'cancelled', 'reason': 'by the customer: ordered twice'}
"""

from __future__ import annotations

import asyncio
import os
import tempfile

import pydantic

import durable
from durable.testing import VirtualClock


class Payment(pydantic.BaseModel):
    amount: int
    reference: str


def book_courier(order_id: str) -> str:
    return f"TRACK-{order_id}"


def make_app(path: str, **options: object) -> durable.App:
    app = durable.App(path, **options)  # type: ignore[arg-type]

    @app.workflow
    async def ship_order(ctx: durable.Context, order_id: str) -> str:
        return await ctx.step(book_courier, order_id)

    @app.workflow
    async def order(ctx: durable.Context, order_id: str) -> dict:
        await ctx.publish("stage", "awaiting payment")
        payment, cancel = ctx.receive("payment", type=Payment), ctx.receive("cancel", type=str)
        done, _ = await ctx.wait([payment, cancel, ctx.sleep(3600)])  # the others are withdrawn
        if cancel in done:
            return {"status": "cancelled", "reason": f"by the customer: {done[cancel].result()}"}
        if payment not in done:
            return {"status": "cancelled", "reason": "no payment within 3600 s"}
        paid = done[payment].result()
        ctx.logger.info("paid %s by %s", paid.amount, paid.reference)  # once, not again on replay
        tracking = await ctx.child(ship_order, order_id)
        await ctx.publish("stage", "shipped")
        return {"status": "shipped", "paid": paid.amount, "tracking": tracking}

    return app


async def main() -> None:
    clock = VirtualClock()
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "orders.db")
        async with make_app(path, clock=clock) as app, durable.App(path, clock=clock) as webhook:
            first = await app.start("order", "o-1", run_id="o-1")
            async for _, stage in app.stream("o-1", "stage"):
                print(f"o-1: waiting for payment (published: {stage!r})")
                break
            payment = {"amount": 4200, "reference": "pay-81"}
            print(f"o-1: the payment webhook arrives: {payment}")
            await webhook.send("o-1", "payment", payment)  # what the webhook handler does
            print(f"o-1: {await first.result()}")
            run = await app.get_run("o-1")
            journal = ", ".join(
                f"{r.kind} {r.name}" + (f" (run {r.question})" if r.kind == "child" else "")
                + (" (withdrawn)" if r.status == "withdrawn" else "")
                for r in run.steps
            )
            print(f"   its journal: {journal}")

            second = await app.start("order", "o-2", run_id="o-2")
            while await second.status() != "waiting":
                await clock.advance(0)
            print("o-2: nobody pays; an hour passes")
            await clock.advance(3600)
            print(f"o-2: {await second.result()}")

            third = await app.start("order", "o-3", run_id="o-3")
            while await third.status() != "waiting":
                await clock.advance(0)
            print("o-3: the customer cancels: 'ordered twice'")
            await webhook.send("o-3", "cancel", "ordered twice")
            print(f"o-3: {await third.result()}")


if __name__ == "__main__":
    asyncio.run(main())
