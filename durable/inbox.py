"""What reaches a run from outside while it waits: answers to its prompts, and messages (app.answer, app.send).

Each is checked before anything is written (the prompt's schema, and its
Python type where this process asked it; a value JSON can hold), then written
by the store in one commit that also makes the run ready, and claims it for
this process when it can execute it (see Engine.deliver).
"""

from __future__ import annotations

import logging
from typing import Any

from .codec import decode_any, encode, schema_violation
from .engine import Engine
from .errors import (
    EncodingError, InvalidAnswer, PromptAlreadyAnswered, PromptExpired, PromptNotFound, RunAlreadyFinished, RunNotFound,
)  # fmt: skip
from .store.base import FINAL, Answered
from .waits import ASKED

__all__ = ["MAX_DEPTH", "answer", "nesting", "send"]

log = logging.getLogger("durable")

# Deeper answers and messages are refused before anything is recorded: no prompt type a person
# fills in nests this far, and the validators and encoders downstream have limits of their own.
MAX_DEPTH = 64


async def answer(engine: Engine, run_id: str, key: str, value: Any) -> None:
    store, clock = engine.store, engine.clock
    found = await store.prompt(run_id, key)
    if found is None:
        raise PromptNotFound(run_id, key)
    status, schema, workflow_name, _ = found
    if status == "answered":
        raise PromptAlreadyAnswered(run_id, key)
    if status == "expired":
        raise PromptExpired(run_id, key)
    if status != "waiting":
        raise PromptNotFound(run_id, key)
    run = await engine.load(run_id)
    if run.status in FINAL:  # it failed or timed out while its prompt waited: the prompt takes no answer
        raise RunAlreadyFinished(run_id, run.status, "answer")
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
        answered = await store.answer(run_id, key, blob, clock(), claimant, lease)
        if answered.before == "waiting":
            log.info("run %s ✎ prompt %s answered", run_id, key)  # before the run resumes, if it resumes here
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
