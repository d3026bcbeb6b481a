"""The prompt log: who answered or reassigned a prompt, through which channel, and when, on either store.

Every answer and every reassignment is one row of ``prompt_log``, written in
the commit that records it; rows are only ever added (an UPDATE is refused by
a trigger), and they go only with their run (prune). The answered record
itself carries its answer's ``by`` and ``via`` too, for whoever reads the
journal; the log keeps every answer, also one given before the workflow
reopened its prompt (an answer its type no longer reads).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

__all__ = ["ANSWER_COPIED", "CHANNELS", "PromptLogRow", "PromptStore"]

# How an answer came: app.answer from Python, the `durable` command, the HTTP API, the web page.
CHANNELS = ("python", "cli", "http", "page")

# fork(): the columns assignee, answered_by, answered_via of a copied record (see ASKED_AGAIN: a prompt that
# waits anew in the fork has no answer yet).
ANSWER_COPIED = (
    "assignee, CASE WHEN kind = 'ask' AND status IN ('waiting', 'cancelled') THEN NULL ELSE answered_by END,"
    " CASE WHEN kind = 'ask' AND status IN ('waiting', 'cancelled') THEN NULL ELSE answered_via END"
)

# The log's read, {table}: the schema-qualified table; {run}: the placeholder of the run_id.
SELECT_LOG = "SELECT seq, key, action, value, who, via, at FROM {table} WHERE run_id = {run} ORDER BY id"


class PromptLogRow(NamedTuple):
    seq: int
    key: str
    action: str  # 'answered' (value: the answer) or 'reassigned' (value: the new assignee, JSON)
    value: bytes | None
    by: str | None  # the answering person or service (an HTTP token's name, --by, by=)
    via: str  # one of CHANNELS
    at: float


class PromptStore(Protocol):
    async def reassign(
        self, run_id: str, key: str, assignee: str | None, now: float, by: str | None, via: str
    ) -> str | None:
        """Give a waiting prompt another assignee (None: nobody), logged with who did it.

        Returns the prompt's status before ('waiting' when reassigned), None if the run has no such prompt.
        """

    async def prompt_log(self, run_id: str) -> list[PromptLogRow]:
        """The run's answers and reassignments, in the order they were recorded."""
