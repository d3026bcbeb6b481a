"""How soon a run moves on: after an answer or a message (same process, another process) and after a crash.

    python benchmarks/latency.py [--repeat N] [--durability normal|full] [--json PATH] [--smoke]

Measures (each on fresh database files in a temporary directory, durability
"normal" unless ``--durability full``, default App settings otherwise; the
answering and crashing children use the same durability):

- ``answer, same process``   runs parked on ``ctx.ask(..., key="go")``, then
  ``ctx.step(mark)``. Timed, with ``time.perf_counter``: from just before
  ``await app.answer(run_id, "go", True)`` in the App that owns the workflow to
  the start of ``mark``. The answer kicks the App's worker directly.
- ``answer, other process``  the same runs, parked in this process (the worker,
  ``async with app:``); a child process (this script with ``--answerer DB``,
  its own ``durable.App(DB)`` open, no workflows) answers them one at a time and
  prints ``time.time()`` taken just before each ``app.answer``. Latency = the
  ``time.time()`` at which ``mark`` starts here minus that (one machine, one
  clock). Before each answer the child waits a random 20-80 ms, so answers
  fall anywhere in the worker's 50 ms ``PRAGMA data_version`` cycle.
- ``send -> resumed``         the same two measures with ``ctx.receive("go")`` in place of
  ``ctx.ask``, moved on by ``app.send(run_id, "go", True)`` instead of ``app.answer``.
- ``crash -> rerun``          a child process (``--crasher DB RUN_ID``) runs a
  workflow of 50 steps and SIGKILLs itself inside step 25. Timed here: from
  just before ``async with app:`` (a new App on that file) through
  ``await app.start(wf, run_id=same)`` to the start of step 25, the first step
  that executes anew (steps 1-24 are replayed from the journal).

The table gives median and p95 (linear interpolation) in ms, and whether the
median meets the goal: 5 ms for an answer in the same process (the design says
"at once"), 100 ms for the other two. A short untimed warm-up runs first, and
each answering child's first answers are discarded, so one-off costs (imports,
schema validators, type adapters) are not in the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosqlite

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import durable  # noqa: E402

SCRIPT = Path(__file__).resolve()
KEY = "go"
CRASH_STEPS, CRASH_AT = 50, 25  # steps of the crashing workflow; the one the child dies in (1-based)
GAP_MS = (20.0, 80.0)  # random pause before each answer
CHILD_WARMUP = 3  # answers of each answering child that are not counted
DEFAULTS = {"same": 200, "other": 100, "send-same": 200, "send-other": 100, "crash": 30}
SMOKE = {"same": 5, "other": 4, "send-same": 5, "send-other": 4, "crash": 2}

# --- marks: a step records when it starts; the benchmark waits for it -------------------

_waiting: dict[str, asyncio.Future[tuple[float, float]]] = {}
_started: dict[str, int] = {}  # how many times each mark ran in this process
_crash_in: int | None = None  # set in a --crasher child only


def expect(tag: str) -> asyncio.Future[tuple[float, float]]:
    """A future that gets (perf_counter, time) when the step tagged `tag` starts."""
    fut = asyncio.get_running_loop().create_future()
    _waiting[tag] = fut
    return fut


def _stamp(tag: str) -> None:
    now = (time.perf_counter(), time.time())
    _started[tag] = _started.get(tag, 0) + 1
    fut = _waiting.pop(tag, None)
    if fut is not None and not fut.done():
        fut.set_result(now)


async def mark(tag: str) -> None:
    _stamp(tag)


async def numbered(run_id: str, i: int) -> int:
    _stamp(f"{run_id}/{i}")
    if i == _crash_in:
        os.kill(os.getpid(), signal.SIGKILL)
    return i


# --- the workflows ------------------------------------------------------------------------


async def parked(ctx: durable.Context) -> bool:
    go = await ctx.ask("go on?", type=bool, key=KEY)
    await ctx.step(mark, ctx.run_id)
    return go


async def listening(ctx: durable.Context) -> bool:
    go = await ctx.receive(KEY, type=bool)
    await ctx.step(mark, ctx.run_id)
    return go


async def deliver(app: durable.App, via: str, run_id: str) -> None:
    """Move a parked run on: answer its prompt, or send it its message."""
    if via == "answer":
        await app.answer(run_id, KEY, True)
    else:
        await app.send(run_id, KEY, True)


async def crashing(ctx: durable.Context, steps: int) -> int:
    for i in range(1, steps + 1):
        await ctx.step(numbered, ctx.run_id, i)
    return steps


def new_app(path: Path | str, durability: str = "normal") -> durable.App:
    app = durable.App(path, durability=durability)
    app.workflow(parked)
    app.workflow(listening)
    app.workflow(crashing)
    return app


async def park(app: durable.App, run_ids: list[str], via: str = "answer") -> dict[str, durable.RunHandle]:
    """Start a `parked` (or `listening`) run per id and wait until all are unloaded, waiting."""
    wf = parked if via == "answer" else listening
    handles = {run_id: await app.start(wf, run_id=run_id) for run_id in run_ids}
    while len(await app.list_runs(status="waiting", limit=len(run_ids) + 1)) < len(run_ids):
        await asyncio.sleep(0.005)
    return handles


async def gap() -> None:
    await asyncio.sleep(random.uniform(*GAP_MS) / 1000)


# --- 1. answer -> resumed, same process -------------------------------------------------


def _forget(tags: list[str]) -> None:
    """Reset the execution counts of these marks, so a measure checks only its own executions."""
    for tag in tags:
        _started.pop(tag, None)


async def bench_same(path: Path, count: int, durability: str = "normal", via: str = "answer") -> list[float]:
    run_ids = [f"same-{via}-{i}" for i in range(count)]
    _forget(run_ids)
    samples = []
    async with new_app(path, durability) as app:
        handles = await park(app, run_ids, via)
        for run_id in run_ids:
            await gap()
            gc.collect()
            marked = expect(run_id)
            started = time.perf_counter()
            await deliver(app, via, run_id)
            at, _ = await asyncio.wait_for(marked, 10)
            samples.append((at - started) * 1000)
            assert await handles[run_id].result(timeout=10) is True
    assert all(_started[r] == 1 for r in run_ids), "a run was resumed more than once"
    return samples


# --- 2. answer -> resumed, from another process -----------------------------------------


async def answerer(db: str, durability: str = "normal", via: str = "answer") -> None:
    """Child: answer (or send a message to) the run ids read from stdin, one at a time, after a random gap."""
    async with durable.App(db, durability=durability) as app:
        print("ready", flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            run_id = line.strip()
            await gap()
            answered_at = time.time()
            await deliver(app, via, run_id)
            print(f"{run_id} {answered_at!r}", flush=True)


async def bench_other(path: Path, count: int, durability: str = "normal", via: str = "answer") -> list[float]:
    run_ids = [f"other-{via}-{i}" for i in range(CHILD_WARMUP + count)]
    _forget(run_ids)
    samples = []
    async with new_app(path, durability) as app:
        handles = await park(app, run_ids, via)
        child = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPT), "--answerer", str(path), "--durability", durability, "--via", via,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        try:
            assert (await asyncio.wait_for(child.stdout.readline(), 30)).strip() == b"ready"
            for n, run_id in enumerate(run_ids):
                marked = expect(run_id)
                child.stdin.write(f"{run_id}\n".encode())
                await child.stdin.drain()
                _, at = await asyncio.wait_for(marked, 10)
                answered, answered_at = (await asyncio.wait_for(child.stdout.readline(), 10)).decode().split()
                assert answered == run_id
                if n >= CHILD_WARMUP:
                    samples.append((at - float(answered_at)) * 1000)
                assert await handles[run_id].result(timeout=10) is True
                gc.collect()
        finally:
            child.stdin.close()
            if await asyncio.wait_for(child.wait(), 30) != 0:
                raise RuntimeError(f"the answering child exited with {child.returncode}")
    assert all(_started[r] == 1 for r in run_ids), "a run was resumed more than once"
    return samples


# --- 3. crash -> rerun resumed -----------------------------------------------------------


async def crasher(db: str, run_id: str, durability: str = "normal") -> None:
    """Child: run the crashing workflow; step CRASH_AT kills this process."""
    global _crash_in
    _crash_in = CRASH_AT
    async with new_app(db, durability) as app:
        await app.run(crashing, CRASH_STEPS, run_id=run_id)
    raise SystemExit("the crashing workflow ended without crashing")


async def bench_crash_once(path: Path, run_id: str, durability: str = "normal") -> float:
    """One crash in a child, then the timed rerun here; ms."""
    _forget([f"{run_id}/{i}" for i in range(1, CRASH_STEPS + 1)])
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), "--crasher", str(path), run_id, "--durability", durability
    )
    # Reaped here, as a shell or supervisor would: an unreaped (zombie) child keeps its
    # /proc entry and start time, so the engine would still take it for a live owner.
    if await asyncio.wait_for(child.wait(), 60) != -signal.SIGKILL:
        raise RuntimeError(f"the crashing child exited with {child.returncode}, not SIGKILL")
    app = new_app(path, durability)
    marked = expect(f"{run_id}/{CRASH_AT}")
    gc.collect()
    started = time.perf_counter()
    async with app:
        handle = await app.start(crashing, CRASH_STEPS, run_id=run_id)
        at, _ = await asyncio.wait_for(marked, 10)
        assert await handle.result(timeout=10) == CRASH_STEPS
    here = [i for i in range(1, CRASH_STEPS + 1) if f"{run_id}/{i}" in _started]
    assert here == list(range(CRASH_AT, CRASH_STEPS + 1)), f"steps executed by the rerun: {here}"
    assert all(_started[f"{run_id}/{i}"] == 1 for i in here), "a step was executed more than once"
    return (at - started) * 1000


async def bench_crash(tmp: Path, count: int, durability: str = "normal") -> list[float]:
    return [await bench_crash_once(tmp / f"crash-{i}.db", f"crash-{i}", durability) for i in range(count)]


# --- driver -----------------------------------------------------------------------------

MEASURES = [
    ("same", "answer -> resumed, same process", 5.0),
    ("other", "answer -> resumed, other process", 100.0),
    ("send-same", "send -> resumed, same process", 5.0),
    ("send-other", "send -> resumed, other process", 100.0),
    ("crash", "crash -> rerun resumed (step 25/50)", 100.0),
]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), interpolating linearly between the closest ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "aiosqlite": getattr(aiosqlite, "__version__", "?"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
    }


async def measure_all(
    tmp: Path, counts: dict[str, int], log: bool, durability: str = "normal"
) -> dict[str, list[float]]:
    samples = {}
    for name, label, _ in MEASURES:
        started = time.monotonic()
        via = "send" if name.startswith("send") else "answer"
        if name.endswith("same"):
            samples[name] = await bench_same(tmp / f"{name}.db", counts[name], durability, via)
        elif name.endswith("other"):
            samples[name] = await bench_other(tmp / f"{name}.db", counts[name], durability, via)
        else:
            samples[name] = await bench_crash(tmp, counts[name], durability)
        if log:
            elapsed = time.monotonic() - started
            print(f"  {label}: {counts[name]} samples in {elapsed:.1f}s", file=sys.stderr, flush=True)
    return samples


def report(samples: dict[str, list[float]], counts: dict[str, int], durability: str = "normal") -> dict[str, Any]:
    info = machine()
    print(
        f"python {info['python']} ({info['implementation']}), sqlite {info['sqlite']}, "
        f"aiosqlite {info['aiosqlite']}, {info['cpus']} cpus ({info['cpu']}), {info['platform']}"
    )
    gap_ms = f"{GAP_MS[0]:.0f}-{GAP_MS[1]:.0f} ms"
    print(f"durability {durability}, answer gap {gap_ms}, crash in step {CRASH_AT} of {CRASH_STEPS}\n")
    header = f"{'measure':<37} {'n':>4} {'median':>10} {'p95':>10} {'max':>10} {'goal':>10}  {'met':<3}"
    print(header)
    print("-" * len(header))
    results = []
    for name, label, goal in MEASURES:
        values = samples[name]
        med, p95 = statistics.median(values), percentile(values, 95)
        met = med <= goal
        results.append(
            {
                "measure": name, "label": label, "unit": "ms", "n": len(values), "median": med, "p95": p95,
                "min": min(values), "max": max(values), "goal_ms": goal, "met": met, "samples": values,
            }
        )  # fmt: skip
        print(
            f"{label:<37} {len(values):>4} {med:>7.2f} ms {p95:>7.2f} ms {max(values):>7.2f} ms "
            f"{'<= ' + format(goal, 'g') + ' ms':>10}  {'yes' if met else 'no'}"
        )
    print("\nmet = the median is within the goal; p95 by linear interpolation between ranks.")
    return {"machine": info, "params": {"counts": counts, "gap_ms": GAP_MS, "crash_steps": CRASH_STEPS,
                                        "crash_at": CRASH_AT, "durability": durability}, "results": results}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeat", type=int, metavar="N",
        help="samples per measure (default: 200 same process, 100 other process, 30 crashes)",
    )  # fmt: skip
    parser.add_argument(
        "--durability", choices=["normal", "full"], default="normal", help="App durability (default normal)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny counts, for CI: checks that the script runs, measures nothing useful"
    )
    parser.add_argument("--answerer", metavar="DB", help=argparse.SUPPRESS)  # child of the other-process measures
    parser.add_argument("--via", choices=["answer", "send"], default="answer", help=argparse.SUPPRESS)
    # child of the crash measure
    parser.add_argument("--crasher", nargs=2, metavar=("DB", "RUN_ID"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.answerer:
        asyncio.run(answerer(args.answerer, args.durability, args.via))
        return 0
    if args.crasher:
        asyncio.run(crasher(*args.crasher, args.durability))
        return 1
    counts = dict(SMOKE if args.smoke else DEFAULTS)
    if args.repeat is not None:
        if args.repeat < 1:
            parser.error("--repeat must be at least 1")
        counts = dict.fromkeys(counts, args.repeat)

    with tempfile.TemporaryDirectory(prefix="durable-bench-") as tmp:
        warm = Path(tmp) / "warm-up"
        warm.mkdir()
        warm_counts = {"same": 3, "other": 1, "send-same": 3, "send-other": 1, "crash": 1}
        asyncio.run(measure_all(warm, warm_counts, log=False, durability=args.durability))
        _started.clear()
        samples = asyncio.run(measure_all(Path(tmp), counts, log=not args.smoke, durability=args.durability))
    out = report(samples, counts, args.durability)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
