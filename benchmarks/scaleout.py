"""Scale-out on PostgreSQL: W2 (many runs of 5 steps) with 1, 2 and 4 worker processes on one database.

    python benchmarks/scaleout.py [--runs 4000] [--steps 5] [--workers 1,2,4] [--repeat 3]
                                  [--pg ADMIN_URL] [--namespaces]

For each number of workers (interleaved over the repetitions, the order
rotated each time), a fresh database; that many ``durable worker`` processes
are started and wait until each has opened its App; then this process submits
every run at once (``app.submit`` under one ``gather``: their creations share
commits) and the clock runs from the first submit to the moment the last run
is completed (a count polled every 10 ms). Figure: steps per second.

With ``--namespaces`` (root), each worker runs in a network namespace of its
own with its own PID and UTS namespaces, reaching the server through a relay
on its veth link (tests/netproxy.py), as the multi-host test does: the
workers are then separate hosts to durable, and every byte crosses a link.

The machine's cores bound what more processes can add: on 2 cores, the
server, the workers and this process share them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import durable  # noqa: E402
from benchmarks import pg  # noqa: E402

app = durable.App(poll_interval=0.05)  # what each worker process serves (durable worker benchmarks.scaleout:app)


async def noop(i: int) -> int:
    return i


@app.workflow
async def chain(ctx: durable.Context, n: int) -> int:
    for i in range(n):
        await ctx.step(noop, i)
    return n


class Namespaces:
    """One network namespace per worker, joined by veth to this one (10.78.<i>.0/24)."""

    def __init__(self, count: int) -> None:
        self.tag = uuid.uuid4().hex[:4]
        self.count = count

    def ns(self, i: int) -> str:
        return f"s{self.tag}n{i}"

    def __enter__(self) -> Namespaces:
        for i in range(1, self.count + 1):
            ns, link, peer = self.ns(i), f"s{self.tag}v{i}", f"s{self.tag}p{i}"
            for args in (
                ["netns", "add", ns],
                ["link", "add", link, "type", "veth", "peer", "name", peer],
                ["link", "set", peer, "netns", ns],
                ["addr", "add", f"10.78.{i}.1/24", "dev", link],
                ["link", "set", link, "up"],
                ["netns", "exec", ns, "ip", "addr", "add", f"10.78.{i}.2/24", "dev", peer],
                ["netns", "exec", ns, "ip", "link", "set", peer, "up"],
                ["netns", "exec", ns, "ip", "link", "set", "lo", "up"],
            ):
                subprocess.run(["ip", *args], check=True, capture_output=True)
        return self

    def __exit__(self, *exc: object) -> None:
        for i in range(1, self.count + 1):
            subprocess.run(["ip", "link", "del", f"s{self.tag}v{i}"], capture_output=True)
            subprocess.run(["ip", "netns", "del", self.ns(i)], capture_output=True)


def start_workers(url: str, count: int, spaces: Namespaces | None, log: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(1, count + 1):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        command = [sys.executable, "-m", "durable", "worker", "benchmarks.scaleout:app", "--concurrency", "1000"]
        if spaces is None:
            env["DURABLE_DB"] = url
        else:
            env["DURABLE_DB"] = url.replace("127.0.0.1", f"10.78.{i}.1")
            command = ["ip", "netns", "exec", spaces.ns(i), "unshare", "--uts", "--pid", "--fork", "--mount-proc",
                       "sh", "-c", f"hostname worker{i} && exec " + " ".join(command)]  # fmt: skip
        err = open(log.with_name(f"{log.stem}-{i}.err"), "w")
        procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err))
        err.close()
    return procs


def wait_started(log: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = sum(
            1 for i in range(1, count + 1)
            if "worker started" in log.with_name(f"{log.stem}-{i}.err").read_text(errors="replace")
        )  # fmt: skip
        if ready == count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {ready} of {count} workers started")
        time.sleep(0.05)


async def one(admin: str, workers: int, runs: int, steps: int, spaces: Namespaces | None, tmp: Path) -> float:
    """Steps per second with `workers` processes."""
    import asyncpg

    async with pg.fresh_database(admin, "normal") as url:
        async with durable.App(url) as control:  # creates the schema before the workers open
            pass
        log = tmp / f"w{workers}-{uuid.uuid4().hex[:6]}.log"
        procs = start_workers(url, workers, spaces, log)
        try:
            wait_started(log, workers)
            conn = await asyncpg.connect(url)
            async with durable.App(url) as control:
                started = time.perf_counter()
                await asyncio.gather(*(control.submit("chain", steps) for _ in range(runs)))
                while await conn.fetchval("SELECT count(*) FROM durable.runs WHERE status = 'completed'") < runs:
                    await asyncio.sleep(0.01)
                elapsed = time.perf_counter() - started
            await conn.close()
        finally:
            for p in procs:
                os.kill(worker_pid(p) if spaces is not None else p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    return runs * steps / elapsed


def worker_pid(proc: subprocess.Popen[bytes]) -> int:
    """The worker inside `unshare --fork` (which passes no signal on): its only child."""
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        return int(f.read().split()[0])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated process counts (default 1,2,4)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg", default=pg.ADMIN, metavar="URL", help=f"admin URL of the server (default {pg.ADMIN})")
    parser.add_argument("--namespaces", action="store_true", help="each worker in network namespaces of its own (root)")
    args = parser.parse_args()
    reason = await pg.unavailable(args.pg)
    if reason is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    counts = [int(c) for c in args.workers.split(",")]
    samples: dict[int, list[float]] = {c: [] for c in counts}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="durable-scaleout-") as tmp:
        relay = None
        spaces = Namespaces(max(counts)) if args.namespaces else None
        try:
            if spaces is not None:
                spaces.__enter__()
                port = args.pg.rsplit(":", 1)[1].split("/", 1)[0]
                relay = subprocess.Popen(
                    [sys.executable, str(ROOT / "tests" / "netproxy.py"), f"127.0.0.1:{port}",
                     *(f"10.78.{i}.1:{port}" for i in range(1, max(counts) + 1))],
                    stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                assert relay.stdout is not None and relay.stdout.readline().strip() == "ready"
            for rep in range(args.repeat):
                order = counts[rep % len(counts) :] + counts[: rep % len(counts)]
                for c in order:
                    rate = await one(args.pg, c, args.runs, args.steps, spaces, Path(tmp))
                    samples[c].append(rate)
                    print(f"  [{rep + 1}/{args.repeat}] {c} worker(s): {rate:,.0f} steps/s", file=sys.stderr, flush=True)
        finally:
            if relay is not None:
                relay.kill()
                relay.communicate()
            if spaces is not None:
                spaces.__exit__()
    where = "each in its own network, PID and UTS namespaces" if args.namespaces else "on this host"
    print(f"\nW2 on PostgreSQL: {args.runs:,} runs x {args.steps} steps, workers {where}; "
          f"{os.cpu_count()} cpus; median of {args.repeat}")  # fmt: skip
    base = statistics.median(samples[counts[0]])
    for c in counts:
        m = statistics.median(samples[c])
        print(f"  {c} worker process(es): {m:>9,.0f} steps/s  ({m / base:.2f}x of {counts[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
