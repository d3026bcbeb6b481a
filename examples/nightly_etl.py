"""Nightly ETL: step retries with backoff, typed step results, and a durable sleep.

    python examples/nightly_etl.py

    nightly_etl for 2024-06-01 (run etl-2024-06-01, journal nightly_etl.db)
      extract: attempt 1 failed: warehouse busy
      extract: attempt 2 failed: warehouse busy
      extract: attempt 3 read 3 sales
      transform: 14 units, 108.50 EUR, top seller lamp
      run status: sleeping (unloaded; the worker resumes it when its timer is due)
      load: wrote the 2024-06-01 report
    result: Report(day=datetime.date(2024, 6, 1), units=14, revenue=Decimal('108.50'), top_sku='lamp')

    journal of run etl-2024-06-01 (completed):
      seq  kind   name       status     attempts
        0  step   extract    completed  3
        1  step   transform  completed  1
        2  sleep  sleep      completed  1
        3  step   load       completed  1

`extract` is flaky: `@durable.step(retries=3, backoff_seconds=0.2)` retries
it after 0.2 s, then 0.4 s (with jitter), and the journal keeps only its final
result, with the attempts it took. Step results are typed (a list of
`msgspec.Struct`, a dataclass) and the workflow gets them back as those types,
live and on replay. `ctx.sleep(3)` records its wake-up time; a sleep longer
than 2 s unloads the run (it holds no coroutine and no memory while it
sleeps) and the App's worker resumes it by replay when it is due, so
`handle.result()` simply sees the run finish. A real job would sleep hours;
kill this one during its sleep and run it again: it waits only the rest.
The sleep's record holds its wake-up time; it is 'scheduled' until it fires,
then 'completed'.

The run_id is derived from the day: a day's run is done once. Run the script
again and the completed run's result is returned from the journal at once,
with nothing executed; delete nightly_etl.db (or set $DURABLE_DB) to start afresh.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import msgspec

import durable

DB = os.environ.get("DURABLE_DB") or "nightly_etl.db"
DAY = date(2024, 6, 1)

app = durable.App(DB)


class Sale(msgspec.Struct):
    sku: str
    units: int
    unit_price: Decimal


@dataclass
class Report:
    day: date
    units: int
    revenue: Decimal
    top_sku: str


attempts = 0  # of extract, in this process


@durable.step(retries=3, backoff_seconds=0.2)
def extract(day: date) -> list[Sale]:
    global attempts
    attempts += 1
    if attempts < 3:
        print(f"  extract: attempt {attempts} failed: warehouse busy")
        raise ConnectionError("warehouse busy")
    sales = [Sale("book", 3, Decimal("12.50")), Sale("pen", 10, Decimal("1.20")), Sale("lamp", 1, Decimal("59.00"))]
    print(f"  extract: attempt {attempts} read {len(sales)} sales")
    return sales


def transform(day: date, sales: list[Sale]) -> Report:
    revenue = sum((s.units * s.unit_price for s in sales), Decimal("0"))
    top = max(sales, key=lambda s: s.units * s.unit_price)
    report = Report(day, sum(s.units for s in sales), revenue, top.sku)
    print(f"  transform: {report.units} units, {report.revenue} EUR, top seller {report.top_sku}")
    return report


@durable.step(retries=2, backoff_seconds=1)
def load(report: Report) -> None:
    print(f"  load: wrote the {report.day} report")


@app.workflow
async def nightly_etl(ctx: durable.Context, day: date) -> Report:
    sales = await ctx.step(extract, day)
    report = await ctx.step(transform, day, sales)
    await ctx.sleep(3)  # the warehouse's backup window; the run is unloaded meanwhile
    await ctx.step(load, report)
    return report


async def main() -> None:
    run_id = f"etl-{DAY}"
    print(f"nightly_etl for {DAY} (run {run_id}, journal {DB})")
    async with app:
        handle = await app.start(nightly_etl, DAY, run_id=run_id)
        while await handle.status() == "running":
            await asyncio.sleep(0.05)
        if await handle.status() == "sleeping":
            print("  run status: sleeping (unloaded; the worker resumes it when its timer is due)")
        print(f"result: {await handle.result()}")

        run = await app.get_run(run_id)
        print(f"\njournal of run {run_id} ({run.status}):")
        print(f"  {'seq':>3}  {'kind':<5}  {'name':<9}  {'status':<9}  attempts")
        for record in run.steps:
            print(f"  {record.seq:>3}  {record.kind:<5}  {record.name:<9}  {record.status:<9}  {record.attempts}")


if __name__ == "__main__":
    asyncio.run(main())
