"""The peers of benchmarks/compare.py: DBOS Transact and LangGraph, each in a worker process of its own.

    python benchmarks/peers.py --worker dbos|langgraph     (started by compare.py)

A worker imports its peer once, warms up, prints ``@@bench ready {...}`` and then
answers one JSON request per line on stdin with one ``@@bench {...}`` line on
stdout (other output on stdout, such as a library's log lines, is ignored by
the reader). Each request names a workload, a fresh database file and a
durability; the worker builds everything for that request (a new DBOS
instance, a new checkpointer connection), measures, tears it down and answers.
Nothing of a peer runs between requests, so the workers are idle while the
other systems are measured.

Configuration (the same text is printed by compare.py, see ``CONFIG``):

DBOS Transact on PostgreSQL (compare.py's PG rows) runs the same way with
``system_database_url`` the URL of a fresh database on the same server as
durable's, whose ``synchronous_commit`` the harness has set for the
durability (see benchmarks/pg.py); the connect listener reads it back.

DBOS Transact, SQLite system database
    ``DBOS(config={"name": "durable-bench", "system_database_url":
    "sqlite:///<fresh file>", "log_level": "WARNING"})`` then ``DBOS.launch()``;
    everything else is DBOS's default (its SQLAlchemy engine: pool_size 20,
    pool_pre_ping, pysqlite with ``isolation_level="IMMEDIATE"``,
    ``busy_timeout=30000``, ``foreign_keys=ON``). DBOS 3.4 sets no journal mode
    or synchronous level for SQLite, so a SQLAlchemy ``"connect"`` event listener
    on ``sqlalchemy.engine.Engine`` (in this worker only DBOS's engine exists)
    runs ``PRAGMA journal_mode=WAL`` and ``PRAGMA synchronous=NORMAL|FULL`` on
    every connection the engine opens; the listener reads both back and the
    worker reports them with each measurement. Workflows and steps are the sync
    kind (a trial with ``async def`` workflow and steps was ~20% slower per step):
    ``@DBOS.workflow() def chain(n)`` calls ``@DBOS.step() def noop(i): return i``
    n times. Before a timed W1 or W2, one untimed 1-step workflow runs on the
    fresh database, so DBOS's pooled connections exist.
    W1: ``with SetWorkflowID(id): chain(n)``.
    W2: ``DBOS.start_workflow(chain, 5)`` for each of the runs, from one thread,
    then ``handle.get_result()`` for each: DBOS runs every workflow on its
    executor thread pool (``max_executor_threads`` unset: unbounded, so all runs
    are in flight at once). (A DBOS queue with worker_concurrency 200 and a
    10 ms polling interval, and ``start_workflow_async`` with async workflows,
    were not faster in a trial.)
    W4: a completed 100-step run; per sample ``DBOS.destroy()``, a new
    ``DBOS(config=...)`` on the same file and ``DBOS.launch()``; timed after the
    launch: ``with SetWorkflowID(same id): chain(100)``, which returns the
    recorded output (checked: no step executes).

LangGraph, SQLite checkpointer
    A ``StateGraph`` over ``TypedDict {i: int, n: int}`` with one node ``step``
    (returns ``{"i": i + 1}``), ``START -> step`` and a conditional edge
    ``step -> step`` while ``i < n``, else ``END``: a run of n steps is n
    supersteps, each checkpointed. ``durability="sync"`` on every invoke (each
    checkpoint is written before the next step starts) and
    ``recursion_limit = n + 10``. The checkpointer's connection is opened by
    the worker, which runs ``PRAGMA journal_mode=WAL`` and ``PRAGMA
    synchronous=NORMAL|FULL`` on it before handing it over (``setup()`` also sets
    WAL), and ``setup()`` runs untimed. One untimed 1-step run comes first.
    W1: sync ``SqliteSaver(sqlite3.connect(path, check_same_thread=False))``, sync
    node, ``graph.invoke`` (the async saver was slower per step in a trial).
    W1 is also measured (a row of its own) with a graph of n distinct nodes in a
    row, ``START -> step0 -> ... -> step{n-1} -> END`` (compiled untimed; no
    warm-up run on the fresh file, as every run of that graph has n steps; the
    worker's own warm-up ran a 10-node one): each checkpoint of that graph
    carries the versions of all n nodes, so a step costs more than in the loop.
    W2: ``AsyncSqliteSaver(aiosqlite.connect(path))``, async node, the runs'
    ``graph.ainvoke`` calls under one ``asyncio.gather``, one thread_id each.
    W4: a completed 100-step thread; per sample a new connection, saver and
    compiled graph; timed: ``graph.invoke(None, config)``, which returns the
    final state without running a node (checked).

Journal size (W7 bytes/step): after W1, the peer's connections are closed, the
file is checkpointed with ``PRAGMA wal_checkpoint(TRUNCATE)`` and its size is
divided by the steps of the timed run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict

PREFIX = "@@bench "
SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}
SYNCHRONOUS_READ_BACK = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
W4_STEPS = 100

PACKAGES = {
    "dbos": ["dbos", "SQLAlchemy"],
    "langgraph": ["langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "aiosqlite"],
}
MODULES = {"dbos": ["dbos", "sqlalchemy"], "langgraph": ["langgraph.graph", "langgraph.checkpoint.sqlite"]}
LABELS = {"dbos": "DBOS", "langgraph": "LangGraph"}
CONFIG = {
    "dbos": (
        "DBOS Transact, SQLite system database (system_database_url=sqlite:///<fresh file>, otherwise DBOS defaults); "
        "PRAGMA journal_mode=WAL and synchronous=<setting> run on every connection of DBOS's engine by a SQLAlchemy "
        "'connect' listener (read back per measurement); sync @DBOS.workflow of n sync @DBOS.step() calls; "
        "W2 via DBOS.start_workflow (executor thread pool, unbounded) + get_result; "
        "W4 = new DBOS instance (destroy, DBOS(config), launch), then the workflow again under SetWorkflowID(same id)"
    ),
    "langgraph": (
        "LangGraph StateGraph, one node looping n times (one superstep and one checkpoint per step), "
        "invoke(..., durability='sync'); W1 SqliteSaver on sqlite3, W2 AsyncSqliteSaver on aiosqlite with "
        "asyncio.gather over thread_ids; PRAGMA journal_mode=WAL and synchronous=<setting> set on the "
        "checkpointer's connection; W4 = new connection+saver+graph, invoke(None, same thread_id)"
    ),
}


def available(system: str) -> bool:
    """Whether the peer's packages are importable here (without importing them)."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) is not None for m in MODULES[system])
    except ModuleNotFoundError:
        return False


def versions(system: str) -> dict[str, str]:
    found = {}
    for name in PACKAGES[system]:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def db_bytes(path: str | os.PathLike[str]) -> int:
    """Size of a SQLite file after folding its WAL into it (no connection may hold it)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    size = os.path.getsize(path)
    wal = Path(f"{path}-wal")
    return size + (wal.stat().st_size if wal.exists() else 0)


# --- DBOS -------------------------------------------------------------------------------------

_executed = 0  # steps executed by this worker (reruns must not execute any)


class _DBOSPeer:
    def __init__(self) -> None:
        import sqlalchemy as sa
        from dbos import DBOS, SetWorkflowID

        self.DBOS, self.SetWorkflowID = DBOS, SetWorkflowID
        self.synchronous = "NORMAL"
        self.seen: list[tuple[str, str]] = []  # (journal_mode, synchronous) of each connection opened

        @sa.event.listens_for(sa.engine.Engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            if isinstance(dbapi_conn, sqlite3.Connection):
                mode = dbapi_conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                dbapi_conn.execute(f"PRAGMA synchronous={self.synchronous}")
                level = dbapi_conn.execute("PRAGMA synchronous").fetchone()[0]
                self.seen.append((mode, SYNCHRONOUS_READ_BACK.get(level, str(level))))
            elif hasattr(dbapi_conn, "execute"):  # psycopg 3, on PostgreSQL: the database's own setting
                value = dbapi_conn.execute("SHOW synchronous_commit").fetchone()[0]
                dbapi_conn.commit()
                self.seen.append(("postgresql", f"synchronous_commit={value}"))

        @DBOS.step()
        def noop(i: int) -> int:
            global _executed
            _executed += 1
            return i

        @DBOS.workflow()
        def chain(n: int) -> int:
            for i in range(n):
                noop(i)
            return n

        self.chain = chain

    def launch(self, path: str, durability: str) -> None:
        """DBOS on a fresh SQLite file, or on a fresh PostgreSQL database given by its URL."""
        self.synchronous = SYNCHRONOUS[durability]
        url = path if path.startswith("postgresql://") else f"sqlite:///{path}"
        self.DBOS(config={"name": "durable-bench", "system_database_url": url, "log_level": "WARNING"})
        self.DBOS.launch()

    def destroy(self) -> None:
        self.DBOS.destroy()

    def pragmas(self) -> dict[str, Any]:
        modes = sorted({m for m, _ in self.seen})
        levels = sorted({s for _, s in self.seen})
        self.seen.clear()
        return {"journal_mode": modes, "synchronous": levels}

    def run(self, workflow_id: str, n: int) -> int:
        with self.SetWorkflowID(workflow_id):
            return self.chain(n)

    def w1(self, path: str, durability: str, n: int) -> dict[str, Any]:
        self.launch(path, durability)
        try:
            self.run("warm-up", 1)
            started = time.perf_counter()
            result = self.run("w1", n)
            elapsed = time.perf_counter() - started
        finally:
            self.destroy()
        assert result == n
        size = None if path.startswith("postgresql://") else db_bytes(path)
        return {"seconds": elapsed, "bytes": size, "pragmas": self.pragmas()}

    def w2(self, path: str, durability: str, runs: int, steps: int) -> dict[str, Any]:
        self.launch(path, durability)
        try:
            self.run("warm-up", 1)
            started = time.perf_counter()
            handles = [self.DBOS.start_workflow(self.chain, steps) for _ in range(runs)]
            results = [h.get_result() for h in handles]
            elapsed = time.perf_counter() - started
        finally:
            self.destroy()
        assert results == [steps] * runs
        return {"seconds": elapsed, "pragmas": self.pragmas()}

    def w4(self, path: str, durability: str, samples: int) -> dict[str, Any]:
        self.launch(path, durability)
        try:
            self.run("w4", W4_STEPS)
        finally:
            self.destroy()
        times = []
        for _ in range(samples):
            self.launch(path, durability)
            try:
                before = _executed
                started = time.perf_counter()
                result = self.run("w4", W4_STEPS)
                times.append((time.perf_counter() - started) * 1000)
                assert result == W4_STEPS and _executed == before, "the rerun executed steps"
            finally:
                self.destroy()
        return {"ms": times, "pragmas": self.pragmas()}


# --- LangGraph ----------------------------------------------------------------------------------


class State(TypedDict):
    """LangGraph's state: the step counter and the number of steps of the run."""

    i: int
    n: int


def lg_step(state: State) -> dict[str, int]:
    global _executed
    _executed += 1
    return {"i": state["i"] + 1}


async def lg_astep(state: State) -> dict[str, int]:
    global _executed
    _executed += 1
    return {"i": state["i"] + 1}


def lg_more(state: State) -> str:
    return "step" if state["i"] < state["n"] else "__end__"  # langgraph.graph.END


class _LangGraphPeer:
    def __init__(self) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        from langgraph.graph import END, START, StateGraph

        assert END == "__end__"
        self.SqliteSaver, self.AsyncSqliteSaver = SqliteSaver, AsyncSqliteSaver

        def builder(node: Callable[..., Any]) -> Any:
            graph = StateGraph(State)
            graph.add_node("step", node)
            graph.add_edge(START, "step")
            graph.add_conditional_edges("step", lg_more, ["step", END])
            return graph

        def linear(n: int) -> Any:
            graph = StateGraph(State)
            previous = START
            for k in range(n):
                graph.add_node(f"step{k}", lg_step)
                graph.add_edge(previous, f"step{k}")
                previous = f"step{k}"
            graph.add_edge(previous, END)
            return graph

        self.sync_graph, self.async_graph, self.linear = builder(lg_step), builder(lg_astep), linear

    @staticmethod
    def config(thread_id: str, n: int) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": n + 10}

    def connect(self, path: str, durability: str, graph: Any = None) -> tuple[sqlite3.Connection, Any]:
        conn = sqlite3.connect(path, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={SYNCHRONOUS[durability]}")
        saver = self.SqliteSaver(conn)
        saver.setup()
        return conn, (graph or self.sync_graph).compile(checkpointer=saver)

    @staticmethod
    def pragmas(conn: sqlite3.Connection) -> dict[str, Any]:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        level = conn.execute("PRAGMA synchronous").fetchone()[0]
        return {"journal_mode": [mode], "synchronous": [SYNCHRONOUS_READ_BACK.get(level, str(level))]}

    def w1(self, path: str, durability: str, n: int, shape: str = "loop") -> dict[str, Any]:
        """shape "loop": one node run n times; "linear": a graph of n distinct nodes in a row."""
        conn, graph = self.connect(path, durability, self.linear(n) if shape == "linear" else None)
        try:
            if shape == "loop":  # a run of the linear graph has n steps: no short warm-up run exists
                graph.invoke({"i": 0, "n": 1}, self.config("warm-up", 1), durability="sync")
            started = time.perf_counter()
            result = graph.invoke({"i": 0, "n": n}, self.config("w1", n), durability="sync")
            elapsed = time.perf_counter() - started
            pragmas = self.pragmas(conn)
        finally:
            conn.close()
        assert result["i"] == n
        return {"seconds": elapsed, "bytes": db_bytes(path), "pragmas": pragmas}

    def w2(self, path: str, durability: str, runs: int, steps: int) -> dict[str, Any]:
        import aiosqlite

        async def measure() -> tuple[float, list[Any], dict[str, Any]]:
            async with aiosqlite.connect(path) as conn:
                await conn.execute("PRAGMA journal_mode=WAL")
                await conn.execute(f"PRAGMA synchronous={SYNCHRONOUS[durability]}")
                saver = self.AsyncSqliteSaver(conn)
                await saver.setup()
                graph = self.async_graph.compile(checkpointer=saver)
                await graph.ainvoke({"i": 0, "n": 1}, self.config("warm-up", 1), durability="sync")
                started = time.perf_counter()
                results = await asyncio.gather(
                    *(
                        graph.ainvoke({"i": 0, "n": steps}, self.config(f"w2-{k}", steps), durability="sync")
                        for k in range(runs)
                    )
                )
                elapsed = time.perf_counter() - started
                mode = (await (await conn.execute("PRAGMA journal_mode")).fetchone())[0]
                level = (await (await conn.execute("PRAGMA synchronous")).fetchone())[0]
            pragmas = {"journal_mode": [mode], "synchronous": [SYNCHRONOUS_READ_BACK.get(level, str(level))]}
            return elapsed, results, pragmas

        elapsed, results, pragmas = asyncio.run(measure())
        assert [r["i"] for r in results] == [steps] * runs
        return {"seconds": elapsed, "pragmas": pragmas}

    def w4(self, path: str, durability: str, samples: int) -> dict[str, Any]:
        conn, graph = self.connect(path, durability)
        try:
            graph.invoke({"i": 0, "n": W4_STEPS}, self.config("w4", W4_STEPS), durability="sync")
        finally:
            conn.close()
        times = []
        for _ in range(samples):
            conn, graph = self.connect(path, durability)
            try:
                before = _executed
                started = time.perf_counter()
                result = graph.invoke(None, self.config("w4", W4_STEPS), durability="sync")
                times.append((time.perf_counter() - started) * 1000)
                assert result["i"] == W4_STEPS and _executed == before, "the rerun executed a node"
                pragmas = self.pragmas(conn)
            finally:
                conn.close()
        return {"ms": times, "pragmas": pragmas}


# --- worker process -----------------------------------------------------------------------------


def _answer(payload: dict[str, Any]) -> None:
    sys.stdout.write(PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def worker(system: str) -> int:
    peer: Any = _DBOSPeer() if system == "dbos" else _LangGraphPeer()
    ops: dict[str, Callable[..., dict[str, Any]]] = {"w1": peer.w1, "w2": peer.w2, "w4": peer.w4}
    with tempfile.TemporaryDirectory(prefix=f"durable-bench-{system}-warm-") as tmp:
        # Untimed warm-up: imports done, one-off costs (serializers, compiled graphs) paid.
        peer.w1(os.path.join(tmp, "w1.db"), "normal", 10)
        if system == "langgraph":
            peer.w1(os.path.join(tmp, "w1-linear.db"), "normal", 10, shape="linear")
        peer.w2(os.path.join(tmp, "w2.db"), "normal", 5, 2)
        peer.w4(os.path.join(tmp, "w4.db"), "normal", 1)
    _answer({"ready": True, "versions": versions(system)})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.pop("op")
        try:
            _answer({"ok": True, **ops[op](**request)})
        except Exception:
            _answer({"ok": False, "error": traceback.format_exc()})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=sorted(PACKAGES), required=True)
    args = parser.parse_args(argv)
    return worker(args.worker)


if __name__ == "__main__":
    sys.exit(main())
