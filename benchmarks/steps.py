"""Cost of a durable step, against the floor of one autocommitted SQLite INSERT.

    python benchmarks/steps.py [--steps N] [--repeat R] [--durability normal|full|both]
                               [--json PATH] [--smoke]

Workloads (each repetition uses fresh database files in a temporary directory;
every contestant of a durability setting uses that same setting):

- ``W1``        one run of N sequential trivial async steps      -> µs per step
- ``W1-sync``   the same with a plain function (runs in a thread) -> µs per step
- ``naive``     N autocommitted aiosqlite INSERTs, WAL, same ``synchronous``
                                                                  -> µs per insert
- ``W2-lite``   200 runs x 5 steps started concurrently           -> steps per second
- ``replay``    a fresh App resumes an N-step run parked on a prompt -> µs per replayed step

Workloads and durability settings are interleaved (round-robin, the order rotated
at each repetition) so that drift of the machine hits all of them alike; the
table shows median, min and max over the repetitions. A short untimed warm-up
runs first, so one-off costs (imports, type adapters) are not in the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import durable  # noqa: E402

SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}
W2_RUNS, W2_STEPS = 200, 5
REPLAY_KEY = "go"

# --- the workflows and steps measured -------------------------------------------


async def noop(i: int) -> int:
    return i


def noop_sync(i: int) -> int:
    return i


async def w1(ctx: durable.Context, n: int) -> int:
    for i in range(n):
        await ctx.step(noop, i)
    return n


async def w1_sync(ctx: durable.Context, n: int) -> int:
    for i in range(n):
        await ctx.step(noop_sync, i)
    return n


async def parked(ctx: durable.Context, n: int) -> bool:
    for i in range(n):
        await ctx.step(noop, i)
    return await ctx.ask("continue?", type=bool, key=REPLAY_KEY)


def new_app(path: Path, durability: str) -> durable.App:
    app = durable.App(path, durability=durability)
    for wf in (w1, w1_sync, parked):
        app.workflow(wf)
    return app


# --- one measurement each: return seconds spent on the measured part ----------------


async def bench_w1(path: Path, durability: str, steps: int, wf: Callable[..., Any]) -> float:
    async with new_app(path, durability) as app:
        started = time.perf_counter()
        result = await app.run(wf, steps, run_id="w1")
        elapsed = time.perf_counter() - started
    assert result == steps
    return elapsed


async def bench_naive(path: Path, durability: str, steps: int) -> float:
    """The floor: what a single INSERT per step costs through aiosqlite, nothing else."""
    async with aiosqlite.connect(path, isolation_level=None) as db:  # autocommit
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute(f"PRAGMA synchronous = {SYNCHRONOUS[durability]}")
        await db.execute(
            "CREATE TABLE records (run_id TEXT, seq INTEGER, value BLOB, PRIMARY KEY (run_id, seq)) WITHOUT ROWID"
        )
        started = time.perf_counter()
        for i in range(steps):
            await db.execute("INSERT INTO records VALUES (?, ?, ?)", ("naive", i, str(i).encode()))
        elapsed = time.perf_counter() - started
    return elapsed


async def bench_w2(path: Path, durability: str, runs: int, steps: int) -> float:
    """Many concurrent runs: the writer shares each commit among whatever is queued (group commit)."""
    async with new_app(path, durability) as app:
        started = time.perf_counter()
        handles = await asyncio.gather(*(app.start(w1, steps, run_id=f"w2-{i}") for i in range(runs)))
        results = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - started
    assert results == [steps] * runs
    return elapsed


async def wait_status(handle: durable.RunHandle, status: str) -> None:
    while await handle.status() != status:
        pass  # each status() is a read on aiosqlite's thread, so this yields to the loop


async def make_parked(path: Path, durability: str, steps: int) -> None:
    """Untimed setup: an N-step run of `parked`, left waiting for its prompt, in a closed file."""
    async with new_app(path, durability) as app:
        handle = await app.start(parked, steps, run_id="replay")
        await wait_status(handle, "waiting")


async def bench_replay(path: Path, durability: str, steps: int) -> float:
    """A fresh App (new process's view: nothing in memory) resumes the parked run by replay.

    Timed: from ``app.start(parked, run_id=...)`` until the run reads 'waiting' again,
    i.e. create_run (one commit, finds the run), claim (one commit), loading the
    N + 1 records (one aiosqlite read), decoding the arguments, replaying the N
    steps (each decodes its recorded value), replaying the prompt, and parking
    the run again (one commit); plus the lag of the status poll (one aiosqlite
    read, ~0.1 ms). The three commits are a fixed cost, spread over N here.
    (``app.prompts()`` cannot tell the end: the prompt's record stays 'waiting'
    throughout, so it is listed before, during and after the replay.)
    """
    async with new_app(path, durability) as app:
        started = time.perf_counter()
        handle = await app.start(parked, steps, run_id="replay")
        await wait_status(handle, "waiting")
        elapsed = time.perf_counter() - started
        assert len(await app.prompts("replay")) == 1
    return elapsed


# --- driver -----------------------------------------------------------------------


class Workload:
    def __init__(self, name: str, unit: str, measure: Callable[[Path, str], Awaitable[float]], count: int, rate: bool):
        self.name, self.unit, self.measure, self.count, self.rate = name, unit, measure, count, rate

    def figure(self, seconds: float) -> float:
        return self.count / seconds if self.rate else seconds / self.count * 1e6


def workloads(steps: int, w2_runs: int, w2_steps: int) -> list[Workload]:
    return [
        Workload("W1", "µs/step", lambda p, d: bench_w1(p, d, steps, w1), steps, False),
        Workload("W1-sync", "µs/step", lambda p, d: bench_w1(p, d, steps, w1_sync), steps, False),
        Workload("naive", "µs/insert", lambda p, d: bench_naive(p, d, steps), steps, False),
        Workload("W2-lite", "steps/s", lambda p, d: bench_w2(p, d, w2_runs, w2_steps), w2_runs * w2_steps, True),
        Workload("replay", "µs/step", lambda p, d: bench_replay(p, d, steps), steps, False),
    ]


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "aiosqlite": getattr(aiosqlite, "__version__", "?"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


async def measure_all(
    tmp: Path, steps: int, repeat: int, durabilities: list[str], w2: tuple[int, int], log: bool
) -> dict[str, Any]:
    loads = workloads(steps, *w2)
    samples: dict[tuple[str, str], list[float]] = {(w.name, d): [] for w in loads for d in durabilities}
    # One parked run per durability, copied to a fresh file before each replay.
    templates = {}
    for d in durabilities:
        templates[d] = tmp / f"parked-{d}.db"
        await make_parked(templates[d], d, steps)
    order = [(w, d) for d in durabilities for w in loads]
    for rep in range(repeat):
        shift = rep % len(order)
        for w, d in order[shift:] + order[:shift]:
            path = tmp / f"r{rep}-{w.name}-{d}.db"
            if w.name == "replay":
                shutil.copyfile(templates[d], path)
            gc.collect()
            seconds = await w.measure(path, d)
            samples[(w.name, d)].append(w.figure(seconds))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        if log:
            print(f"  repetition {rep + 1}/{repeat} done", file=sys.stderr, flush=True)
    return {"loads": loads, "samples": samples}


def report(measured: dict[str, Any], durabilities: list[str], args: argparse.Namespace, w2: tuple[int, int]) -> dict:
    loads: list[Workload] = measured["loads"]
    samples = measured["samples"]
    info = machine()
    print(
        f"python {info['python']} ({info['implementation']}), sqlite {info['sqlite']}, "
        f"aiosqlite {info['aiosqlite']}, {info['cpus']} cpus, {info['platform']}"
    )
    print(f"steps N={args.steps}, repeat R={args.repeat}, W2-lite {w2[0]} runs x {w2[1]} steps\n")
    header = f"{'workload':<9} {'durability':<10} {'median':>10} {'min':>10} {'max':>10}  {'unit':<10} {'vs naive':>9}"
    print(header)
    print("-" * len(header))
    results = []
    for d in durabilities:
        floor = statistics.median(samples[("naive", d)])
        for w in loads:
            values = samples[(w.name, d)]
            med = statistics.median(values)
            ratio = med / floor if w.name in ("W1", "W1-sync") else None
            results.append(
                {
                    "workload": w.name, "durability": d, "unit": w.unit, "median": med,
                    "min": min(values), "max": max(values), "samples": values, "ratio_to_naive": ratio,
                }
            )  # fmt: skip
            shown = f"{ratio:8.2f}x" if ratio is not None else ""
            fmt = ",.0f" if w.rate else ".1f"
            low, high = min(values), max(values)
            print(f"{w.name:<9} {d:<10} {med:>10{fmt}} {low:>10{fmt}} {high:>10{fmt}}  {w.unit:<10} {shown:>9}")
    print("\nvs naive = median of the workload / median of the naive floor, same durability, same invocation.")
    return {
        "machine": info,
        "params": {
            "steps": args.steps, "repeat": args.repeat, "durability": durabilities, "w2_runs": w2[0], "w2_steps": w2[1],
        },  # fmt: skip
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", type=int, default=1000, help="steps per run for W1, W1-sync, naive and replay (default 1000)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of each workload (default 5)")
    parser.add_argument(
        "--durability", choices=["normal", "full", "both"], default="both", help="App durability to measure (default both)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, for CI: checks that the script runs, measures nothing useful"
    )
    args = parser.parse_args(argv)
    w2 = (W2_RUNS, W2_STEPS)
    if args.smoke:
        args.steps, args.repeat, w2 = min(args.steps, 20), 1, (10, 3)
    if args.steps < 1 or args.repeat < 1:
        parser.error("--steps and --repeat must be at least 1")
    durabilities = ["normal", "full"] if args.durability == "both" else [args.durability]

    with tempfile.TemporaryDirectory(prefix="durable-bench-") as tmp:
        warm = Path(tmp) / "warm-up"
        warm.mkdir()
        asyncio.run(measure_all(warm, 10, 1, durabilities, (5, 2), log=False))
        measured = asyncio.run(measure_all(Path(tmp), args.steps, args.repeat, durabilities, w2, log=not args.smoke))
    out = report(measured, durabilities, args, w2)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
