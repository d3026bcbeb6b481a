"""Soak: workers killed and stopped over and over while runs go on; nothing completed may run again.

    python benchmarks/soak.py [--kills 500] [--stops 500] [--workers 3] [--pg ADMIN_URL] [--seed N]

Runs of `job` (4 steps, one of them waits for an answer this process gives)
flow through `durable worker benchmarks.soak:app` processes. Every
`--every` seconds one worker is disrupted, at random: SIGKILL (a crash) or
SIGTERM (a graceful stop, as at a deploy), until `--kills` and `--stops` of
each have happened; a new worker replaces it at once. Then every run is
finished and the journal is checked against what the steps did:

- every execution of a step appends a line to a log of its own as it starts
  and another as it returns (O_APPEND, written before the step returns), and
  returns a token of its own;
- the token in the journal names the execution that was recorded;
- an execution that *started* after the recorded one was committed ran a
  completed step again: the figure that must be 0;
- executions that were not recorded are counted by what ended their worker:
  a SIGKILL may cost the step in flight (at-least-once), a graceful stop must
  cost nothing (it records what it lets finish);
- answers: each prompt is answered once with a value of its own, and each run
  must return exactly that value (an answer lost or given twice shows there).

SQLite by default (a file in a temporary directory); `--pg` runs the same on
a fresh PostgreSQL database.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import durable  # noqa: E402

LOG = os.environ.get("SOAK_LOG", "soak.log")
app = durable.App(poll_interval=0.05, lease_seconds=5.0, shutdown_grace_seconds=5.0)


def note(line: str) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def work(run_id: str, step: int) -> str:
    token = uuid.uuid4().hex[:12]
    started = time.time()
    note(f"{run_id}:{step} {token} {os.getpid()} {started:.6f} -")
    await asyncio.sleep(random.uniform(0.01, 0.08))
    note(f"{run_id}:{step} {token} {os.getpid()} {started:.6f} {time.time():.6f}")
    return token


@app.workflow
async def job(ctx: durable.Context) -> int:
    for step in range(2):
        await ctx.step(work, ctx.run_id, step)
    answer = await ctx.ask("a number?", type=int, key="n")
    for step in range(2, 4):
        await ctx.step(work, ctx.run_id, step)
    return answer


# --- the driver -----------------------------------------------------------------------------


class Fleet:
    def __init__(self, db: str, log: Path, count: int) -> None:
        self.db, self.log, self.count = db, log, count
        self.procs: list[subprocess.Popen[bytes]] = []
        self.fate: dict[int, str] = {}  # pid -> 'killed' | 'stopped'
        self.errs = log.with_suffix(".err")

    def start(self) -> None:
        env = {**os.environ, "DURABLE_DB": self.db, "SOAK_LOG": str(self.log), "PYTHONPATH": str(ROOT)}
        with open(self.errs, "a") as err:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "durable", "worker", "benchmarks.soak:app", "--concurrency", "50"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
            ))  # fmt: skip

    def disrupt(self, how: str) -> None:
        victim = self.procs.pop(random.randrange(len(self.procs)))
        self.fate[victim.pid] = how
        victim.send_signal(signal.SIGKILL if how == "killed" else signal.SIGTERM)
        self.start()  # a replacement at once, as a supervisor would
        if how == "killed":
            victim.wait()  # reaped: a zombie would pass for a live owner
        else:
            threading_wait(victim)

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(60)


def threading_wait(proc: subprocess.Popen[bytes]) -> None:
    import threading

    threading.Thread(target=proc.wait, daemon=True).start()


async def answer_all(control: durable.App, answered: dict[str, int], stop: asyncio.Event) -> None:
    """Answer every prompt that shows up, once, with a value of its own."""
    while not stop.is_set():
        try:
            for prompt in await control.prompts():
                if prompt.run_id in answered:
                    continue
                value = random.randrange(1, 1_000_000)
                try:
                    await control.answer(prompt.run_id, prompt.key, value)
                except durable.PromptAlreadyAnswered:
                    raise AssertionError(f"{prompt.run_id}: answered twice") from None
                except durable.PromptNotFound:
                    continue  # it left the inbox meanwhile
                answered[prompt.run_id] = value
        except durable.StoreUnavailable:
            pass
        await asyncio.sleep(0.02)


async def soak(args: argparse.Namespace, db: str, tmp: Path) -> dict[str, int]:
    log = tmp / "soak.log"
    fleet = Fleet(db, log, args.workers)
    answered: dict[str, int] = {}
    submitted: list[str] = []
    async with durable.App(db, poll_interval=0.05) as control:
        for _ in range(args.workers):
            fleet.start()
        stop = asyncio.Event()
        answers = asyncio.create_task(answer_all(control, answered, stop))
        plan = ["killed"] * args.kills + ["stopped"] * args.stops
        random.shuffle(plan)
        started = time.monotonic()
        for i, how in enumerate(plan):
            for _ in range(args.in_flight - await unfinished(control)):
                run_id = f"r{len(submitted):06}"
                await control.submit("job", run_id=run_id)
                submitted.append(run_id)
            await asyncio.sleep(args.every * random.uniform(0.5, 1.5))
            fleet.disrupt(how)
            if (i + 1) % 50 == 0:
                print(f"  {i + 1}/{len(plan)} disruptions, {len(submitted)} runs submitted, "
                      f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
        # Then let the fleet finish everything.
        deadline = time.monotonic() + 600
        while await unfinished(control):
            if time.monotonic() > deadline:
                raise RuntimeError("runs did not all complete within 10 minutes after the last disruption")
            await asyncio.sleep(0.2)
        stop.set()
        await answers
        fleet.stop_all()
        runs = {run_id: await control.get_run(run_id) for run_id in submitted}
    journal = journal_tokens(runs.values())
    executions = collections.defaultdict(list)  # run:step -> [(token, pid, start, end)]
    for line in log.read_text().splitlines():
        key, token, pid, start, end = line.split()
        if end == "-":  # its start; the line at its end (if it got there) follows
            executions[key].append((token, int(pid), float(start), None))
        else:
            executions[key][-1 if executions[key][-1][0] == token else _index(executions[key], token)] = (
                token, int(pid), float(start), float(end))  # fmt: skip
    figures = collections.Counter()
    for key, (token, committed_at) in journal.items():
        runs_of_step = executions.get(key, [])
        figures["steps recorded"] += 1
        for t, pid, start, end in runs_of_step:
            if t == token:
                continue
            if start > committed_at:
                figures["completed steps run again"] += 1
            elif fleet.fate.get(pid) == "killed":
                figures["in-flight steps run again after a SIGKILL (at-least-once)"] += 1
                figures["  of which cut off before they returned"] += end is None
            elif fleet.fate.get(pid) == "stopped":
                figures["in-flight steps run again after a graceful stop"] += 1
            else:
                figures["in-flight steps run again, their worker not disrupted"] += 1
    figures["runs submitted"] = len(submitted)
    figures["runs completed"] = sum(1 for r in runs.values() if r.status == "completed")
    figures["answers given"] = len(answered)
    figures["answers lost or wrong"] = sum(1 for run_id, v in answered.items() if runs[run_id].result != v)
    figures["runs without an answer"] = sum(1 for run_id in submitted if run_id not in answered)
    return dict(figures)


def _index(executions: list[tuple[str, int, float, float | None]], token: str) -> int:
    return next(i for i, e in enumerate(executions) if e[0] == token)


async def unfinished(control: durable.App) -> int:
    """How many runs have not ended (a blocked run counts: it would never end here)."""
    counts = [len(await control.list_runs(status=s, limit=100_000)) for s in UNFINISHED]
    return sum(counts)


UNFINISHED = ("pending", "running", "sleeping", "waiting", "blocked")


def journal_tokens(runs: Iterable[durable.Run]) -> dict[str, tuple[str, float]]:
    """run:step -> (the recorded execution's token, when its record was committed)."""
    out = {}
    for run in runs:
        steps = [record for record in run.steps if record.kind == "step"]
        for step, record in enumerate(steps):
            assert record.finished_at is not None
            out[f"{run.run_id}:{step}"] = (record.value, record.finished_at.timestamp())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=500)
    parser.add_argument("--stops", type=int, default=500)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=150, help="runs kept unfinished at once (default 150)")
    parser.add_argument("--every", type=float, default=0.4, help="seconds between disruptions, on average")
    parser.add_argument("--pg", metavar="ADMIN_URL", help="run on a fresh database of this PostgreSQL server")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="durable-soak-") as tmp:
        if args.pg:
            from benchmarks import pg

            async def on_pg() -> dict[str, int]:
                async with pg.fresh_database(args.pg, "normal") as url:
                    return await soak(args, url, Path(tmp))

            figures = asyncio.run(on_pg())
            where = "PostgreSQL"
        else:
            figures = asyncio.run(soak(args, str(Path(tmp) / "soak.db"), Path(tmp)))
            where = "SQLite"
    print(f"\nsoak on {where}: {args.workers} workers, {args.kills} SIGKILLs and {args.stops} graceful stops "
          f"(SIGTERM), one every {args.every:g} s on average, seed {args.seed}; {time.monotonic() - began:.0f} s")  # fmt: skip
    zero = {
        "completed steps run again",
        "answers lost or wrong",
        "in-flight steps run again after a graceful stop",
        "in-flight steps run again, their worker not disrupted",
    }
    order = [
        "runs submitted", "runs completed", "steps recorded", "answers given", "runs without an answer",
        "completed steps run again", "answers lost or wrong",
        "in-flight steps run again after a graceful stop", "in-flight steps run again, their worker not disrupted",
        "in-flight steps run again after a SIGKILL (at-least-once)", "  of which cut off before they returned",
    ]  # fmt: skip
    for name in order:
        value = figures.get(name, 0)
        print(f"  {name:<62} {value:>8,}{'  (goal 0)' if name in zero else ''}")
    return 0 if all(figures.get(name, 0) == 0 for name in zero) else 1


if __name__ == "__main__":
    sys.exit(main())
