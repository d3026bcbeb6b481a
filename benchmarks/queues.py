"""What a queue costs at dispatch (issue 14's goal: W2 on a queue of concurrency=1000 within 1.3x of W2 without).

    python benchmarks/queues.py                       # SQLite, 1,000 runs x 5 steps, 3 repetitions
    python benchmarks/queues.py --postgres postgresql://postgres@127.0.0.1/postgres

W2 is 1,000 runs of 5 steps started at once. Each repetition measures, on a
fresh journal each and in turn: `start` (the W2 of benchmarks/compare.py: each
run claimed as it is created), `submit` without a queue (each run 'pending',
then claimed by the worker), and `submit(queue=...)` on a queue of
concurrency=1000 (claimed by the worker, the queue's runs counted in each
claim). The App may run 1,000 at once in all three. Printed: steps/s (the
median of the repetitions) and the queue's cost as a ratio to each baseline,
measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import durable  # noqa: E402

RUNS, STEPS = 1000, 5


def noop(i: int) -> int:
    return i


def build(target: str) -> durable.App:
    app = durable.App(target, max_concurrent_runs=RUNS, poll_interval=0.05)
    app.add_queue(durable.Queue("wide", concurrency=1000))

    @app.workflow(name="w")
    async def w(ctx: durable.Context, n: int) -> int:
        for i in range(n):
            await ctx.step(noop, i)
        return n

    return app


async def once(target: str, how: str) -> float:
    async with build(target) as app:
        started = time.perf_counter()
        if how == "start":
            handles = await asyncio.gather(*(app.start("w", STEPS, run_id=f"r{i}") for i in range(RUNS)))
        else:
            queue = "wide" if how == "queue" else None
            handles = await asyncio.gather(*(app.submit("w", STEPS, run_id=f"r{i}", queue=queue) for i in range(RUNS)))
        results = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - started
    assert results == [STEPS] * RUNS
    return RUNS * STEPS / elapsed


async def fresh(kind: str, base: str, scratch: str, i: int) -> str:
    if kind == "SQLite":
        return os.path.join(scratch, f"{i}.db")
    import asyncpg

    name = f"durable_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base.rsplit("/", 1)[0] + f"/{name}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="also on fresh databases of this PostgreSQL server")
    options = parser.parse_args()
    stores = [("SQLite", "")] + ([("PostgreSQL", options.postgres)] if options.postgres else [])
    with tempfile.TemporaryDirectory() as scratch:
        for kind, base in stores:
            rates: dict[str, list[float]] = {"start": [], "submit": [], "queue": []}
            for rep in range(options.repeat):
                for how in rates:
                    rates[how].append(await once(await fresh(kind, base, scratch, len(rates) * rep + len(rates[how])), how))
            med = {how: statistics.median(r) for how, r in rates.items()}
            print(f"{kind}: W2 ({RUNS} runs x {STEPS} steps), median of {options.repeat}")
            for how, label in (("start", "start, no queue"), ("submit", "submit, no queue"), ("queue", "submit, queue")):
                print(f"  {label:<18} {med[how]:>9,.0f} steps/s")
            print(f"  queue cost: {med['start'] / med['queue']:.2f}x start, {med['submit'] / med['queue']:.2f}x submit (goal <= 1.3x)")


if __name__ == "__main__":
    asyncio.run(main())
