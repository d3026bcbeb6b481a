"""Subscription renewal: charge the card; if it is declined, ask support for a grace period, then try again.

The workflow the README's "Testing your workflows" tests (examples/test_renewal.py):
a step that calls a payment provider over the network, a prompt that expires
after two days (`ctx.ask(timeout=..., default=...)`), and a three-day durable
sleep. Run it to watch one renewal that goes through and one whose card is
declined and whose prompt nobody answers in time; its clock is a virtual one,
so the two days pass at once:

    python examples/renewal.py

       email to ada: renewed, receipt rcpt-ada-1200
    ada: {'status': 'renewed', 'receipt': 'rcpt-ada-1200'}
    bob: card declined; support is asked: Bob's card was declined (insufficient funds). Give 3 more days?
    bob: two days pass, nobody answers
       bob's account is suspended
    bob: {'status': 'suspended'}

The App is made by `make_app(path, **options)` so that tests can make their
own, on a file of their own, with their own clock.
"""

from __future__ import annotations

import asyncio
import os
import tempfile

import durable

DAY = 86400.0


class CardDeclined(Exception):
    pass


class PaymentProvider:
    """A stand-in for the payment provider's HTTP API (declines cards of customers named in `declines`)."""

    declines = {"bob": "insufficient funds"}

    async def charge(self, customer: str, cents: int) -> str:
        await asyncio.sleep(0.01)  # the network
        if customer in self.declines:
            raise CardDeclined(self.declines[customer])
        return f"rcpt-{customer}-{cents}"


PROVIDER = PaymentProvider()


@durable.step(retries=2, backoff_seconds=30, no_retry_on=CardDeclined)
async def charge(customer: str, cents: int) -> str:
    """Charge the customer's card; a timeout or a dropped connection is retried, a decline is not."""
    return await PROVIDER.charge(customer, cents)


def email(customer: str, text: str) -> None:
    print(f"   email to {customer}: {text}")


def suspend_account(customer: str) -> None:
    print(f"   {customer}'s account is suspended")


def make_app(path: str | None = None, **options: object) -> durable.App:
    app = durable.App(path, **options)  # type: ignore[arg-type]

    @app.workflow
    async def renew(ctx: durable.Context, customer: str, cents: int) -> dict:
        try:
            receipt = await ctx.step(charge, customer, cents)
        except CardDeclined as declined:
            grace = await ctx.ask(
                f"{customer.title()}'s card was declined ({declined}). Give 3 more days?",
                type=bool, key="grace", timeout=2 * DAY, default=False,
            )  # fmt: skip
            if not grace:
                await ctx.step(suspend_account, customer)
                return {"status": "suspended"}
            await ctx.step(email, customer, "your card was declined: please update it within 3 days")
            await ctx.sleep(3 * DAY)
            receipt = await ctx.step(charge, customer, cents)
        await ctx.step(email, customer, f"renewed, receipt {receipt}")
        return {"status": "renewed", "receipt": receipt}

    return app


app = make_app(os.environ.get("DURABLE_DB") or "renewal.db")


async def demo() -> None:
    from durable.testing import VirtualClock

    clock = VirtualClock()
    with tempfile.TemporaryDirectory() as scratch:
        async with make_app(os.path.join(scratch, "renewal.db"), clock=clock) as demo_app:
            print(f"ada: {await demo_app.run('renew', 'ada', 1200, run_id='ada')}")
            bob = await demo_app.start("renew", "bob", 1200, run_id="bob")
            while not (prompts := await demo_app.prompts(run_id="bob")):
                await asyncio.sleep(0.01)
            print(f"bob: card declined; support is asked: {prompts[0].question}")
            print("bob: two days pass, nobody answers")
            await clock.advance(2 * DAY)
            print(f"bob: {await bob.result()}")


if __name__ == "__main__":
    asyncio.run(demo())
