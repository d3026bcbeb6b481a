"""The store contract: what the engine relies on, run against each store directly (SQLite and PostgreSQL).

Two store objects on one target stand for two processes: each has its own
connections, so their writes race as two processes' would.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from durable.store import make_store
from durable.store.base import Fence, RecordRow, Store
from durable.store.sqlite import SQLiteStore

LEASE = 30.0


@pytest.fixture
async def pair(store: str) -> AsyncIterator[tuple[Store, Store]]:
    a, b = make_store(store), make_store(store)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def step(seq: int, value: bytes = b'"ok"') -> RecordRow:
    return RecordRow(seq, "step", "s", "completed", value, None, 1, 1.0, 2.0, None, None)


def ask(seq: int, key: str) -> RecordRow:
    return RecordRow(seq, "ask", key, "waiting", None, None, 1, 1.0, None, "ok?", '{"type": "boolean"}')


def hold(s: Store, seconds: float) -> Awaitable[None]:
    """A write that keeps the store's writer (and its open transaction) busy for a while.

    Writes submitted with it, before or after, share its batch: this is how a
    test makes a transaction stay open, or makes writes queue up into one batch.
    """
    if isinstance(s, SQLiteStore):

        def op(conn: Any) -> None:
            time.sleep(seconds)

    else:

        async def op(conn: Any) -> None:
            await conn.execute(f"SELECT pg_sleep({seconds})")

    return s._write(op)  # type: ignore[attr-defined, no-any-return]


async def running(s: Store, run_id: str, owner: str = "A", workflow: str = "wf") -> Fence:
    assert await s.create_run(run_id, workflow, b'{"args": []}', owner, LEASE, 1.0) is None
    return Fence(run_id, owner, 1)


async def test_a_run_is_created_once_and_then_found(pair: tuple[Store, Store]) -> None:
    a, b = pair
    assert await a.create_run("r", "wf", b"{}", None, LEASE, 1.0) is None
    existing = await b.create_run("r", "other", b"{}", "B", LEASE, 2.0)
    assert existing is not None and (existing.workflow, existing.status, existing.owner) == ("wf", "pending", None)
    row = await b.load_run("r")
    assert row is not None and row.epoch == 0 and row.created_at == 1.0
    assert (await a.create_run("s", "wf", b"{}", "A", LEASE, 1.0)) is None
    s = await b.load_run("s")
    assert s is not None and (s.status, s.owner, s.epoch) == ("running", "A", 1) and s.lease_until is not None


async def test_racing_creates_of_one_run_id_make_one_run(pair: tuple[Store, Store]) -> None:
    a, b = pair
    for i in range(20):
        outcomes = await asyncio.gather(
            a.create_run(f"r{i}", "wf", b"{}", "A", LEASE, 1.0), b.create_run(f"r{i}", "wf", b"{}", "B", LEASE, 1.0)
        )
        assert sorted(o is None for o in outcomes) == [False, True]
        winner = "A" if outcomes[0] is None else "B"
        loser_view = outcomes[1] if winner == "A" else outcomes[0]
        assert loser_view is not None and loser_view.owner == winner


async def test_a_claim_is_a_compare_and_set_that_bumps_the_epoch(pair: tuple[Store, Store]) -> None:
    a, b = pair
    await a.create_run("r", "wf", b"{}", None, LEASE, 1.0)
    claims = await asyncio.gather(
        a.claim("r", "pending", None, "A", LEASE, 2.0), b.claim("r", "pending", None, "B", LEASE, 2.0)
    )
    won = [c for c in claims if c is not None]
    assert len(won) == 1 and won[0].epoch == 1 and won[0].workflow == "wf"
    row = await a.load_run("r")
    assert row is not None and row.status == "running" and row.epoch == 1


async def test_a_live_owners_run_is_taken_only_when_its_lease_expired_or_it_died(pair: tuple[Store, Store]) -> None:
    a, b = pair
    await a.create_run("r", "wf", b"{}", "A", 0.3, 1.0)
    assert await b.claim("r", "running", "A", "B", LEASE, 2.0) is None  # A's lease holds
    assert await b.claim_ready("B", ["wf"], [], 10, LEASE, 2.0) == []
    taken = await b.claim("r", "running", "A", "B", LEASE, 2.0, owner_dead=True)
    assert taken is not None and taken.epoch == 2
    await a.create_run("s", "wf", b"{}", "A", 0.3, 1.0)
    await asyncio.sleep(0.5)  # A's lease on s expires (the store's clock)
    (claimed,) = await b.claim_ready("B", ["wf"], [], 10, LEASE, 2.0)
    assert (claimed.run_id, claimed.status, claimed.owner, claimed.epoch) == ("s", "running", "A", 2)


async def test_a_stale_owner_writes_nothing_after_another_claimed(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "r")
    assert await a.append(fence, step(0))
    assert await a.append(fence, ask(1, "ok"))
    claimed = await b.claim("r", "running", "A", "B", LEASE, 3.0, owner_dead=True)
    assert claimed is not None
    # Every write of the first owner is refused, and none lands.
    assert await a.append(fence, step(2)) is False
    assert await a.park(fence, None, 4.0, 0) is None
    assert await a.finish(fence, "completed", b"1", None, 4.0, 0) is False
    assert await a.reopen_prompt(fence, "ok", 4.0) is False
    a.append_nowait(fence, step(3))
    await a.flush()
    assert [r.seq for r in await b.load_records("r")] == [0, 1]
    row = await b.load_run("r")
    assert row is not None and (row.status, row.owner, row.epoch) == ("running", "B", 2)
    # The same owner under an older epoch is just as stale: a claim is an epoch, not a name.
    again = await b.claim("r", "running", "B", "A", LEASE, 5.0, owner_dead=True)
    assert again is not None and again.epoch == 3
    assert await a.append(fence, step(2)) is False
    assert await a.append(Fence("r", "A", 3), step(2)) is True


@pytest.mark.parametrize("delay", [0.0, 0.05])
async def test_a_claim_never_loses_a_write_in_flight(pair: tuple[Store, Store], delay: float) -> None:
    # A's append races B's claim: if A was told "written", B sees the record after
    # its claim; if not, B can write that seq itself. Never both, never neither.
    # (A's transaction is held open after its append, then B claims.)
    a, b = pair
    for i in range(5):
        fence = await running(a, f"r{i}")
        await a.flush()
        appending = a.append(fence, step(0, b'"A"'))
        holding = hold(a, 0.2)  # same batch, same transaction as the append
        await asyncio.sleep(delay)
        claimed = await b.claim(f"r{i}", "running", "A", "B", LEASE, 2.0, owner_dead=True)
        assert claimed is not None
        seen = [r.seq for r in await b.load_replay(f"r{i}")]
        if not seen:
            assert await b.append(Fence(f"r{i}", "B", claimed.epoch), step(0, b'"B"'))
        appended = await appending
        await holding
        assert seen == ([0] if appended else [])
        assert [r.value for r in await b.load_replay(f"r{i}")] == [b'"A"' if appended else b'"B"']


@pytest.mark.parametrize("stale_every", [0, 7])
async def test_appends_batched_together_each_get_their_own_answer(pair: tuple[Store, Store], stale_every: int) -> None:
    # More than a thousand appends in one batch (several statements of many rows each), with none or some of
    # them from a stale owner: the fence refuses exactly those, every other record is written once, as it was.
    a, b = pair
    fences = [await running(a, f"r{i}") for i in range(60)]
    stale = {f"r{i}" for i in range(0, 60, stale_every)} if stale_every else set()
    for run_id in stale:
        assert await b.claim(run_id, "running", "A", "B", LEASE, 2.0, owner_dead=True) is not None
    holding = hold(a, 0.2)  # the appends queue up behind it, into one batch
    # Steps first, then prompts: long runs of one kind of record, each run of them applied as one.
    records = [(f, step(seq, f'"{f.run_id}.{seq}"'.encode())) for f in fences for seq in range(18) if seq % 5] + [
        (f, ask(seq, f"k{seq}")) for f in fences for seq in range(18) if not seq % 5
    ]  # fmt: skip
    written = await asyncio.gather(*(a.append(f, r) for f, r in records))
    await holding
    assert written == [f.run_id not in stale for f, _ in records]
    for f in fences:
        seen = await b.load_records(f.run_id)
        expected = [] if f.run_id in stale else sorted((r for g, r in records if g is f), key=lambda r: r.seq)
        assert seen == expected


async def test_racing_claimers_take_each_ready_run_once(store: str) -> None:
    stores = [make_store(store) for _ in range(4)]
    for s in stores:
        await s.open()
    try:
        for i in range(120):
            await stores[0].create_run(f"r{i:03}", "wf", b"{}", None, LEASE, float(i))
        taken: list[list[str]] = [[] for _ in stores]

        async def claimer(n: int) -> None:
            while claimed := await stores[n].claim_ready(f"W{n}", ["wf"], [], 7, LEASE, 1000.0):
                taken[n] += [c.run_id for c in claimed]

        await asyncio.gather(*(claimer(n) for n in range(4)))
        every = [r for t in taken for r in t]
        assert sorted(every) == [f"r{i:03}" for i in range(120)]  # each once, none missed
    finally:
        for s in stores:
            await s.close()


async def test_claim_ready_takes_orphans_first_then_ready_then_new_and_only_known_workflows(
    pair: tuple[Store, Store],
) -> None:
    a, b = pair
    await a.create_run("new", "wf", b"{}", None, LEASE, 1.0)
    await a.create_run("other", "not-mine", b"{}", None, LEASE, 1.0)
    fence = await running(a, "released")
    await a.release("A", 2.0, "released")
    await running(a, "orphan", owner="dead")
    fence = await running(a, "due")
    await a.park(fence, 50.0, 3.0, 0)
    await running(a, "later", owner="A2")
    await a.park(Fence("later", "A2", 1), 5000.0, 3.0, 0)
    claimed = await b.claim_ready("B", ["wf"], ["dead"], 10, LEASE, 100.0)
    order = [c.run_id for c in claimed]
    assert order[0] == "orphan" and order[-1] == "new" and set(order[1:3]) == {"released", "due"}
    assert {c.run_id: c.ready for c in claimed}["released"] == "released"
    assert {c.run_id: c.status for c in claimed}["due"] == "sleeping"
    assert all(c.epoch >= 1 for c in claimed)
    assert await b.claim_ready("B", ["wf"], [], 10, LEASE, 100.0) == []  # 'later' is not due, 'other' not ours


async def test_renew_extends_the_leases_of_held_runs_and_names_them(pair: tuple[Store, Store]) -> None:
    a, b = pair
    await a.create_run("r", "wf", b"{}", "A", 0.3, 1.0)
    await a.create_run("s", "wf", b"{}", "A", 0.3, 1.0)
    await b.claim("s", "running", "A", "B", LEASE, 2.0, owner_dead=True)
    assert await a.renew("A", LEASE) == {"r": (1, False)}
    assert await a.held("A") == {"r": (1, False)}
    await asyncio.sleep(0.5)
    assert await b.claim_ready("B", ["wf"], [], 10, LEASE, 2.0) == []  # r's lease was renewed
    assert await b.running_owners() in (["A", "B"], ["B", "A"])


async def test_appends_queued_without_waiting_commit_in_order(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "r")
    for seq in range(50):
        a.append_nowait(fence, step(seq, str(seq).encode()))
    assert await a.append(fence, step(50))
    assert [(r.seq, r.value) for r in await b.load_replay("r")][:3] == [(0, b"0"), (1, b"1"), (2, b"2")]
    assert [r.seq for r in await b.load_replay("r")] == list(range(51))


async def test_concurrent_appends_of_many_runs_each_get_their_own_answer(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fences = [await running(a, f"r{i}") for i in range(3)]
    await b.claim("r1", "running", "A", "B", LEASE, 2.0, owner_dead=True)
    busy = hold(a, 0.1)  # the appends queue up behind it and go to the store as one batch
    outcomes = await asyncio.gather(*(a.append(f, step(seq)) for seq in range(3) for f in fences))
    await busy
    assert outcomes == [True, False, True] * 3
    busy = hold(a, 0.1)
    duplicate = await asyncio.gather(a.append(fences[0], step(0)), a.append(fences[2], step(3)), return_exceptions=True)
    await busy
    assert isinstance(duplicate[0], Exception) and duplicate[1] is True  # a duplicate seq fails alone
    assert [r.seq for r in await b.load_replay("r2")] == [0, 1, 2, 3]


async def test_parking_decides_by_the_prompts_still_waiting(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "asks")
    await a.append(fence, ask(0, "first"))
    assert await a.park(fence, None, 2.0, 0) == "waiting"
    fence = await running(a, "sleeps")
    assert await a.park(fence, 99.0, 2.0, 0) == "sleeping"
    assert (await b.next_wake()) == 99.0
    # An answer that came while the run was still executing: parking must not leave it waiting.
    fence = await running(a, "answered")
    await a.append(fence, ask(0, "go"))
    answered = await b.answer("answered", "go", b"true", 2.0)
    assert (answered.before, answered.ready, answered.claimed) == ("waiting", False, None)  # still running
    assert await a.park(fence, None, 3.0, 0) == "pending"
    row = await b.load_run("answered")
    assert row is not None and row.status == "pending"


async def test_an_answer_and_a_park_that_race_never_strand_the_run(pair: tuple[Store, Store]) -> None:
    a, b = pair
    for i in range(30):
        fence = await running(a, f"r{i}")
        await a.append(fence, ask(0, "go"))
        parked, answered = await asyncio.gather(a.park(fence, None, 2.0, 0), b.answer(f"r{i}", "go", b"true", 2.0))
        row = await b.load_run(f"r{i}")
        assert row is not None and answered.before == "waiting"
        assert row.status == "pending", f"run r{i} is {row.status} after park={parked}, answer={answered}"


async def test_an_answer_is_recorded_once_and_may_claim_its_run(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "r")
    await a.append(fence, ask(0, "x"))
    await a.append(fence, ask(1, "y"))
    await a.park(fence, None, 2.0, 0)
    first, second = await asyncio.gather(a.answer("r", "x", b"1", 3.0, "A", LEASE), b.answer("r", "x", b"2", 3.0, "B", LEASE))
    assert sorted([first.before, second.before]) == ["answered", "waiting"]
    assert first.claimed is None and second.claimed is None  # y still waits
    last = await b.answer("r", "y", b"3", 4.0, "B", LEASE)
    assert last.ready and last.claimed is not None and last.claimed.epoch == 2
    row = await a.load_run("r")
    assert row is not None and (row.status, row.owner) == ("running", "B")
    assert await a.prompt("r", "y") == ("answered", '{"type": "boolean"}', "wf", None)
    assert await a.pending_prompts(None) == []
    missing = await a.answer("r", "nope", b"1", 5.0)
    assert missing.before is None


async def test_cancel_ends_a_run_and_its_waiting_prompts(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "r")
    await a.append(fence, ask(0, "x"))
    assert await b.cancel("r", 2.0) == ("running", "A")
    assert await b.cancel("r", 3.0) == ("cancelled", None)
    assert await b.cancel("nope", 3.0) is None
    assert await a.append(fence, step(1)) is False  # cancelled: the owner's writes are refused
    assert [(r.seq, r.status) for r in await a.load_records("r")] == [(0, "cancelled")]


async def test_release_hands_running_runs_back_as_pending(pair: tuple[Store, Store]) -> None:
    a, b = pair
    for i in range(3):
        await running(a, f"r{i}")
    assert await a.release("A", 2.0, "r0") == 1
    assert await a.release("A", 2.0) == 2
    rows = [await b.load_run(f"r{i}") for i in range(3)]
    assert [(r.status, r.owner) for r in rows if r is not None] == [("pending", None)] * 3


async def test_an_ended_run_is_known_as_ended(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "r")
    assert await b.ended_run("r") is None
    assert await a.finish(fence, "completed", b"42", None, 2.0, 0)
    await asyncio.sleep(0)  # the SQLite store answers from its idle writer only; retry once it is idle
    ended = await a.ended_run("r") or await b.load_run("r")
    assert ended is not None and (ended.status, ended.result) == ("completed", b"42")
    assert [r.run_id for r in await b.list_runs("completed", "wf", 10)] == ["r"]


async def test_a_commit_elsewhere_wakes_a_waiting_store(pair: tuple[Store, Store]) -> None:
    a, b = pair
    wake = asyncio.Event()
    await a.wait_for_change(0.01, wake)  # the first look only sets where changes are counted from
    waiting = asyncio.create_task(a.wait_for_change(10.0, wake))
    await asyncio.sleep(0.1)
    await b.create_run("r", "wf", b"{}", None, LEASE, 1.0)
    assert await asyncio.wait_for(waiting, 5.0) is True


async def test_watch_changes_come_after_a_cursor(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "r")
    await a.append(fence, ask(0, "x"))
    await a.append(fence, step(1))
    assert [r.seq for r in await b.changes("r", 1, (0.0, -1))] == [1]
    await b.answer("r", "x", b"true", 5.0)
    changed: list[Any] = await b.changes("r", 2, (0.0, -1))
    assert [(r.seq, r.status) for r in changed] == [(0, "answered")]
    assert changed[0].finished_at >= 5.0


async def test_a_run_keeps_a_lower_bound_of_its_committed_records(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "r")
    for seq in range(3):
        await a.append(fence, step(seq))
    assert await a.park(fence, 99.0, 2.0, 3) == "sleeping"
    row = await b.load_run("r")
    assert row is not None and row.records == 3
    claimed = await b.claim("r", "sleeping", None, "B", LEASE, 3.0)
    assert claimed is not None and claimed.records == 3  # what a resume checks the loaded journal against
    assert await b.release("B", 4.0, "r", records=2) == 1  # never lowered
    row = await b.load_run("r")
    assert row is not None and row.records == 3


async def test_verify_names_each_run_that_holds_fewer_records_than_it_committed(pair: tuple[Store, Store]) -> None:
    a, b = pair
    for run_id in ("whole", "short"):
        fence = await running(a, run_id)
        for seq in range(3):
            await a.append(fence, step(seq))
        assert await a.park(fence, 99.0, 2.0, 3) == "sleeping"
    assert await b.verify() == []
    # Lose one record as a damaged page or a deleted -wal file would (behind the store's back).
    await a._write(lambda conn: _delete_record(conn, "short", 1))  # type: ignore[attr-defined]
    (finding,) = await b.verify()
    assert "run 'short' committed 3 records but only 2 are left" in finding


async def test_verify_names_each_record_whose_value_is_not_the_json_written(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "r")
    await a.append(fence, step(0))
    await a.append(fence, step(1, b"\0" * 40))  # as a page zeroed in place reads back
    assert await b.verify() == ["run 'r': the value recorded at seq 1 is not the JSON durable wrote"]


def _delete_record(conn: Any, run_id: str, seq: int) -> Any:
    """On the store's writer connection: SQLite's (a call) or PostgreSQL's (awaited by the store)."""
    if isinstance(conn, sqlite3.Connection):
        return conn.execute("DELETE FROM records WHERE run_id = ? AND seq = ?", (run_id, seq))
    return conn.execute("DELETE FROM durable.records WHERE run_id = $1 AND seq = $2", run_id, seq)


# --- prompt deadlines ------------------------------------------------------------------------------


def ask_until(seq: int, key: str, deadline: float) -> RecordRow:
    return ask(seq, key)._replace(deadline=deadline)


async def test_a_waiting_run_wakes_at_its_prompts_deadline_and_a_late_answer_is_refused(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "r")
    await a.append(fence, ask_until(0, "x", 50.0))
    assert await a.park(fence, None, 2.0, 1, deadline=50.0) == "waiting"
    assert (await b.load_run("r")).wake_at == 50.0 and await b.next_wake() == 50.0  # type: ignore[union-attr]
    assert await b.claim_ready("B", ["wf"], [], 10, LEASE, 49.0) == []
    assert (await b.answer("r", "x", b"true", 50.0)).before == "expired"  # at the deadline: too late
    assert (await b.prompt("r", "x")) == ("waiting", '{"type": "boolean"}', "wf", 50.0)
    [claimed] = await b.claim_ready("B", ["wf"], [], 10, LEASE, 50.0)
    assert (claimed.run_id, claimed.status) == ("r", "waiting")
    late = Fence("r", "B", claimed.epoch)
    assert await a.expire(fence, 0, 51.0) is False  # the old owner is fenced out
    assert await b.expire(late, 0, 51.0) is True
    assert (await b.answer("r", "x", b"true", 52.0)).before == "expired"
    assert [(r.status, r.deadline) for r in await a.load_records("r")] == [("expired", 50.0)]


async def test_an_answer_before_the_deadline_wins_and_a_sleep_can_wake_a_waiting_run_sooner(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "r")
    await a.append(fence, ask_until(0, "x", 50.0))
    assert await a.park(fence, 20.0, 2.0, 1, deadline=50.0) == "waiting"
    assert (await b.load_run("r")).wake_at == 20.0  # type: ignore[union-attr]
    answered = await b.answer("r", "x", b"true", 10.0)
    assert (answered.before, answered.ready) == ("waiting", True)
    claimed = await a.claim("r", "pending", None, "A", LEASE, 11.0)
    assert claimed is not None
    assert await a.expire(Fence("r", "A", claimed.epoch), 0, 60.0) is False  # answered first


# --- operators' writes ---------------------------------------------------------------------------


async def test_retry_sets_the_failing_step_aside_and_makes_the_run_pending(pair: tuple[Store, Store]) -> None:
    from durable.codec import error_to_json

    a, b = pair
    fence = await running(a, "r")
    await a.append(fence, step(0))
    failed = RecordRow(1, "step", "s", "failed", None, b'{"type": "x:E", "message": "m"}', 3, 3.0, 4.0, None, None)
    await a.append(fence, failed)
    assert await a.finish(fence, "failed", None, error_to_json(ValueError("m"), 1), 5.0, 2) is True
    assert await b.retry("r", 6.0) == ("failed", 1)
    row = await a.load_run("r")
    assert row is not None and (row.status, row.error, row.owner, row.records) == ("pending", None, None, 1)
    assert [r.seq for r in await a.load_records("r")] == [0]
    assert [(r.seq, r.kind, r.status) for r in await a.load_set_aside("r")] == [(-1, "run", "failed"), (1, "step", "failed")]
    assert await b.retry("r", 7.0) == ("pending", 0)  # not failed: left as it is
    assert await b.retry("nope", 7.0) is None


async def test_fork_copies_the_records_before_a_seq_into_a_new_pending_run(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "src")
    for seq in range(3):
        await a.append(fence, step(seq))
    await a.append(fence, ask(3, "ok"))
    assert await b.cancel("src", 2.0) == ("running", "A")
    assert await b.fork("src", "copy", 2, 3.0) == "forked"
    assert [r.seq for r in await a.load_records("copy")] == [0, 1]
    row = await a.load_run("copy")
    assert row is not None and (row.status, row.workflow, row.args, row.records) == ("pending", "wf", b'{"args": []}', 2)
    assert await b.fork("src", "whole", 4, 3.0) == "forked"
    assert [(r.seq, r.status) for r in await a.load_records("whole")][-1] == (3, "waiting")  # asked again
    assert await b.fork("src", "copy", 1, 4.0) == "exists"
    assert [r.seq for r in await a.load_records("copy")] == [0, 1]  # untouched
    assert await b.fork("nope", "other", 0, 4.0) == "missing"
    assert await a.load_run("other") is None


async def test_a_paused_run_is_claimed_by_nobody_and_its_owner_unloads_it_paused(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "r")
    assert await b.pause("r", 2.0) == ("running", "A")
    assert await a.held("A") == {"r": (1, True)}  # the owner learns it must stop
    assert await a.append(fence, step(0)) is True  # a step in flight is still recorded
    assert await a.release("A", 3.0, "r") == 1
    row = await b.load_run("r")
    assert row is not None and (row.status, row.owner) == ("paused", None)
    assert await b.claim_ready("B", ["wf"], [], 10, LEASE, 4.0) == []
    assert await b.pause("r", 4.0) == ("paused", None)
    assert await b.resume("r", 5.0) == ("paused", "pending")
    assert [c.run_id for c in await b.claim_ready("B", ["wf"], [], 10, LEASE, 6.0)] == ["r"]
    # Paused while waiting: it goes back to waiting (and a park of a paused run keeps it paused).
    fence = await running(a, "w")
    await a.append(fence, ask(0, "x"))
    assert await b.pause("w", 2.0) == ("running", "A")
    assert await a.park(fence, None, 3.0, 1) == "paused"
    assert (await b.answer("w", "x", b"true", 4.0)).ready is False  # recorded; the run stays paused
    assert await b.resume("w", 5.0) == ("paused", "pending")
    assert await b.resume("w", 5.0) == ("pending", "pending")
    assert await b.resume("nope", 5.0) is None


async def test_prune_deletes_only_ended_runs_older_than_asked_with_all_they_own(pair: tuple[Store, Store]) -> None:
    a, b = pair
    for i, status in enumerate(("completed", "failed", "cancelled", "running")):
        fence = await running(a, f"r{i}")
        await a.append(fence, step(0))
        if status in ("completed", "failed"):
            assert await a.finish(fence, status, None, None, 10.0 + i, 1)
        elif status == "cancelled":
            await a.cancel(f"r{i}", 10.0 + i)
    assert await b.prune(11.5, ["completed", "failed", "cancelled"], 100) == 2  # r0, r1: updated before 11.5
    assert await b.prune(100.0, ["completed"], 100) == 0
    assert await b.prune(100.0, ["cancelled"], 100) == 1
    assert [await a.load_run(f"r{i}") is None for i in range(4)] == [True, True, True, False]
    assert await a.load_records("r0") == [] and len(await a.load_records("r3")) == 1
    await b.reclaim()


async def test_a_fork_asks_a_waiting_prompt_anew_with_its_timeout_counted_from_the_fork(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "src")
    await a.append(fence, step(0))
    await a.append(fence, ask_until(1, "ok", 61.0)._replace(started_at=1.0))  # a 60 s timeout
    assert await b.fork("src", "copy", 2, 500.0) == "forked"
    [done, asked] = await a.load_records("copy")
    assert (done.status, done.started_at) == ("completed", 1.0)
    assert (asked.status, asked.started_at, asked.finished_at, asked.deadline) == ("waiting", 500.0, None, 560.0)


def receive(seq: int, topic: str) -> RecordRow:
    return RecordRow(seq, "receive", topic, "waiting", None, None, 1, 1.0, None, None, None)


async def test_a_run_parked_in_a_race_wakes_at_the_first_wait_filled_not_the_last(pair: tuple[Store, Store]) -> None:
    a, b = pair
    for case in ("gather", "race", "stale"):
        fence = await running(a, case)
        await a.append(fence, ask(0, "approve"))
        await a.append(fence, receive(1, "payment"))
        # stale: the run waits only at seq 0; seq 1 waits for an abandoned ctx.as_completed branch.
        waiting_at, race = {"gather": ([0, 1], False), "race": ([0, 1], True), "stale": ([0], False)}[case]
        assert await a.park(fence, None, 2.0, 2, None, waiting_at, race) == "waiting"
        answered = await b.answer(case, "approve", b"true", 3.0)
        assert answered.ready is (case != "gather")  # a gather waits for both; a race, or a stale wait, for the first
        row = await b.load_run(case)
        assert row is not None and row.status == ("waiting" if case == "gather" else "pending")
    # A race one of whose waits was filled while the run still executed is ready as it parks (and not otherwise).
    fence = await running(a, "filled")
    await a.append(fence, ask(0, "approve"))
    await a.append(fence, receive(1, "payment"))
    await b.send("filled", "payment", b"5", 3.0)
    assert await a.park(fence, 50.0, 4.0, 2, None, [0, 1], True) == "pending"
    # Paused in a race and resumed: replayed (its race may be decided), not left waiting.
    fence = await running(a, "paused")
    await a.append(fence, ask(0, "approve"))
    assert await a.park(fence, None, 2.0, 1, None, [0], True) == "waiting"
    assert (await b.pause("paused", 3.0))[0] == "waiting"  # type: ignore[index]
    assert await b.resume("paused", 4.0) == ("paused", "pending")


async def test_settling_a_race_withdraws_its_losers_and_requeues_a_message_one_took(pair: tuple[Store, Store]) -> None:
    a, b = pair
    fence = await running(a, "p")
    assert (await a.start_child(fence, 0, "p.0", "kid", b'{"args": []}', 1.0, None))[:2] == (True, "waiting")
    await a.append(fence, ask(1, "approve"))
    await a.append(fence, receive(2, "payment"))
    await a.append(fence, RecordRow(3, "wait", "FIRST_COMPLETED", "scheduled", b'"2026-01-01T00:00:00Z"', None, 1, 1.0, None, None, None))
    await b.send("p", "payment", b"7", 2.0)  # taken by the receive, which is about to lose
    decision = RecordRow(3, "wait", "FIRST_COMPLETED", "completed", b'{"done":[]}', None, 1, 1.0, 3.0, None, None)
    assert await b.settle(Fence("p", "B", 1), decision, [0, 1, 2]) is False  # fenced, as every write of a run
    assert await a.settle(fence, decision, [0, 1, 2]) is True
    records = {r.seq: r for r in await b.load_records("p")}
    assert [records[s].status for s in range(4)] == ["withdrawn", "withdrawn", "withdrawn", "completed"]
    assert records[3].value == b'{"done":[]}'
    child = await b.load_run("p.0")
    assert child is not None and child.status == "cancelled"
    assert await b.pending_prompts("p") == []
    ok, value = await a.receive(fence, 4, "payment", 4.0, None)  # the message is queued again, for the next receive
    assert (ok, value) == (True, b"7")


async def test_a_schedule_fires_once_per_cursor_and_not_while_paused(pair: tuple[Store, Store]) -> None:
    from durable.store.schedules import Slot

    a, b = pair
    row = await a.add_schedule("report", "report", "*/5 * * * *", "UTC", 100.0)
    assert (row.cursor, row.last_slot, row.paused) == (100.0, None, False)
    # Registered again (another process, a later deploy): the cursor stays; a new cron is taken.
    row = await b.add_schedule("report", "report", "*/10 * * * *", "UTC", 500.0)
    assert (row.cron, row.cursor) == ("*/10 * * * *", 100.0)
    slots = [Slot("report@300", 300.0, b'{"args": [300]}'), Slot("report@600", 600.0, b'{"args": [600]}')]
    assert await a.fire_schedule("report", 100.0, slots, "report", "q", None, 700.0) is True
    # The other process read the same cursor: it moves nothing and creates nothing.
    assert await b.fire_schedule("report", 100.0, [Slot("report@900", 900.0, b"{}")], "report", None, None, 700.0) is False
    assert await b.load_run("report@900") is None
    made = [await b.load_run(slot.run_id) for slot in slots]
    assert [(r.status, r.workflow, r.args) for r in made if r is not None] == [
        ("pending", "report", b'{"args": [300]}'), ("pending", "report", b'{"args": [600]}'),
    ]  # fmt: skip
    assert await b.list_runs(None, None, 10, queue="q") != []
    [row] = await b.schedules()
    assert (row.cursor, row.last_slot) == (600.0, 600.0)
    # Paused: no fire; resumed: the cursor moves to the resume, so the slots passed meanwhile are not made.
    paused = await b.pause_schedule("report", True, 800.0)
    assert paused is not None and paused.paused and paused.cursor == 600.0
    assert await a.fire_schedule("report", 600.0, [Slot("report@900", 900.0, b"{}")], "report", None, None, 950.0) is False
    resumed = await b.pause_schedule("report", False, 1000.0)
    assert resumed is not None and (resumed.paused, resumed.cursor, resumed.last_slot) == (False, 1000.0, 600.0)
    assert await b.pause_schedule("nope", True, 1000.0) is None
    assert await a.remove_schedule("report") is True
    assert (await b.schedules(), await b.remove_schedule("report")) == ([], False)
    assert await b.load_run("report@300") is not None  # its runs stay
