"""The SQLite store's writes between runs: messages (a send delivers or queues, a receive takes the oldest), child runs, races.

A message is a row of ``messages`` until a ``ctx.receive`` takes it: then its
``seq`` names the receive's record, which holds the value from then on (so
replay reads it there). Each operation runs in the writer's transaction, so a
send and a receive of one run are serialised: whichever comes second sees the
other, and every message is received once, in send order.
"""

from __future__ import annotations

import json
import sqlite3

from . import sqlite_ops
from .base import FINAL, Answered, Fence, RecordRow
from .sqlite_ops import CHANGED_AT, ready_if_none_waits

__all__ = ["receive", "send", "settle", "start_child"]


def send(
    conn: sqlite3.Connection, run_id: str, topic: str, value: bytes, now: float, claimant: str | None, lease: float
) -> Answered | None:
    """Deliver a message: (the run's status before, whether it is now ready, its claim); None if no such run."""
    row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    status = row[0]
    if status in FINAL:
        return Answered(status, False, None)  # nothing written: an ended run receives nothing
    # The earliest receive of this topic that waits (and has not expired) takes it at once.
    waiting = conn.execute(
        "SELECT seq FROM records WHERE run_id = ? AND kind = 'receive' AND name = ? AND status = 'waiting'"
        " AND (deadline IS NULL OR deadline > ?) ORDER BY seq LIMIT 1",
        (run_id, topic, now),
    ).fetchone()
    seq = None if waiting is None else waiting[0]
    conn.execute(
        "INSERT INTO messages (run_id, topic, value, sent_at, seq) VALUES (?, ?, ?, ?, ?)", (run_id, topic, value, now, seq)
    )
    if seq is None:
        return Answered(status, False, None)
    conn.execute(
        f"UPDATE records SET status = 'received', value = :value, finished_at = {CHANGED_AT}"
        " WHERE run_id = :run_id AND seq = :seq",
        {"value": value, "now": now, "run_id": run_id, "seq": seq},
    )
    return Answered(status, *ready_if_none_waits(conn, run_id, now, claimant, lease))


def receive(
    conn: sqlite3.Connection, run_id: str, owner: str, epoch: int, seq: int, topic: str, now: float, deadline: float | None
) -> tuple[bool, bytes | None]:
    """Record a receive at `seq`: (False, None) if fenced out; else (True, the oldest queued message, or None: it waits)."""
    if conn.execute("SELECT 1 FROM runs WHERE run_id = ? AND owner = ? AND epoch = ?", (run_id, owner, epoch)).fetchone() is None:
        return False, None
    queued = conn.execute(
        "SELECT id, value FROM messages WHERE run_id = ? AND topic = ? AND seq IS NULL ORDER BY id LIMIT 1", (run_id, topic)
    ).fetchone()
    if queued is not None:
        conn.execute("UPDATE messages SET seq = ? WHERE id = ?", (seq, queued[0]))
    conn.execute(
        "INSERT INTO records (run_id, seq, kind, name, status, value, attempts, started_at, finished_at, deadline)"
        " VALUES (?, ?, 'receive', ?, ?, ?, 1, ?, ?, ?)",
        (run_id, seq, topic, "waiting" if queued is None else "received", None if queued is None else queued[1], now,
         None if queued is None else now, deadline),
    )  # fmt: skip
    return True, None if queued is None else queued[1]


def start_child(
    conn: sqlite3.Connection, run_id: str, owner: str, epoch: int, seq: int, child_id: str, workflow: str, args: bytes,
    now: float, deadline: float | None, queue: str | None = None,
) -> tuple[bool, str, bytes | None, bytes | None]:
    """Create the child run (pending, for any worker) and the parent's record of it, in one commit.

    Returns (False, ...) if the parent is fenced out; else the record's (status,
    value, error): 'waiting', or the outcome of a child run_id that had already
    ended. A child run_id taken by a run of another workflow is ('taken', its workflow).
    """
    if conn.execute("SELECT 1 FROM runs WHERE run_id = ? AND owner = ? AND epoch = ?", (run_id, owner, epoch)).fetchone() is None:
        return False, "", None, None
    inserted = conn.execute(
        "INSERT INTO runs (run_id, workflow, status, args, ready, created_at, updated_at, epoch, deadline, parent, parent_seq,"
        " queue) VALUES (?, ?, 'pending', ?, 'submitted', ?, ?, 0, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
        (child_id, workflow, args, now, now, deadline, run_id, seq, queue),
    ).rowcount
    status, value, error = "waiting", None, None
    if not inserted:  # a run_id given, of a run that exists: wait for it (and hear of its end)
        found = conn.execute(
            "SELECT workflow, status, result, error, parent, parent_seq FROM runs WHERE run_id = ?", (child_id,)
        ).fetchone()
        if found[0] != workflow:
            return True, "taken", found[0].encode(), None
        if found[1] in FINAL:
            status, value, error = found[1], found[2], found[3]
        elif found[4] is not None and (found[4], found[5]) != (run_id, seq):
            return True, "parented", found[4].encode(), None  # one parent hears of a child's end: not two
        else:
            conn.execute("UPDATE runs SET parent = ?, parent_seq = ? WHERE run_id = ?", (run_id, seq, child_id))
    conn.execute("UPDATE runs SET children = children + 1 WHERE run_id = ?", (run_id,))
    conn.execute(
        "INSERT INTO records (run_id, seq, kind, name, status, value, error, attempts, started_at, finished_at, question)"
        " VALUES (?, ?, 'child', ?, ?, ?, ?, 1, ?, ?, ?)",
        (run_id, seq, workflow, status, value, error, now, None if status == "waiting" else now, child_id),
    )
    return True, status, value, error


# What a loser of a race (ctx.wait) can be withdrawn from: a wait, a timer, or what came for it after the race was decided.
WITHDRAWABLE = "('waiting', 'scheduled', 'received', 'answered')"


def settle(conn: sqlite3.Connection, fence: Fence, decision: RecordRow, losers: list[int]) -> bool:
    """Record a race's decision (in place of its 'scheduled' record) and withdraw its losers, in one commit."""
    run_id, owner, epoch = fence
    if conn.execute("SELECT 1 FROM runs WHERE run_id = ? AND owner = ? AND epoch = ?", fence).fetchone() is None:
        return False
    conn.execute(
        "INSERT INTO records (run_id, seq, kind, name, status, value, error, attempts, started_at, finished_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, seq) DO UPDATE SET status = excluded.status,"
        " value = excluded.value, finished_at = excluded.finished_at WHERE records.status = 'scheduled'",
        (run_id, *decision[:9]),
    )
    if not losers:
        return True
    seqs = {"run_id": run_id, "seqs": json.dumps(losers), "now": decision.finished_at}
    among = "run_id = :run_id AND seq IN (SELECT value FROM json_each(:seqs))"
    children = conn.execute(f"SELECT question FROM records WHERE {among} AND kind = 'child' AND status = 'waiting'", seqs)
    children = [child for (child,) in children.fetchall()]
    conn.execute(f"UPDATE messages SET seq = NULL WHERE {among}", seqs)  # taken by a loser: queued again, in its place
    conn.execute(
        f"UPDATE records SET status = 'withdrawn', value = CASE WHEN kind = 'sleep' THEN value END,"
        f" finished_at = {CHANGED_AT} WHERE {among} AND status IN {WITHDRAWABLE}",
        seqs,
    )
    for child in children:
        sqlite_ops.cancel(conn, child, decision.finished_at)
    return True
