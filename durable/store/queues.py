"""Queue limits at a claim, on either store: which of the ready runs of a queue may start now.

A claim that takes runs of a queue counts, in the claiming transaction, the
runs of that queue executing now (status 'running', in any process) and the
runs started within its rate window, and takes a candidate only while every
limit holds. Both stores serialise these claims per queue (SQLite: its one
writer; PostgreSQL: a transaction-level advisory lock on the queue's name), so
two claimers never spend the same budget. A run that waits (a prompt, a sleep,
a message) is not executing: it holds no slot until it is claimed again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["Limits", "QueueLoad", "by_queue", "pick"]


class Limits(NamedTuple):
    """A queue's limits, as the claiming process knows them (None: no limit)."""

    concurrency: int | None = None
    worker_concurrency: int | None = None
    key_concurrency: int | None = None
    rate: tuple[int, float] | None = None  # at most n starts per window of seconds


class QueueLoad(NamedTuple):
    """What a queue holds now: its executing runs (by key, and this claimant's), its starts in the rate window."""

    running: int
    mine: int
    by_key: Counter[str]
    started: int

    @classmethod
    def of(cls, executing: Sequence[Any], started: int) -> QueueLoad:
        """From (key, owned by the claimant, count) rows of the queue's executing runs, and its starts."""
        by_key = Counter[str]()
        for key, _, count in executing:
            if key is not None:
                by_key[key] += count
        running = sum(count for _, _, count in executing)
        return cls(running, sum(count for _, own, count in executing if own), by_key, started)


def pick(candidates: Sequence[Any], limits: Limits, load: QueueLoad, room: int) -> list[Any]:
    """The candidates (in their order) that may be claimed now: rows whose [-3:] are (status, key, started_at).

    A run already 'running' (an orphan whose owner died) holds its slot already
    and is taken whatever the counts; a run that never started spends a rate start.
    """
    running, mine, started = load.running, load.mine, load.started
    by_key = Counter(load.by_key)
    taken: list[Any] = []
    for row in candidates:
        if len(taken) >= room:
            break
        status, key, started_at = row[-3:]
        if status == "running":  # an orphan: it holds its slot already, and is this claimant's from now on
            taken.append(row)
            mine += 1
            continue
        if limits.concurrency is not None and running >= limits.concurrency:
            break  # no slot for any later candidate either
        if limits.worker_concurrency is not None and mine >= limits.worker_concurrency:
            break
        if limits.rate is not None and started_at is None and started >= limits.rate[0]:
            continue  # a run that started before (now resumed) spends no start
        if limits.key_concurrency is not None and key is not None and by_key[key] >= limits.key_concurrency:
            continue  # another key may have room
        running, mine = running + 1, mine + 1
        if key is not None:
            by_key[key] += 1
        if started_at is None:
            started += 1
        taken.append(row)
    return taken


def by_queue(rows: Sequence[Any]) -> dict[str, dict[str, int]]:
    """(queue, status, count) rows as queue → status → count."""
    counts: dict[str, dict[str, int]] = {}
    for queue, status, n in rows:
        counts.setdefault(queue, {})[status] = n
    return counts
