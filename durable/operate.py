"""What an operator does to runs after a code change or during an incident: retry, fork, pause, resume, prune.

Each is one store operation (atomic on either store) plus what this process
must do about it: wake its worker for a run that became ready, stop a local
execution at its next ctx call. The App's methods of the same names call these.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from .engine import Engine
from .errors import RunAlreadyFinished, RunExists, RunNotFound, SeqOutOfRange, WrongRunStatus
from .store.base import FINAL

__all__ = ["PRUNE_BATCH", "fork", "pause", "prune", "resume", "retry"]

log = logging.getLogger("durable")

# Runs deleted per commit by prune(): each batch holds the write lock for milliseconds.
PRUNE_BATCH = 200


async def retry(engine: Engine, run_id: str) -> None:
    """Resume a failed or blocked run from where it stopped: its failure is set aside, the rest replays."""
    outcome = await engine.store.retry(run_id, engine.clock())
    if outcome is None:
        raise RunNotFound(run_id)
    before, moved = outcome
    if before not in ("failed", "blocked"):
        raise WrongRunStatus(
            run_id, before, "retried", "failed and blocked",
            "A run that has not ended goes on by itself; a completed or cancelled one is over (fork it to run it again).",
        )  # fmt: skip
    aside = f"; {moved} failed step record{'s' if moved != 1 else ''} set aside" if moved else ""
    log.info("run %s ↺ retried (was %s%s)", run_id, before, aside)
    engine.kick()
    engine.notify()


async def fork(engine: Engine, run_id: str, new_run_id: str, at_seq: int) -> None:
    """A new run of the same workflow and arguments with the first records of `run_id` (those before `at_seq`)."""
    if isinstance(at_seq, bool) or not isinstance(at_seq, int) or at_seq < 0:
        raise ValueError(f"fork(at_seq=...) takes a seq (a whole number >= 0), not {at_seq!r}.")
    await engine.load(run_id)  # RunNotFound
    records = await engine.store.load_records(run_id)
    end = records[-1].seq + 1 if records else 0
    if at_seq > end:
        raise SeqOutOfRange(run_id, at_seq, end)
    outcome = await engine.store.fork(run_id, new_run_id, at_seq, engine.clock())
    if outcome == "exists":
        raise RunExists(new_run_id)
    if outcome == "missing":
        raise RunNotFound(run_id)
    log.info("run %s ⑂ forked from %s at seq %d", new_run_id, run_id, at_seq)
    engine.kick()


async def pause(engine: Engine, run_id: str) -> None:
    """Stop a run at its next ctx call and keep it 'paused' until resume(): no worker claims it meanwhile."""
    before = await engine.store.pause(run_id, engine.clock())
    if before is None:
        raise RunNotFound(run_id)
    status = before[0]
    if status in FINAL:
        raise RunAlreadyFinished(run_id, status)
    if status == "blocked":
        raise WrongRunStatus(
            run_id, status, "paused", "unfinished, not blocked,",
            "A blocked run does not run: retry it after fixing the code, or cancel it.",
        )  # fmt: skip
    if status == "paused":
        return
    execution = engine.executing(run_id)
    if execution is not None and execution.active:
        execution.stop("paused")  # elsewhere, the owner's worker sees it in its next look at what it holds
    log.info("run %s ⏯ paused (was %s)", run_id, status)
    engine.notify()


async def resume(engine: Engine, run_id: str) -> None:
    """Let a paused run go on: it waits, sleeps or is resumed by a worker, as it would have without the pause."""
    outcome = await engine.store.resume(run_id, engine.clock())
    if outcome is None:
        raise RunNotFound(run_id)
    before, after = outcome
    if before != "paused":
        raise WrongRunStatus(run_id, before, "resumed", "paused", "Pause it first; a run that is not paused goes on by itself.")
    log.info("run %s ⏯ resumed (now %s)", run_id, after)
    engine.kick()
    engine.notify()


async def prune(engine: Engine, older_than: float | dt.timedelta, statuses: Iterable[str]) -> int:
    """Delete ended runs last updated more than `older_than` ago, in small batches; return how many."""
    if isinstance(older_than, dt.timedelta):
        older_than = older_than.total_seconds()
    if isinstance(older_than, bool) or not isinstance(older_than, (int, float)) or older_than < 0:
        raise ValueError(f"prune(older_than=...) takes seconds (a number >= 0) or a timedelta, not {older_than!r}.")
    chosen = list(statuses) if not isinstance(statuses, str) else [statuses]
    unfinished = [s for s in chosen if s not in FINAL]
    if unfinished or not chosen:
        raise ValueError(
            f"prune deletes only ended runs ({', '.join(sorted(FINAL))}), not {', '.join(unfinished) or 'none'}: "
            "an unfinished run is never deleted; cancel it first."
        )
    before = engine.clock() - older_than
    total = 0
    while deleted := await engine.store.prune(before, chosen, PRUNE_BATCH):
        total += deleted
    if total:
        await engine.store.reclaim()
        log.info("pruned %d run%s last updated before %s", total, "" if total == 1 else "s",
                 dt.datetime.fromtimestamp(before, dt.timezone.utc).isoformat(timespec="seconds"))  # fmt: skip
    return total
