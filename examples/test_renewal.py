"""Tests of examples/renewal.py with durable.testing: no network, no server, no real waiting.

Run them with `python -m pytest examples/test_renewal.py` (durable's pytest
plugin gives the `durable_clock` fixture once durable is installed).
"""

import shutil

import pytest

import durable
from durable.testing import answering, assert_replays, stub
from renewal import CardDeclined, charge, make_app

DAY = 86400


@pytest.fixture
def app(tmp_path, durable_clock):
    # Every run is replayed from its start after each new record: nondeterminism fails here, not in production.
    return make_app(str(tmp_path / "renewal.db"), clock=durable_clock, replay_every_step=True)


async def test_a_card_that_goes_through_is_renewed(app):
    async with app:
        with stub(charge, returns="rcpt-1"):
            assert await app.run("renew", "ada", 1200) == {"status": "renewed", "receipt": "rcpt-1"}


async def test_a_declined_card_nobody_answers_for_is_suspended_after_two_days(app, durable_clock):
    async with app:
        with stub(charge, raises=CardDeclined("insufficient funds")):
            run = await app.start("renew", "bob", 1200)
            while not await app.prompts(run_id=run.run_id):
                await durable_clock.advance(0)
            await durable_clock.advance(2 * DAY)  # the prompt expires to its default, False
            assert await run.result() == {"status": "suspended"}


async def test_support_grants_three_days_and_the_second_charge_goes_through(app, durable_clock):
    async with app, answering(app, {"grace": True}):
        with stub(charge, raises=CardDeclined("card expired")):
            run = await app.start("renew", "cy", 1200)
            while await run.status() != "sleeping":
                await durable_clock.advance(0)
        with stub(charge, returns="rcpt-2"):  # the customer updated the card meanwhile
            await durable_clock.advance(3 * DAY)
            assert await run.result() == {"status": "renewed", "receipt": "rcpt-2"}


async def test_a_journal_written_by_this_code_still_replays(app, tmp_path, durable_clock):
    async with app:
        with stub(charge, raises=CardDeclined("insufficient funds")):
            run = await app.start("renew", "dee", 1200, run_id="dee")
            while not await app.prompts(run_id="dee"):
                await durable_clock.advance(0)
    # In a real project: a copy of production's journal, checked in CI before every deploy.
    journal = shutil.copy(tmp_path / "renewal.db", tmp_path / "production-copy.db")
    await assert_replays(make_app(), journal)


async def test_a_renamed_prompt_would_block_the_runs_waiting_on_it(app, tmp_path, durable_clock):
    async with app:
        with stub(charge, raises=CardDeclined("insufficient funds")):
            await app.start("renew", "eve", 1200, run_id="eve")
            while not await app.prompts(run_id="eve"):
                await durable_clock.advance(0)

    renamed = durable.App()

    @renamed.workflow(name="renew")
    async def renew(ctx: durable.Context, customer: str, cents: int) -> dict:
        try:
            await ctx.step(charge, customer, cents)
        except CardDeclined:
            await ctx.ask("Extend?", type=bool, key="extend")  # was key="grace"
        return {}

    with pytest.raises(AssertionError, match="eve \\(renew\\): blocked"):
        await assert_replays(renamed, tmp_path / "renewal.db")
