"""durable side by side with a naive SQLite floor, DBOS Transact and LangGraph: every workload of issue 5.

    python benchmarks/compare.py [--repeat N] [--durability normal|full|both]
                                 [--json PATH] [--smoke] [--no-peers]

One invocation measures every system on every workload where it applies, at
each durability setting, interleaved (round-robin over (workload, system,
durability), the order rotated at each repetition), each measurement on fresh
database files in a temporary directory, and prints one table of medians with
each of issue 5's goals next to the durable figure it is about, computed from
the same invocation. ``--json PATH`` also writes every sample.

Durability: "normal" = WAL + ``PRAGMA synchronous=NORMAL`` for every system,
"full" = WAL + ``synchronous=FULL`` (durable: ``App(path, durability=...)``,
which sets exactly these; the naive floor and the peers: the same two PRAGMAs,
see below).

Workloads (sizes of a normal run; ``--smoke`` shrinks them all):

W1  one run of 1,000 sequential trivial steps -> µs/step. durable: the
    ``w1`` workflow of benchmarks/steps.py (``await ctx.step(noop, i)``, an
    async step), timed around ``app.run`` inside ``async with app``. naive:
    1,000 autocommitted aiosqlite INSERTs (steps.bench_naive). Goals: durable
    <= 1.2 x naive, DBOS and LangGraph each >= 15 x durable (µs/step). LangGraph
    is measured twice: its cheapest shape, one node looping 1,000 times (the
    LangGraph column and the goal), and, on a row of its own, a graph of 1,000
    distinct nodes in a row (each checkpoint then carries every node's
    version, so its steps cost more), with the ratio to durable beside it.
W2  1,000 runs x 5 steps started concurrently -> steps/s and runs/s. durable:
    steps.bench_w2 (``app.start`` for every run under one gather, then every
    ``handle.result()``). naive: the same 5,000 autocommitted INSERTs from 1,000
    concurrent tasks on one aiosqlite connection. Goals: >= 25,000 steps/s at
    normal; >= 50 x DBOS (steps/s).
W3  a 10,000-step run parked on a final ``ctx.ask``, then a fresh App replays
    it to the prompt -> µs per replayed step (steps.make_parked untimed, then
    steps.bench_replay). naive: one ``SELECT`` of the run's 10,000 rows through
    aiosqlite on an open connection, µs/row. Peers: not measured (LangGraph
    resumes from its last checkpoint and replays nothing; DBOS would need its
    recovery timed from launch, which has no end mark to wait on). Goal <= 5 µs.
W4  rerun of a completed run -> ms to its result. durable: a completed 100-step
    run; per sample a new App on that file, timed after ``async with app`` is
    entered: ``await app.run(w1, 100, run_id=same)``; 10 samples per
    repetition. naive: one ``SELECT`` of a stored result by key through
    aiosqlite, on an open connection. Peers: see benchmarks/peers.py (DBOS: new
    DBOS instance per sample; LangGraph: new checkpointer per sample). Goal <= 0.3 ms.
W5  crash -> resumed: benchmarks/latency.py's crash measure, 5 crashes per
    repetition: a child process runs 50 steps and SIGKILLs itself in step 25;
    timed here from just before ``async with app`` (a new App) to the start of
    step 25. Median and p95 over all crashes. Goal <= 100 ms.
W6  prompt answered -> run resumed: latency.py's same-process (50 answers per
    repetition) and other-process (20 per repetition, a child process answers)
    measures. Median and p95 over all answers. Goals: <= 2 ms same process,
    <= 100 ms median across processes.
W7  memory and size. RSS: a child process (this script with a hidden flag)
    opens an App, parks 10 warm-up runs, reads its RSS (VmRSS) and the
    checkpointed journal size, starts 10,000 runs of steps.parked (one step,
    then ``ctx.ask``) under one gather, waits until all 10,000 are 'waiting'
    (a sqlite3 count on the file, every 20 ms), runs ``gc.collect()``, and reads
    RSS again; reported per waiting run, with the journal growth per waiting
    run (file checkpointed after the App closed). Goal: RSS per waiting run <=
    journal bytes per waiting run (a waiting run costs no memory beyond its
    journal rows). A second child does the same but starts the runs 100 at a
    time (each batch parked before the next starts): its row separates what a
    waiting run costs from the high-water mark of 10,000 runs in flight at
    once, which the allocator keeps as RSS. naive (the floor of this way of
    measuring): a third child, with no durable at all, starts 10,000 bare
    coroutines under one gather, each awaiting a future that is set for all of
    them at once (as a group commit would), and reports the RSS they leave
    behind per task, read the same way. Journal bytes per step: the W1
    database of each system, its connections closed,
    ``PRAGMA wal_checkpoint(TRUNCATE)``, file size / steps (fixed overhead,
    schema pages and the run's own row, included).

Peers (``pip install -e '.[bench]'``; each in a worker process of its own,
started once and warmed up, idle between requests; exact configuration in
benchmarks/peers.py's docstring and printed with the table):

- DBOS Transact (``dbos``) with its SQLite system database
  (``system_database_url="sqlite:///<fresh file>"``, otherwise DBOS's defaults);
  DBOS sets no journal mode or synchronous level for SQLite, so a SQLAlchemy
  ``"connect"`` listener on ``sqlalchemy.engine.Engine`` runs ``PRAGMA
  journal_mode=WAL`` and ``PRAGMA synchronous=NORMAL|FULL`` on every
  connection DBOS's engine opens, and reads them back (printed). A sync
  ``@DBOS.workflow`` calling a sync ``@DBOS.step()`` n times; W2 with
  ``DBOS.start_workflow`` (DBOS's executor thread pool, unbounded) then
  ``get_result`` on every handle.
- LangGraph (``langgraph`` + ``langgraph-checkpoint-sqlite``): a ``StateGraph``
  whose single node loops n times (one superstep, one checkpoint per step),
  ``invoke(..., durability="sync")``; ``SqliteSaver`` (W1, W4) or
  ``AsyncSqliteSaver`` with ``asyncio.gather`` (W2), on a connection the
  worker opened with ``PRAGMA journal_mode=WAL`` and ``synchronous=NORMAL|FULL``.

Before measuring, every durable workload runs once at tiny size, untimed, so
that imports and one-off costs are not in the figures (skipped with --smoke).
Compare ratios rather than absolute figures across machines or invocations.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import aiosqlite  # noqa: E402

import durable  # noqa: E402
from benchmarks import latency, peers, pg, steps  # noqa: E402

SCRIPT = Path(__file__).resolve()
SYSTEMS = ["durable", "naive", "dbos", "langgraph"]
LABELS = {"durable": "durable", "naive": "naive", "dbos": "DBOS", "langgraph": "LangGraph"}


@dataclasses.dataclass(frozen=True)
class Sizes:
    w1_steps: int = 1000
    w1_runs: int = 3  # durable and naive W1 runs per repetition, each on a fresh file (an fsync is noisy)
    w2_runs: int = 1000
    w2_steps: int = 5
    w3_steps: int = 10_000
    w4_steps: int = peers.W4_STEPS
    w4_samples: int = 10  # fresh Apps per repetition (durable, naive)
    w4_peer_samples: int = 5  # fresh DBOS instances / checkpointers per repetition
    w5_crashes: int = 5
    w6_same: int = 50
    w6_other: int = 20
    w7_runs: int = 10_000
    w7_batch: int = 100  # the diagnostic W7 row starts the runs this many at a time


FULL_SIZES = Sizes()
SMOKE_SIZES = Sizes(
    w1_steps=20, w1_runs=1, w2_runs=10, w2_steps=3, w3_steps=50, w4_samples=2, w4_peer_samples=1,
    w5_crashes=1, w6_same=3, w6_other=2, w7_runs=50, w7_batch=10,
)  # fmt: skip
WARM_SIZES = Sizes(
    w1_steps=10, w1_runs=1, w2_runs=5, w2_steps=2, w3_steps=10, w4_samples=1, w4_peer_samples=1,
    w5_crashes=1, w6_same=2, w6_other=1, w7_runs=10, w7_batch=5,
)  # fmt: skip


# --- small helpers -------------------------------------------------------------------------


def db_bytes(path: Path | str) -> int:
    """Size of a closed SQLite file after folding its WAL into it."""
    return peers.db_bytes(path)


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def naive_connect(path: Path, durability: str) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)  # autocommit
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute(f"PRAGMA synchronous = {steps.SYNCHRONOUS[durability]}")
    await db.execute(
        "CREATE TABLE IF NOT EXISTS records (run_id TEXT, seq INTEGER, value BLOB, PRIMARY KEY (run_id, seq)) "
        "WITHOUT ROWID"
    )
    return db


# --- naive floors beyond steps.bench_naive (W1) --------------------------------------------------


async def naive_w2(path: Path, durability: str, runs: int, per_run: int) -> float:
    """5 autocommitted INSERTs per run from `runs` concurrent tasks, one aiosqlite connection."""
    db = await naive_connect(path, durability)
    try:

        async def one(run: int) -> None:
            for i in range(per_run):
                await db.execute("INSERT INTO records VALUES (?, ?, ?)", (f"r{run}", i, str(i).encode()))

        started = time.perf_counter()
        await asyncio.gather(*(one(r) for r in range(runs)))
        return time.perf_counter() - started
    finally:
        await db.close()


async def naive_w3(path: Path, durability: str, n: int) -> float:
    """Read back an n-row run with one SELECT through aiosqlite (the floor of loading a journal)."""
    db = await naive_connect(path, durability)
    try:
        await db.execute("BEGIN")
        await db.executemany("INSERT INTO records VALUES (?, ?, ?)", [("replay", i, str(i).encode()) for i in range(n)])
        await db.execute("COMMIT")
    finally:
        await db.close()
    db = await naive_connect(path, durability)
    try:
        started = time.perf_counter()
        async with db.execute("SELECT seq, value FROM records WHERE run_id = ? ORDER BY seq", ("replay",)) as cur:
            rows = await cur.fetchall()
        elapsed = time.perf_counter() - started
    finally:
        await db.close()
    assert len(rows) == n
    return elapsed


async def naive_w4(path: Path, durability: str, samples: int) -> list[float]:
    """One SELECT of a stored result by key through aiosqlite, on a freshly opened connection; ms."""
    db = await naive_connect(path, durability)
    await db.execute("INSERT INTO records VALUES (?, ?, ?)", ("w4", -1, b"100"))
    await db.close()
    times = []
    for _ in range(samples):
        db = await naive_connect(path, durability)
        try:
            started = time.perf_counter()
            async with db.execute("SELECT value FROM records WHERE run_id = ? AND seq = -1", ("w4",)) as cur:
                row = await cur.fetchone()
            times.append((time.perf_counter() - started) * 1000)
        finally:
            await db.close()
        assert row is not None and row[0] == b"100"
    return times


# --- durable measures beyond steps.py and latency.py ----------------------------------------------


async def durable_w4(path: Path, durability: str, n: int, samples: int) -> list[float]:
    """A completed n-step run, then per sample a new App: ms of `app.run(w1, n, run_id=same)` once entered."""
    async with steps.new_app(path, durability) as app:
        assert await app.run(steps.w1, n, run_id="w4") == n
    times = []
    for _ in range(samples):
        gc.collect()
        async with steps.new_app(path, durability) as app:
            started = time.perf_counter()
            result = await app.run(steps.w1, n, run_id="w4")
            times.append((time.perf_counter() - started) * 1000)
        assert result == n
    return times


async def durable_w7(path: Path, durability: str, runs: int, batch: int) -> dict[str, Any]:
    """Run the RSS child (a fresh process) and return what it measured."""
    return await rss_in_child("--rss-child", str(path), durability, str(runs), str(batch))


async def rss_in_child(*args: str) -> dict[str, Any]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(child.communicate(), 600)
    if child.returncode != 0:
        raise RuntimeError(f"the RSS child exited with {child.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1])


def waiting_count(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM runs WHERE status = 'waiting'").fetchone()[0]
    finally:
        conn.close()


async def rss_floor_child(tasks: int) -> dict[str, Any]:
    """Child, no durable: the RSS that `tasks` bare coroutines started under one gather leave behind.

    Each awaits a future; all futures are set in one go once every task waits,
    as one commit wakes a whole batch. Read like rss_child: gc.collect(), 0.1 s, VmRSS.
    """
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[None]] = []

    async def task(i: int) -> str:
        future = loop.create_future()
        waiting.append(future)
        await future
        return f"p-{i}"

    gc.collect()
    await asyncio.sleep(0.1)
    before = rss_bytes()
    gathered = asyncio.gather(*(task(i) for i in range(tasks)))
    while len(waiting) < tasks:
        await asyncio.sleep(0)
    for future in waiting:
        future.set_result(None)
    done = len(await gathered)
    del gathered, waiting
    gc.collect()
    await asyncio.sleep(0.1)
    return {"tasks": done, "rss_delta": rss_bytes() - before}


async def rss_child(path: Path, durability: str, runs: int, batch: int) -> dict[str, Any]:
    """Child: RSS of an App before and after `runs` runs parked on ctx.ask (see W7 in the docstring).

    The runs are started `batch` at a time (each batch under one gather, the next
    one once it is parked): all at once for the figure of issue 5, 100 at a
    time for the diagnostic row that leaves out the peak of 10,000 runs in flight.
    """
    warm = 10
    async with steps.new_app(path, durability) as app:
        await asyncio.gather(*(app.start(steps.parked, 1, run_id=f"warm-{i}") for i in range(warm)))
        while waiting_count(path) < warm:
            await asyncio.sleep(0.02)
        gc.collect()
        await asyncio.sleep(0.1)
        before, size_before = rss_bytes(), db_bytes(path)
        started = time.perf_counter()
        for first in range(0, runs, batch):
            last = min(first + batch, runs)
            await asyncio.gather(*(app.start(steps.parked, 1, run_id=f"p-{i}") for i in range(first, last)))
            while waiting_count(path) < warm + last:
                await asyncio.sleep(0.02 if batch == runs else 0.002)
        parked_in = time.perf_counter() - started
        gc.collect()
        await asyncio.sleep(0.1)
        after = rss_bytes()
        held = len(getattr(app, "_executions", {}))  # runs this App still holds in memory (diagnostic)
        prompts = len(await app.prompts())
    size_after = db_bytes(path)
    assert prompts == warm + runs, prompts
    return {
        "runs": runs, "batch": batch, "rss_before": before, "rss_after": after, "rss_delta": after - before,
        "journal_before": size_before, "journal_after": size_after, "journal_delta": size_after - size_before,
        "executions_held": held, "seconds_to_park": parked_in,
    }  # fmt: skip


# --- peer workers -----------------------------------------------------------------------------------


class PeerWorker:
    """A benchmarks/peers.py worker process: one JSON request per line, one answer per line."""

    def __init__(self, system: str) -> None:
        self.system = system
        self.proc: asyncio.subprocess.Process | None = None
        self.versions: dict[str, str] = {}

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(peers.__file__).resolve()), "--worker", self.system,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self.versions = (await self._read(300))["versions"]

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                raise RuntimeError(f"the {self.system} worker exited (code {await self.proc.wait()})")
            text = line.decode(errors="replace")
            if text.startswith(peers.PREFIX):
                return json.loads(text[len(peers.PREFIX) :])

    async def request(self, op: str, **kwargs: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **kwargs}) + "\n").encode())
        await self.proc.stdin.drain()
        answer = await self._read(900)
        if not answer.pop("ok"):
            raise RuntimeError(f"{self.system} {op} failed:\n{answer['error']}")
        return answer

    async def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# --- the measurements -----------------------------------------------------------------------------

# samples[(metric, system, durability)] -> list of values; metrics:
#   W1 µs/step, W2 steps/s, W3 µs/step, W4 ms, W5 ms, W6-same ms, W6-other ms,
#   W7-rss bytes/run, W7-journal bytes/run, W7-bytes bytes/step
Samples = dict[tuple[str, str, str], list[float]]


@dataclasses.dataclass
class Item:
    workload: str
    system: str
    measure: Callable[[Path, str, int, Samples], Awaitable[None]]


def add(samples: Samples, metric: str, system: str, durability: str, *values: float) -> None:
    samples.setdefault((metric, system, durability), []).extend(values)


def items(
    sizes: Sizes, workers: dict[str, PeerWorker], pragmas: dict[str, list[Any]], admin: str | None = None
) -> list[Item]:
    z = sizes

    async def w1_durable(path: Path, d: str, rep: int, s: Samples) -> None:
        for i in range(z.w1_runs):
            file = path.with_name(f"{path.stem}-{i}.db")
            seconds = await steps.bench_w1(file, d, z.w1_steps, steps.w1)
            add(s, "W1", "durable", d, seconds / z.w1_steps * 1e6)
            add(s, "W7-bytes", "durable", d, db_bytes(file) / z.w1_steps)
            remove_db(file)

    async def w1_naive(path: Path, d: str, rep: int, s: Samples) -> None:
        for i in range(z.w1_runs):
            file = path.with_name(f"{path.stem}-{i}.db")
            seconds = await steps.bench_naive(file, d, z.w1_steps)
            add(s, "W1", "naive", d, seconds / z.w1_steps * 1e6)
            add(s, "W7-bytes", "naive", d, db_bytes(file) / z.w1_steps)
            remove_db(file)

    async def w1_sync(path: Path, d: str, rep: int, s: Samples) -> None:
        for i in range(z.w1_runs):
            file = path.with_name(f"{path.stem}-{i}.db")
            seconds = await steps.bench_w1(file, d, z.w1_steps, steps.w1_sync)
            add(s, "W1-sync", "durable", d, seconds / z.w1_steps * 1e6)
            remove_db(file)

    async def w2_durable(path: Path, d: str, rep: int, s: Samples) -> None:
        seconds = await steps.bench_w2(path, d, z.w2_runs, z.w2_steps)
        add(s, "W2", "durable", d, z.w2_runs * z.w2_steps / seconds)

    async def w2_naive(path: Path, d: str, rep: int, s: Samples) -> None:
        seconds = await naive_w2(path, d, z.w2_runs, z.w2_steps)
        add(s, "W2", "naive", d, z.w2_runs * z.w2_steps / seconds)

    async def w3_durable(path: Path, d: str, rep: int, s: Samples) -> None:
        await steps.make_parked(path, d, z.w3_steps)  # untimed set-up
        gc.collect()
        seconds = await steps.bench_replay(path, d, z.w3_steps)
        add(s, "W3", "durable", d, seconds / z.w3_steps * 1e6)

    async def w3_naive(path: Path, d: str, rep: int, s: Samples) -> None:
        seconds = await naive_w3(path, d, z.w3_steps)
        add(s, "W3", "naive", d, seconds / z.w3_steps * 1e6)

    async def w4_durable(path: Path, d: str, rep: int, s: Samples) -> None:
        add(s, "W4", "durable", d, *await durable_w4(path, d, z.w4_steps, z.w4_samples))

    async def w4_naive(path: Path, d: str, rep: int, s: Samples) -> None:
        add(s, "W4", "naive", d, *await naive_w4(path, d, z.w4_samples))

    async def w5_durable(path: Path, d: str, rep: int, s: Samples) -> None:
        folder = path.with_suffix("")
        folder.mkdir()
        for i in range(z.w5_crashes):
            run_id = f"crash-{d}-{rep}-{i}"
            add(s, "W5", "durable", d, await latency.bench_crash_once(folder / f"{run_id}.db", run_id, d))
        shutil.rmtree(folder)

    async def w6_same(path: Path, d: str, rep: int, s: Samples) -> None:
        add(s, "W6-same", "durable", d, *await latency.bench_same(path, z.w6_same, d))

    async def w6_other(path: Path, d: str, rep: int, s: Samples) -> None:
        add(s, "W6-other", "durable", d, *await latency.bench_other(path, z.w6_other, d))

    async def w7_durable(path: Path, d: str, rep: int, s: Samples) -> None:
        got = await durable_w7(path, d, z.w7_runs, z.w7_runs)
        add(s, "W7-rss", "durable", d, got["rss_delta"] / got["runs"])
        add(s, "W7-journal", "durable", d, got["journal_delta"] / got["runs"])
        add(s, "W7-held", "durable", d, got["executions_held"])

    async def w7_floor(path: Path, d: str, rep: int, s: Samples) -> None:
        got = await rss_in_child("--rss-floor", str(z.w7_runs))
        add(s, "W7-rss", "naive", d, got["rss_delta"] / got["tasks"])

    async def w7_batched(path: Path, d: str, rep: int, s: Samples) -> None:
        got = await durable_w7(path, d, z.w7_runs, z.w7_batch)
        add(s, "W7-rssbatch", "durable", d, got["rss_delta"] / got["runs"])
        add(s, "W7-held", "durable", d, got["executions_held"])

    def peer(system: str, op: str) -> Callable[[Path, str, int, Samples], Awaitable[None]]:
        async def measure(path: Path, d: str, rep: int, s: Samples) -> None:
            worker = workers[system]
            if op == "w1":
                got = await worker.request("w1", path=str(path), durability=d, n=z.w1_steps)
                add(s, "W1", system, d, got["seconds"] / z.w1_steps * 1e6)
                add(s, "W7-bytes", system, d, got["bytes"] / z.w1_steps)
            elif op == "w1-linear":
                got = await worker.request("w1", path=str(path), durability=d, n=z.w1_steps, shape="linear")
                add(s, "W1-linear", system, d, got["seconds"] / z.w1_steps * 1e6)
            elif op == "w2":
                got = await worker.request("w2", path=str(path), durability=d, runs=z.w2_runs, steps=z.w2_steps)
                add(s, "W2", system, d, z.w2_runs * z.w2_steps / got["seconds"])
            else:
                got = await worker.request("w4", path=str(path), durability=d, samples=z.w4_peer_samples)
                add(s, "W4", system, d, *got["ms"])
            pragmas.setdefault(f"{system}/{d}", []).append(got["pragmas"])

        return measure

    def on_pg(system: str, workload: str) -> Callable[[Path, str, int, Samples], Awaitable[None]]:
        """A PostgreSQL measure: a fresh database on the server for each."""

        async def measure(path: Path, d: str, rep: int, s: Samples) -> None:
            assert admin is not None
            async with pg.fresh_database(admin, d) as url:
                pragmas.setdefault(f"postgres/{d}", []).append(await pg.setting(url))
                if workload == "PG-W1":
                    if system == "durable":
                        seconds = await steps.bench_w1(url, d, z.w1_steps, steps.w1)  # type: ignore[arg-type]
                    elif system == "naive":
                        seconds = await pg.naive_w1(url, z.w1_steps)
                    else:
                        seconds = (await workers[system].request("w1", path=url, durability=d, n=z.w1_steps))["seconds"]
                    add(s, workload, system, d, seconds / z.w1_steps * 1e6)
                elif workload == "PG-W2":
                    if system == "durable":
                        seconds = await steps.bench_w2(url, d, z.w2_runs, z.w2_steps)  # type: ignore[arg-type]
                    elif system == "naive":
                        seconds = await pg.naive_w2(url, z.w2_runs, z.w2_steps)
                    else:
                        got = await workers[system].request("w2", path=url, durability=d, runs=z.w2_runs, steps=z.w2_steps)
                        seconds = got["seconds"]
                    add(s, workload, system, d, z.w2_runs * z.w2_steps / seconds)
                elif workload == "PG-W4":
                    if system == "durable":
                        ms = await durable_w4(url, d, z.w4_steps, z.w4_samples)  # type: ignore[arg-type]
                    elif system == "naive":
                        ms = await pg.naive_w4(url, z.w4_samples)
                    else:
                        ms = (await workers[system].request("w4", path=url, durability=d, samples=z.w4_peer_samples))["ms"]
                    add(s, workload, system, d, *ms)
                else:  # PG-W5
                    for i in range(z.w5_crashes):
                        run_id = f"crash-{d}-{rep}-{i}"
                        add(s, workload, system, d, await latency.bench_crash_once(url, run_id, d))  # type: ignore[arg-type]

        return measure

    out = [
        Item("W1", "durable", w1_durable), Item("W1", "naive", w1_naive), Item("W1-sync", "durable", w1_sync),
        Item("W2", "durable", w2_durable), Item("W2", "naive", w2_naive),
        Item("W3", "durable", w3_durable), Item("W3", "naive", w3_naive),
        Item("W4", "durable", w4_durable), Item("W4", "naive", w4_naive),
        Item("W5", "durable", w5_durable),
        Item("W6-same", "durable", w6_same), Item("W6-other", "durable", w6_other),
        Item("W7", "durable", w7_durable), Item("W7", "naive", w7_floor), Item("W7-batched", "durable", w7_batched),
    ]  # fmt: skip
    for system in workers:
        out += [Item(w, system, peer(system, w.lower())) for w in ("W1", "W2", "W4")]
    if "langgraph" in workers:
        out.append(Item("W1-linear", "langgraph", peer("langgraph", "w1-linear")))
    if admin is not None:
        for workload in ("PG-W1", "PG-W2", "PG-W4"):
            out += [Item(workload, system, on_pg(system, workload)) for system in ("durable", "naive")]
            if "dbos" in workers:
                out.append(Item(workload, "dbos", on_pg("dbos", workload)))
        out.append(Item("PG-W5", "durable", on_pg("durable", "PG-W5")))
    order = {"W1": 0, "W1-sync": 1, "W1-linear": 2, "W2": 3, "W3": 4, "W4": 5, "W5": 6, "W6-same": 7, "W6-other": 8,
             "W7": 9, "W7-batched": 10, "PG-W1": 11, "PG-W2": 12, "PG-W4": 13, "PG-W5": 14}  # fmt: skip
    return sorted(out, key=lambda it: (order[it.workload], SYSTEMS.index(it.system)))


async def measure_all(
    tmp: Path,
    sizes: Sizes,
    repeat: int,
    durabilities: list[str],
    workers: dict[str, PeerWorker],
    log: bool,
    admin: str | None = None,
) -> tuple[Samples, dict[str, list[Any]]]:
    samples: Samples = {}
    pragmas: dict[str, list[Any]] = {}
    loads = items(sizes, workers, pragmas, admin)
    order = [(it, d) for it in loads for d in durabilities]
    for rep in range(repeat):
        shift = rep * len(order) // repeat
        for it, d in order[shift:] + order[:shift]:
            path = tmp / f"r{rep}-{it.workload}-{it.system}-{d}.db"
            gc.collect()
            started = time.monotonic()
            await it.measure(path, d, rep, samples)
            remove_db(path)
            if log:
                print(
                    f"  [{rep + 1}/{repeat}] {it.workload:<8} {LABELS[it.system]:<9} {d:<6} "
                    f"{time.monotonic() - started:6.1f} s",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
    return samples, pragmas


# --- goals and the table --------------------------------------------------------------------------


def med(samples: Samples, metric: str, system: str, d: str) -> float | None:
    values = samples.get((metric, system, d))
    return statistics.median(values) if values else None


def p95(samples: Samples, metric: str, system: str, d: str) -> float | None:
    values = samples.get((metric, system, d))
    return latency.percentile(values, 95) if values else None


@dataclasses.dataclass
class Goal:
    text: str  # e.g. "durable/naive <= 1.20x"
    actual: float | None
    limit: float
    at_most: bool  # met when actual <= limit (else when actual >= limit)
    suffix: str = ""

    @property
    def met(self) -> bool | None:
        if self.actual is None:
            return None
        return self.actual <= self.limit if self.at_most else self.actual >= self.limit

    def shown(self) -> str:
        if self.actual is None:
            return "n/a"
        return f"{self.actual:,.2f}{self.suffix}" if self.actual < 100 else f"{self.actual:,.0f}{self.suffix}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


@dataclasses.dataclass
class Row:
    label: str
    unit: str
    durability: str
    figures: dict[str, float | None]
    goals: list[Goal]
    fmt: str
    key: str


def build_rows(samples: Samples, durabilities: list[str], sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    z = sizes
    for d in durabilities:

        def fig(metric: str, stat: Callable[..., float | None] = med) -> dict[str, float | None]:
            return {sy: stat(samples, metric, sy, d) for sy in SYSTEMS}

        w1 = fig("W1")
        rows.append(Row(
            f"W1 {z.w1_steps:,} sequential steps", "µs/step", d, w1,
            [Goal("durable/naive <= 1.2x", ratio(w1["durable"], w1["naive"]), 1.2, True, "x"),
             Goal("DBOS/durable >= 15x", ratio(w1["dbos"], w1["durable"]), 15, False, "x"),
             Goal("LangGraph/durable >= 15x", ratio(w1["langgraph"], w1["durable"]), 15, False, "x")],
            ".1f", "W1",
        ))  # fmt: skip
        sync = fig("W1-sync")
        if sync["durable"] is not None:
            rows.append(Row(
                "W1   the same, plain-function steps", "µs/step", d, sync,
                [Goal("durable(sync)/naive <= 1.15x", ratio(sync["durable"], w1["naive"]), 1.15, True, "x")],
                ".1f", "W1",
            ))  # fmt: skip
        linear = fig("W1-linear")
        if linear["langgraph"] is not None:
            rows.append(Row(
                f"W1   LangGraph as {z.w1_steps:,} distinct nodes", "µs/step", d, linear,
                [Goal("LangGraph(nodes)/durable >= 15x", ratio(linear["langgraph"], w1["durable"]), 15, False, "x")],
                ".1f", "W1",
            ))  # fmt: skip
        w2 = fig("W2")
        w2_goals = [Goal("durable/DBOS >= 50x", ratio(w2["durable"], w2["dbos"]), 50, False, "x")]
        if d == "normal":
            w2_goals.insert(0, Goal(">= 25,000 steps/s", w2["durable"], 25_000, False))
        label = f"W2 {z.w2_runs:,} runs x {z.w2_steps} steps, concurrent"
        rows.append(Row(label, "steps/s", d, w2, w2_goals, ",.0f", "W2"))
        runs = {sy: (v / z.w2_steps if v is not None else None) for sy, v in w2.items()}
        rows.append(Row("W2   same, in runs", "runs/s", d, runs, [], ",.0f", "W2"))
        w3 = fig("W3")
        rows.append(Row(
            f"W3 replay of a {z.w3_steps:,}-step run", "µs/step", d, w3,
            [Goal("<= 5 µs/step", w3["durable"], 5, True)], ".2f", "W3",
        ))  # fmt: skip
        w4 = fig("W4")
        w4_goal = [Goal("<= 0.3 ms", w4["durable"], 0.3, True)]
        rows.append(Row("W4 rerun of a completed run", "ms", d, w4, w4_goal, ".3f", "W4"))
        w5, w5p = fig("W5"), fig("W5", p95)
        w5_goal = [Goal("<= 100 ms", w5["durable"], 100, True)]
        rows.append(Row("W5 crash -> resumed, median", "ms", d, w5, w5_goal, ".1f", "W5"))
        rows.append(Row("W5   p95", "ms", d, w5p, [], ".1f", "W5"))
        same, samep = fig("W6-same"), fig("W6-same", p95)
        rows.append(Row("W6 answer -> resumed, same process", "ms", d, same,
                        [Goal("median <= 2 ms", same["durable"], 2, True)], ".2f", "W6"))  # fmt: skip
        rows.append(Row("W6   same process, p95", "ms", d, samep, [], ".2f", "W6"))
        other, otherp = fig("W6-other"), fig("W6-other", p95)
        rows.append(Row("W6 answer -> resumed, other process", "ms", d, other,
                        [Goal("median <= 100 ms", other["durable"], 100, True)], ".1f", "W6"))  # fmt: skip
        rows.append(Row("W6   other process, p95", "ms", d, otherp, [], ".1f", "W6"))
        rss, journal = fig("W7-rss"), fig("W7-journal")
        rows.append(Row(
            f"W7 RSS per waiting run ({z.w7_runs:,} parked)", "B/run", d, rss,
            [Goal("<= journal B/run", ratio(rss["durable"], journal["durable"]), 1.0, True, "x")], ",.0f", "W7",
        ))  # fmt: skip
        rows.append(Row("W7   journal growth per waiting run", "B/run", d, journal, [], ",.0f", "W7"))
        batched = fig("W7-rssbatch")
        rows.append(Row(f"W7   RSS, runs started {z.w7_batch} at a time", "B/run", d, batched, [], ",.0f", "W7"))
        rows.append(Row("W7 journal bytes per step (W1 file)", "B/step", d, fig("W7-bytes"), [], ",.0f", "W7"))
        rows += pg_rows(fig, d, z)
    return rows


def pg_rows(fig: Callable[..., dict[str, float | None]], d: str, z: Sizes) -> list[Row]:
    """The PostgreSQL rows of one durability: durable, the asyncpg floor and DBOS on the same server."""
    w1 = fig("PG-W1")
    if all(v is None for v in w1.values()):
        return []
    w2, w4, w5 = fig("PG-W2"), fig("PG-W4"), fig("PG-W5")
    return [
        Row(f"PG W1 {z.w1_steps:,} sequential steps", "µs/step", d, w1,
            [Goal("DBOS/durable >= 10x", ratio(w1["dbos"], w1["durable"]), 10, False, "x"),
             Goal("durable/naive (diagnostic)", ratio(w1["durable"], w1["naive"]), float("inf"), True, "x")],
            ".1f", "PG-W1"),
        Row(f"PG W2 {z.w2_runs:,} runs x {z.w2_steps} steps, concurrent", "steps/s", d, w2,
            [Goal(">= 10,000 steps/s", w2["durable"], 10_000, False),
             Goal("durable/DBOS >= 30x", ratio(w2["durable"], w2["dbos"]), 30, False, "x")],
            ",.0f", "PG-W2"),
        Row("PG W4 rerun of a completed run", "ms", d, w4, [], ".3f", "PG-W4"),
        Row("PG W5 crash -> resumed, median", "ms", d, w5, [], ".1f", "PG-W5"),
    ]  # fmt: skip


def print_table(rows: list[Row]) -> None:
    widths = {"label": 40, "dur": 6, "unit": 7, "fig": 10, "goal": 31, "actual": 8}
    header = (
        f"{'workload':<{widths['label']}} {'dur.':<{widths['dur']}} {'unit':<{widths['unit']}}"
        + "".join(f" {LABELS[sy]:>{widths['fig']}}" for sy in SYSTEMS)
        + f"   {'goal (durable)':<{widths['goal']}} {'actual':>{widths['actual']}}  met"
    )
    print(header)
    print("-" * len(header))
    last = None
    for row in rows:
        if last is not None and row.durability != last:
            print("-" * len(header))
        last = row.durability
        cells = "".join(
            f" {format(v, row.fmt) if v is not None else '-':>{widths['fig']}}" for v in row.figures.values()
        )
        first, *more = row.goals or [None]
        line = f"{row.label:<{widths['label']}} {row.durability:<{widths['dur']}} {row.unit:<{widths['unit']}}{cells}"
        print(line + goal_cells(first, widths))
        for goal in more:
            print(" " * len(line) + goal_cells(goal, widths))


def goal_cells(goal: Goal | None, widths: dict[str, int]) -> str:
    if goal is None:
        return ""
    met = {True: "yes", False: "NO", None: "n/a"}[goal.met]
    return f"   {goal.text:<{widths['goal']}} {goal.shown():>{widths['actual']}}  {met}"


# --- driver -----------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, sizes: Sizes, durabilities: list[str], peer_names: list[str]) -> dict[str, Any]:
    workers = {name: PeerWorker(name) for name in peer_names}
    try:
        started = time.monotonic()
        await asyncio.gather(*(w.start() for w in workers.values()))
        if workers and not args.smoke:
            print(f"  peers ready in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="durable-bench-") as tmp:
            if not args.smoke:
                warm = Path(tmp) / "warm-up"
                warm.mkdir()
                await measure_all(warm, WARM_SIZES, 1, durabilities, {}, log=False, admin=args.admin)
            samples, pragmas = await measure_all(
                Path(tmp), sizes, args.repeat, durabilities, workers, not args.smoke, args.admin
            )
        return {"samples": samples, "pragmas": pragmas, "versions": {n: w.versions for n, w in workers.items()}}
    finally:
        await asyncio.gather(*(w.close() for w in workers.values()), return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeat", type=int, default=3, metavar="N", help="repetitions of every measurement (default 3)"
    )
    parser.add_argument(
        "--durability", choices=["normal", "full", "both"], default="both", help="durability to measure (default both)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results (every sample) as JSON to PATH")
    parser.add_argument(
        "--smoke", action="store_true",
        help="tiny sizes and 1 repetition, peers only if installed: checks that everything runs (for CI)",
    )  # fmt: skip
    parser.add_argument("--no-peers", action="store_true", help="measure durable and the naive floor only")
    parser.add_argument(
        "--pg", default=pg.ADMIN, metavar="URL",
        help=f"PostgreSQL server for the PG rows, as an admin URL (default {pg.ADMIN}); a fresh database per measure",
    )  # fmt: skip
    parser.add_argument("--no-pg", action="store_true", help="leave out the PostgreSQL rows")
    parser.add_argument("--rss-child", nargs=4, metavar=("DB", "DURABILITY", "RUNS", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--rss-floor", type=int, metavar="TASKS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_floor:
        print(json.dumps(asyncio.run(rss_floor_child(args.rss_floor))))
        return 0
    if args.rss_child:
        db, durability, runs, batch = args.rss_child
        print(json.dumps(asyncio.run(rss_child(Path(db), durability, int(runs), int(batch)))))
        return 0
    sizes = SMOKE_SIZES if args.smoke else FULL_SIZES
    if args.smoke:
        args.repeat = 1
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    durabilities = ["normal", "full"] if args.durability == "both" else [args.durability]

    notes = []
    peer_names = []
    if not args.no_peers:
        for name in ("dbos", "langgraph"):
            if peers.available(name):
                peer_names.append(name)
            else:
                notes.append(f"{peers.LABELS[name]} not installed: skipped (pip install -e '.[bench]')")

    args.admin = None
    if not args.no_pg:
        reason = asyncio.run(pg.unavailable(args.pg))
        if reason is None:
            args.admin = args.pg
        else:
            notes.append(f"PostgreSQL rows skipped: {reason}")

    began = time.monotonic()
    measured = asyncio.run(run(args, sizes, durabilities, peer_names))
    samples: Samples = measured["samples"]
    rows = build_rows(samples, durabilities, sizes)
    info = latency.machine()

    print(
        f"\nmachine: {info['cpus']} cpus ({info['cpu']}), {info['platform']}; python {info['python']} "
        f"({info['implementation']}), sqlite {info['sqlite']}, aiosqlite {info['aiosqlite']}"
    )
    print(
        f"durable {durable.__version__ if hasattr(durable, '__version__') else '?'} (this checkout); "
        + "; ".join(
            f"{peers.LABELS[n]}: " + ", ".join(f"{k} {v}" for k, v in measured["versions"][n].items())
            for n in peer_names
        )
    )
    print(
        f"{args.repeat} repetition(s), interleaved, fresh database files each; median over repetitions "
        f"(durable and naive W1: over {sizes.w1_runs} runs per repetition; W4-W6: over all samples); durability normal = WAL + synchronous=NORMAL, full = WAL + "
        f"synchronous=FULL, for every system{'; SMOKE sizes: figures mean nothing' if args.smoke else ''}"
    )
    for n in peer_names:
        print(f"{peers.LABELS[n]}: {peers.CONFIG[n]}")
        for d in durabilities:
            seen = measured["pragmas"].get(f"{n}/{d}", [])
            modes = sorted({m for p in seen for m in p["journal_mode"]})
            levels = sorted({lv for p in seen for lv in p["synchronous"]})
            print(f"  read back at {d}: journal_mode={'/'.join(modes)} synchronous={'/'.join(levels)}")
    if args.admin is not None:
        print(
            f"PostgreSQL: {pg.ADMIN if args.admin == pg.ADMIN else 'the --pg server'}, a fresh database per measure; "
            "normal = synchronous_commit off, full = on (ALTER DATABASE; durable's writer sets it too); "
            "naive = one autocommitted asyncpg INSERT per step (W2: a pool of 10 connections), one SELECT by key (W4)"
        )
        for d in durabilities:
            seen = sorted(set(measured["pragmas"].get(f"postgres/{d}", [])))
            print(f"  read back at {d}: synchronous_commit={'/'.join(seen)}")
    for note in notes:
        print(note)
    print()
    print_table(rows)
    print(
        "\nnaive = one autocommitted aiosqlite INSERT per step (W1, W2), one SELECT of the run's rows (W3, µs/row), "
        "one SELECT by key (W4), bare asyncio tasks started under one gather, no durable (W7 RSS).\nRatios: DBOS/durable and LangGraph/durable compare µs/step (higher = durable "
        "faster); durable/DBOS compares steps/s.\nW7 RSS goal: RSS growth per waiting run / journal growth per "
        "waiting run (<= 1x: no memory beyond its journal rows).\n'-' = not applicable or not measured."
    )
    held = [v for d in durabilities for v in samples.get(("W7-held", "durable", d), [])]
    if held:
        print(f"W7: runs still held in memory by the App after parking: {max(held):.0f}")
    elapsed = time.monotonic() - began
    print(f"finished in {elapsed:.0f} s")

    if args.json:
        out = {
            "machine": info,
            "versions": {"durable": "checkout", **measured["versions"]},
            "params": {"repeat": args.repeat, "durability": durabilities, "smoke": args.smoke,
                       "sizes": dataclasses.asdict(sizes), "peers": peer_names},  # fmt: skip
            "peer_config": {n: peers.CONFIG[n] for n in peer_names},
            "peer_pragmas": measured["pragmas"],
            "notes": notes,
            "workloads": workloads_json(rows, samples, durabilities),
            "seconds": elapsed,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


def workloads_json(rows: list[Row], samples: Samples, durabilities: list[str]) -> dict[str, Any]:
    """{"W1": {"rows": [...], "samples": {metric: {durability: {system: [...]}}}}, ..., "W7": ...}."""
    out: dict[str, Any] = {f"W{i}": {"rows": [], "samples": {}} for i in range(1, 8)}
    for row in rows:
        out.setdefault(row.key, {"rows": [], "samples": {}})["rows"].append({
            "label": row.label, "unit": row.unit, "durability": row.durability, "median_or_stat": row.figures,
            "goals": [{"goal": g.text, "actual": g.actual, "limit": g.limit, "met": g.met} for g in row.goals],
        })  # fmt: skip
    for (metric, system, d), values in samples.items():
        key = "-".join(metric.split("-")[:2]) if metric.startswith("PG-") else metric.split("-")[0]
        out.setdefault(key, {"rows": [], "samples": {}})["samples"].setdefault(metric, {}).setdefault(d, {})[system] = values
    return out


if __name__ == "__main__":
    sys.exit(main())
