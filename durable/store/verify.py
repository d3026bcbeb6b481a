"""What ``durable doctor`` (Store.verify) looks for, on any store: records lost, and values damaged in place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

__all__ = ["LOST_RECORDS", "VALUES_AFTER", "damaged_values", "lost_records"]


def lost_records(rows: list[Any]) -> list[str]:
    """The findings of verify() for (run_id, records committed, records found) rows."""
    return [
        f"run {run_id!r} committed {committed} records but only {found} are left (lost pages, or a deleted -wal file)"
        for run_id, committed, found in rows
    ]


async def damaged_values(page: Callable[[str, int], Awaitable[list[Any]]]) -> list[str]:
    """Records whose stored value or error is not the JSON durable wrote (a page damaged in place).

    `page(run_id, seq)` returns the next (run_id, seq, value, error) rows after
    that key, in key order: the journal is read a page at a time, never at once.
    """
    findings: list[str] = []
    after = ("", -1)
    while rows := await page(*after):
        for run_id, seq, value, error in rows:
            for what, blob in (("value", value), ("error", error)):
                if blob is None:
                    continue
                try:
                    msgspec.json.decode(blob)
                except msgspec.DecodeError:
                    findings.append(f"run {run_id!r}: the {what} recorded at seq {seq} is not the JSON durable wrote")
        after = (rows[-1][0], rows[-1][1])
    return findings


# Runs that hold fewer records than they counted when they last wrote (the same check a claim makes).
LOST_RECORDS = (
    "SELECT runs.run_id, runs.records, count(r.seq) FROM {schema}runs AS runs"
    " LEFT JOIN {schema}records AS r ON r.run_id = runs.run_id"
    " GROUP BY runs.run_id, runs.records HAVING count(r.seq) < runs.records ORDER BY runs.run_id"
)
# The next page of stored values for damaged_values(), after the key given as {after}.
VALUES_AFTER = (
    "SELECT run_id, seq, value, error FROM {schema}records WHERE (run_id, seq) > {after} ORDER BY run_id, seq LIMIT 1000"
)
