"""Crash and rerun: a run killed halfway resumes where it stopped.

One command shows it:

    python examples/crash_and_rerun.py

It runs a 5-step order workflow twice with the same run_id, each time in a
child process. Run 1 kills its own process (SIGKILL: no cleanup, no finally)
in the middle of step 3; run 2 resumes the run. Each step prints a line and
appends one to a side-effect log when it executes, so the end of the output
shows what ran where:

    run 1: python examples/crash_and_rerun.py child 1
      fetch_order: executing
      reserve_stock: executing
      charge_card: executing
      charge_card: killing this process (SIGKILL) before the step returns
      exit code -9 (killed)
    run 2: python examples/crash_and_rerun.py child 2
      charge_card: executing
      ship_parcel: executing
      email_receipt: executing
      result: order o-42: charged charge-o-42, shipped parcel-o-42
      exit code 0

    side-effect log    run 1     run 2
      fetch_order      executed  replayed
      reserve_stock    executed  replayed
      charge_card      executed  executed
      ship_parcel      -         executed
      email_receipt    -         executed
    executed exactly once: fetch_order, reserve_stock, ship_parcel, email_receipt
    executed twice, in flight when run 1 was killed: charge_card

Run 2 calls the same workflow from the top. `fetch_order` and
`reserve_stock` had their results recorded in the journal, so `ctx.step`
returns the records without executing them ("replayed"). `charge_card` had
charged the card but its result was not recorded when the process died, so it
executes again: a step runs at least once and is recorded exactly once. Make
such steps idempotent (here the charge is keyed by the order id, as a payment
API's idempotency key would be).

The journal is `crash_and_rerun.db` in the current directory (or
$DURABLE_DB) and the log sits next to it; both are deleted at the start, so
every invocation shows the same thing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import durable

DB = Path(os.environ.get("DURABLE_DB") or "crash_and_rerun.db")
LOG = DB.with_suffix(".log")
STEPS = ["fetch_order", "reserve_stock", "charge_card", "ship_parcel", "email_receipt"]

app = durable.App(DB)

RUN = 0  # which run this process is (set by `child N`); run 1 crashes


@dataclass
class Order:
    order_id: str
    item: str
    total_cents: int


def side_effect(step: str) -> None:
    """What makes a step visible: a printed line, and a line in the side-effect log."""
    print(f"  {step}: executing")
    with LOG.open("a") as log:
        log.write(f"{RUN} {step}\n")


def fetch_order(order_id: str) -> Order:
    side_effect("fetch_order")
    return Order(order_id, "book", 4200)


def reserve_stock(order: Order) -> str:
    side_effect("reserve_stock")
    return f"reservation-{order.order_id}"


def charge_card(order: Order) -> str:
    side_effect("charge_card")
    if RUN == 1:
        print("  charge_card: killing this process (SIGKILL) before the step returns")
        os.kill(os.getpid(), signal.SIGKILL)
    return f"charge-{order.order_id}"


def ship_parcel(order: Order, reservation: str) -> str:
    side_effect("ship_parcel")
    return f"parcel-{order.order_id}"


def email_receipt(order: Order, charge: str) -> None:
    side_effect("email_receipt")


@app.workflow
async def fulfil_order(ctx: durable.Context, order_id: str) -> str:
    order = await ctx.step(fetch_order, order_id)
    reservation = await ctx.step(reserve_stock, order)
    charge = await ctx.step(charge_card, order)
    parcel = await ctx.step(ship_parcel, order, reservation)
    await ctx.step(email_receipt, order, charge)
    return f"order {order_id}: charged {charge}, shipped {parcel}"


async def child(run: int) -> None:
    """One run of the workflow: run 1 starts it (and dies), run 2 resumes it."""
    global RUN
    RUN = run
    async with app:
        print(f"  result: {await app.run(fulfil_order, 'o-42', run_id='order-o-42')}")


def main() -> None:
    """Run the workflow in two child processes, then compare the side-effect log."""
    for path in (DB, Path(f"{DB}-wal"), Path(f"{DB}-shm"), LOG):
        path.unlink(missing_ok=True)
    here = os.path.relpath(__file__)
    for run in (1, 2):
        print(f"run {run}: python {here} child {run}", flush=True)
        code = subprocess.run([sys.executable, "-u", __file__, "child", str(run)]).returncode
        print(f"  exit code {code}" + (" (killed)" if code == -signal.SIGKILL else ""))

    executed = [tuple(line.split()) for line in LOG.read_text().splitlines()]  # (run, step)
    print(f"\n{'side-effect log':<18} {'run 1':<9} run 2")
    for step in STEPS:
        in_1 = "executed" if ("1", step) in executed else "-"
        in_2 = "executed" if ("2", step) in executed else "replayed" if in_1 == "executed" else "-"
        print(f"  {step:<16} {in_1:<9} {in_2}")
    runs = {step: sum(1 for _, s in executed if s == step) for step in STEPS}
    print(f"executed exactly once: {', '.join(s for s in STEPS if runs[s] == 1)}")
    print(f"executed twice, in flight when run 1 was killed: {', '.join(s for s in STEPS if runs[s] == 2)}")

if __name__ == "__main__":
    match sys.argv[1:]:
        case []:
            main()
        case ["child", run]:
            asyncio.run(child(int(run)))
        case _:
            print("usage: python examples/crash_and_rerun.py", file=sys.stderr)
            sys.exit(2)
