"""How fast `app.check()` replays a journal: the CI gate of issue 11 (goal: 1,000 runs of 50 records in < 5 s).

    python benchmarks/check.py                    # 1,000 runs x 50 records, SQLite, 3 repetitions
    python benchmarks/check.py --runs 200 --postgres postgresql://postgres@127.0.0.1/postgres

The journal is built once, untimed: each run records 49 steps and waits at a
prompt (its 50th record). Each repetition opens a fresh read-only App with the
workflow's code and times `check()` over every run. The baseline, measured in
the same repetition on the same file, is reading every run's records the way
replay reads them (`store.load_replay` per run) without replaying them: the
ratio says what the replay itself costs on top of the reads.
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

STEPS = 49


def noop(i: int) -> int:
    return i


def build_app(target: str) -> durable.App:
    app = durable.App(target)

    @app.workflow(name="wf")
    async def wf(ctx: durable.Context) -> int:
        total = 0
        for i in range(STEPS):
            total += await ctx.step(noop, i)
        return total + await ctx.ask("go?", type=int, key="go")

    return app


async def build(target: str, runs: int) -> None:
    app = build_app(target)
    async with app:
        for first in range(0, runs, 100):
            await asyncio.gather(*(app.start("wf", run_id=f"r{i:05}") for i in range(first, min(runs, first + 100))))
            while len(await app.prompts()) < min(runs, first + 100):
                await asyncio.sleep(0.05)


async def measure(target: str, runs: int) -> tuple[float, float]:
    async with build_app(target).reader() as app:
        started = time.perf_counter()
        results = await app.check()
        checked = time.perf_counter() - started
        assert len(results) == runs and all(r.verdict == "ok" for r in results), results[:3]
        started = time.perf_counter()
        for row in await app.store.list_runs("waiting", None, runs):
            await app.store.load_replay(row.run_id)
        read = time.perf_counter() - started
    return checked, read


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="also on a fresh database of this PostgreSQL server")
    options = parser.parse_args()
    targets = []
    with tempfile.TemporaryDirectory() as tmp:
        targets.append(("SQLite", os.path.join(tmp, "check.db")))
        if options.postgres:
            import asyncpg

            name = f"durable_bench_{uuid.uuid4().hex[:8]}"
            conn = await asyncpg.connect(options.postgres)
            await conn.execute(f'CREATE DATABASE "{name}"')
            await conn.close()
            targets.append(("PostgreSQL", options.postgres.rsplit("/", 1)[0] + f"/{name}"))
        try:
            print(f"app.check() over {options.runs:,} runs of {STEPS + 1} records; median of {options.repeat}")
            print(f"{'store':<11} {'check s':>8} {'runs/s':>8} {'read s':>7} {'check/read':>10}  goal: < 5 s per 1,000 runs")
            for label, target in targets:
                await build(target, options.runs)
                samples = [await measure(target, options.runs) for _ in range(options.repeat)]
                checked = statistics.median(s[0] for s in samples)
                read = statistics.median(s[1] for s in samples)
                per_thousand = checked * 1000 / options.runs
                print(
                    f"{label:<11} {checked:>8.3f} {options.runs / checked:>8,.0f} {read:>7.3f} {checked / read:>9.2f}x"
                    f"  {per_thousand:.2f} s per 1,000 runs: {'met' if per_thousand < 5 else 'NOT met'}"
                )
        finally:
            if options.postgres:
                conn = await asyncpg.connect(options.postgres)
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
