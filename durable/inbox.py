"""What reaches a run from outside while it waits: answers to its prompts, and messages (app.answer, app.send).

Each is checked before anything is written (the prompt's schema, and its
Python type where this process asked it; a value JSON can hold), then written
by the store in one commit that also makes the run ready, and claims it for
this process when it can execute it (see Engine.deliver).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec

from .codec import decode_any, encode, schema_violation
from .engine import Engine
from .errors import (
    EncodingError, InvalidAnswer, PromptAlreadyAnswered, PromptExpired, PromptNotFound, RunAlreadyFinished, RunNotFound,
)  # fmt: skip
from .model import LogEntry, Prompt, Run
from .store.base import FINAL, Answered
from .store.prompts import CHANNELS
from .waits import ASKED

__all__ = ["MAX_DEPTH", "PromptCalls", "answer", "nesting", "reassign", "send"]

log = logging.getLogger("durable")

# Deeper answers and messages are refused before anything is recorded: no prompt type a person
# fills in nests this far, and the validators and encoders downstream have limits of their own.
MAX_DEPTH = 64


def check_by(by: str | None, via: str) -> None:
    if by is not None and (not isinstance(by, str) or not by):
        raise TypeError(f"by= names who answers (a non-empty string), or is None; not {by!r}.")
    if via not in CHANNELS:
        raise ValueError(f"via= is one of {', '.join(CHANNELS)}; not {via!r}.")


async def answer(engine: Engine, run_id: str, key: str, value: Any, by: str | None = None, via: str = "python") -> None:
    store, clock = engine.store, engine.clock
    check_by(by, via)
    found = await store.prompt(run_id, key)
    if found is None:
        raise PromptNotFound(run_id, key)
    status, schema, workflow_name, _ = found
    if status == "answered":
        raise PromptAlreadyAnswered(run_id, key)
    if status == "expired":
        raise PromptExpired(run_id, key)
    run = await engine.load(run_id)
    if run.status in FINAL:  # it failed, timed out or was cancelled while its prompt waited: no answer now
        again = await store.prompt(run_id, key)  # or another answer won meanwhile and the run went on to its end
        if again is not None and again[0] == "answered":
            raise PromptAlreadyAnswered(run_id, key)
        raise RunAlreadyFinished(run_id, run.status, "answer")
    if status != "waiting":
        raise PromptNotFound(run_id, key)
    if (depth := nesting(value, MAX_DEPTH)) > MAX_DEPTH:
        raise InvalidAnswer(run_id, key, f"it is nested {depth} levels deep or more; answers may nest {MAX_DEPTH}")
    try:
        blob = encode(value, f"the answer to prompt {key!r}")
    except EncodingError as exc:
        raise InvalidAnswer(run_id, key, exc.reason) from None
    problem = schema_violation(schema, decode_any(blob)) or ASKED.problem(workflow_name, key, schema, blob)
    if problem is not None:
        raise InvalidAnswer(run_id, key, problem)
    async def write(claimant: str | None, lease: float) -> Answered:
        answered = await store.answer(run_id, key, blob, clock(), claimant, lease, by, via)
        if answered.before == "waiting":  # logged before the run resumes, if it resumes here
            how = "" if via == "python" else f" ({via})"
            log.info("run %s ✎ prompt %s answered%s%s", run_id, key, f" by {by}" if by else "", how)
        return answered

    answered = await engine.deliver(run_id, workflow_name, write, "prompt answered")
    before = None if answered is None else answered.before
    if before == "answered":
        raise PromptAlreadyAnswered(run_id, key)
    if before == "expired":
        raise PromptExpired(run_id, key)
    if before != "waiting":
        raise PromptNotFound(run_id, key)
    engine.notify()


async def send(engine: Engine, run_id: str, topic: str, value: Any) -> None:
    store, clock = engine.store, engine.clock
    if not isinstance(topic, str) or not topic:
        raise TypeError(f"send() takes a topic (a non-empty string), not {topic!r}.")
    what = f"the message on {topic!r}"
    if (depth := nesting(value, MAX_DEPTH)) > MAX_DEPTH:
        raise EncodingError(what, "JSON", f"it is nested {depth} levels deep or more; messages may nest {MAX_DEPTH}")
    blob = encode(value, what)
    row = await engine.load(run_id)  # RunNotFound
    async def write(claimant: str | None, lease: float) -> Answered | None:
        sent = await store.send(run_id, topic, blob, clock(), claimant, lease)
        if sent is not None and sent.before not in FINAL:
            log.info("run %s ✉ message on %s %s", run_id, topic, "delivered" if sent.ready else "sent")
        return sent

    sent = await engine.deliver(run_id, row.workflow, write, f"message on {topic!r}")
    if sent is None:
        raise RunNotFound(run_id)
    if sent.before in FINAL:
        raise RunAlreadyFinished(run_id, sent.before, "send")
    engine.notify()


async def reassign(
    engine: Engine, run_id: str, key: str, assignee: str | None, by: str | None = None, via: str = "python"
) -> None:
    check_by(by, via)
    if assignee is not None and (not isinstance(assignee, str) or not assignee):
        raise TypeError(f"reassign() takes the new assignee (a non-empty string), or None for nobody; not {assignee!r}.")
    run = await engine.load(run_id)
    if run.status in FINAL:
        raise RunAlreadyFinished(run_id, run.status, "reassign")
    before = await engine.store.reassign(run_id, key, assignee, engine.clock(), by, via)
    if before == "answered":
        raise PromptAlreadyAnswered(run_id, key)
    if before != "waiting":
        raise PromptNotFound(run_id, key)
    log.info("run %s ✎ prompt %s assigned to %s%s", run_id, key, assignee or "nobody", f" by {by}" if by else "")
    engine.notify()


class PromptCalls:
    """The App's calls on prompts and messages (App inherits them; they go through its engine)."""

    _engine_now: Callable[[], Engine]
    _clock: Callable[[], float]

    async def prompts(self, run_id: str | None = None, *, assignee: str | None = None) -> list[Prompt]:
        """Pending prompts, oldest first, of all runs or of one; with `assignee`, only those assigned to that name."""
        store = self._engine_now().store
        now = self._clock()  # a prompt past its deadline takes no answer, even before the worker closes it
        rows = await store.pending_prompts(run_id, assignee)
        return [Prompt.from_row(row) for row in rows if not row.deadline or row.deadline > now]

    async def send(self, run_id: str, topic: str, value: Any) -> None:
        """Deliver a message to a run: the run's next ``ctx.receive(topic)`` gets it (at once, if one waits).

        Messages are kept until received, and received in send order, each once.
        Raises RunNotFound, RunAlreadyFinished (an ended run receives nothing),
        or EncodingError (a value JSON cannot hold); nothing is written then.
        """
        await send(self._engine_now(), run_id, topic, value)

    async def answer(self, run_id: str, key: str, value: Any, *, by: str | None = None, via: str = "python") -> None:
        """Record an answer once, validated against the prompt's schema (and type, when asked here); the run moves on.

        `by` (who answers) and `via` (python, cli, http or page) are recorded with it, and when, for good
        (``app.export``). Raises PromptNotFound, PromptAlreadyAnswered, PromptExpired, RunAlreadyFinished (the run
        ended while its prompt waited) or InvalidAnswer; nothing is written then.
        """
        await answer(self._engine_now(), run_id, key, value, by, via)

    async def reassign(
        self, run_id: str, key: str, assignee: str | None, *, by: str | None = None, via: str = "python"
    ) -> None:
        """Give a waiting prompt another assignee (None: nobody); recorded with who did it, like an answer."""
        await reassign(self._engine_now(), run_id, key, assignee, by, via)

    async def export(self, run_id: str) -> dict[str, Any]:
        """The run, every record, and every answer and reassignment with who, how and when, as JSON types."""
        engine = self._engine_now()
        row = await engine.load(run_id)
        store = engine.store
        run = Run.from_row(row, await store.load_records(run_id), await store.load_set_aside(run_id))
        entries = [LogEntry.from_row(entry) for entry in await store.prompt_log(run_id)]
        return {"run": msgspec.to_builtins(run), "prompt_log": msgspec.to_builtins(entries)}


def nesting(value: Any, limit: int) -> int:
    """How deeply lists and dicts nest in `value` (counting stops just past `limit`)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, dict)):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest
