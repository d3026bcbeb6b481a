"""What the App reports: Run, Record (one journal entry) and Prompt."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from .codec import decode_any, from_timestamp
from .store.base import PromptRow, RecordRow, RunRow
from .store.prompts import PromptLogRow

__all__ = ["CheckResult", "Cursor", "LogEntry", "Prompt", "Record", "Run"]


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """One journal entry: a step, sleep, prompt (kind 'ask'), message (kind 'receive'), child run (kind 'child';
    its run_id in `question`), clock reading (kind 'now') or patch marker (kind 'patch')."""

    seq: int
    kind: str
    name: str
    status: str
    value: Any = None
    error: dict[str, Any] | None = None
    attempts: int = 1
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    question: str | None = None
    schema: dict[str, Any] | None = None
    expires_at: dt.datetime | None = None  # a prompt's deadline (ctx.ask(timeout=...))
    assignee: str | None = None  # a prompt's (ctx.ask(assignee=...), app.reassign)
    by: str | None = None  # an answered prompt's: who answered (app.answer(by=...), the HTTP token's name, --by)
    via: str | None = None  # ... through which channel: python, cli, http or page

    @classmethod
    def from_row(cls, row: RecordRow) -> Record:
        return cls(
            seq=row.seq,
            kind=row.kind,
            name=row.name,
            status=row.status,
            value=decode_any(row.value),
            error=decode_any(row.error),
            attempts=row.attempts,
            started_at=from_timestamp(row.started_at),  # type: ignore[arg-type]
            finished_at=from_timestamp(row.finished_at),
            question=row.question,
            schema=decode_any(row.schema.encode()) if row.schema else None,
            expires_at=from_timestamp(row.deadline),
            assignee=row.assignee,
            by=row.by,
            via=row.via,
        )


class Run(msgspec.Struct, frozen=True, kw_only=True):
    """One execution of a workflow, with its journal in `steps`."""

    run_id: str
    workflow: str
    status: str
    args: list[Any]
    kwargs: dict[str, Any]
    result: Any = None
    error: dict[str, Any] | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    wake_at: dt.datetime | None = None
    parent: str | None = None  # the run whose ctx.child started this one
    steps: list[Record] = []
    set_aside: list[Record] = []  # what retries set aside: the run's errors (kind 'run') and failed step records

    @classmethod
    def from_row(cls, row: RunRow, records: list[RecordRow], set_aside: list[RecordRow] = ()) -> Run:  # type: ignore[assignment]
        stored = decode_any(row.args)
        return cls(
            run_id=row.run_id,
            workflow=row.workflow,
            status=row.status,
            args=stored.get("args", []),
            kwargs=stored.get("kwargs", {}),
            result=decode_any(row.result),
            error=decode_any(row.error),
            created_at=from_timestamp(row.created_at),  # type: ignore[arg-type]
            updated_at=from_timestamp(row.updated_at),  # type: ignore[arg-type]
            wake_at=from_timestamp(row.wake_at),
            parent=row.parent,
            steps=[Record.from_row(r) for r in records],
            set_aside=[Record.from_row(r) for r in set_aside],
        )


class Prompt(msgspec.Struct, frozen=True, kw_only=True):
    """A question a run is waiting on, with the JSON schema its answer must match."""

    run_id: str
    key: str
    question: str
    schema: dict[str, Any]
    created_at: dt.datetime
    workflow: str
    seq: int
    expires_at: dt.datetime | None = None  # ctx.ask(timeout=...): when it stops taking answers
    assignee: str | None = None  # whom it is for: ctx.ask(assignee=...), or app.reassign

    @classmethod
    def from_row(cls, row: PromptRow) -> Prompt:
        return cls(
            run_id=row.run_id,
            key=row.key,
            question=row.question,
            schema=decode_any(row.schema.encode()),
            created_at=from_timestamp(row.created_at),  # type: ignore[arg-type]
            workflow=row.workflow,
            seq=row.seq,
            expires_at=from_timestamp(row.deadline),
            assignee=row.assignee,
        )


class LogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One answer or reassignment of a run's prompt, as recorded (``app.export``): never changed afterwards."""

    seq: int
    key: str
    action: str  # 'answered' or 'reassigned'
    value: Any = None  # the answer; for a reassignment, the new assignee
    by: str | None = None
    via: str
    at: dt.datetime

    @classmethod
    def from_row(cls, row: PromptLogRow) -> LogEntry:
        return cls(seq=row.seq, key=row.key, action=row.action, value=decode_any(row.value), by=row.by, via=row.via,
                   at=from_timestamp(row.at))  # type: ignore[arg-type]  # fmt: skip


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """What replaying one stored run against this App's code found (see App.check).

    `verdict` is ``"ok"``, ``"blocked"`` (at `seq`, with the recorded and the
    new call in `detail`) or ``"unknown-workflow"``; `patches` maps each
    ``ctx.patched`` id the replay met to whether the run takes its new path.
    """

    run_id: str
    workflow: str
    verdict: str
    seq: int | None = None
    detail: str = ""
    patches: dict[str, bool] = {}


# Records that change after they are written (answered, received, ended, done), so a watcher sees them again.
CHANGES_IN_PLACE = frozenset({"ask", "sleep", "receive", "child"})


class Cursor(msgspec.Struct, frozen=True):
    """Where a watcher of a run's journal is: every record before `seq` seen, and
    every later change of a prompt or sleep up to (`changed_at`, `changed_seq`)."""

    seq: int = 0
    changed_at: float = 0.0
    changed_seq: int = -1

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        try:
            seq, changed_at, changed_seq = text.split("_")
            return cls(int(seq), float(changed_at), int(changed_seq))
        except ValueError:
            raise ValueError(f"{text!r} is not a journal cursor (expected what watch() yielded).") from None

    def __str__(self) -> str:
        return f"{self.seq}_{self.changed_at!r}_{self.changed_seq}"

    def changed(self, row: RecordRow) -> Cursor:
        """After a record before `seq` that changed in place."""
        return Cursor(self.seq, row.finished_at, row.seq)  # type: ignore[arg-type]

    def passed(self, row: RecordRow | None) -> Cursor:
        """After the record at `seq` (None: a gap left by a call that never finished)."""
        if row is not None and row.kind in CHANGES_IN_PLACE and row.finished_at is not None:
            if (row.finished_at, row.seq) > (self.changed_at, self.changed_seq):
                return Cursor(self.seq + 1, row.finished_at, row.seq)
        return Cursor(self.seq + 1, self.changed_at, self.changed_seq)
