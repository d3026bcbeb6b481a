"""The ctx calls that wait for the world: ask (an answer), receive (a message), child (another run), with deadlines.

Both record a 'waiting' record and unload the run (:class:`~durable.calls.Suspend`)
until an outside write (an answer, a sent message) fills the record in and
makes the run ready; replay then returns the recorded value, validated as the
call's type. With a timeout the record keeps its deadline: the run parks with
it as its wake-up time, and a replay that reaches the record past its deadline
closes it ('expired') and returns the default, or raises.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import pydantic

from .calls import BRANCH, UNREADABLE, Calls
from .steps import from_step
from .codec import decode_any, encode, error_from_json
from .errors import (
    ChildOfAnother, DuplicatePromptKey, InvalidMessage, PromptExpired, ReceiveTimedOut, RunCancelled, RunIdInUse,
)  # fmt: skip
from .store.base import RecordRow

__all__ = ["ASKED", "NO_DEFAULT", "AskedTypes", "Waits", "answer_schema", "type_adapter"]

log = logging.getLogger("durable")


@functools.lru_cache(maxsize=512)
def type_adapter(tp: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(tp)


@functools.lru_cache(maxsize=512)
def answer_schema(tp: Any) -> str:
    """The JSON schema of an answer type, as stored with its prompt (pydantic rebuilds it at every call)."""
    return encode(type_adapter(tp).json_schema(), f"the JSON schema of {tp!r}").decode()


# ctx.ask(default=...) not given: an expired prompt raises PromptExpired.
NO_DEFAULT: Any = type("NoDefault", (), {"__repr__": lambda self: "<no default>"})()

class AskedTypes:
    """The Python types of the prompts asked in this process, by (workflow, key, stored schema).

    An answer given in a process that asked the prompt (the worker or server
    that runs the workflow) is validated as that type before it is recorded: a
    JSON schema cannot say everything a type checks (a validator, a pattern
    pydantic does not export). Bounded: prompt keys made from data do not grow it.
    """

    LIMIT = 1024

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], pydantic.TypeAdapter[Any]] = {}

    def remember(self, workflow: str, key: str, schema: str, adapter: pydantic.TypeAdapter[Any]) -> None:
        if len(self._types) >= self.LIMIT:
            del self._types[next(iter(self._types))]
        self._types[(workflow, key, schema)] = adapter

    def problem(self, workflow: str, key: str, schema: str, blob: bytes) -> str | None:
        """Why `blob` does not fit the prompt's Python type (None when it does, or the type is not known here)."""
        adapter = self._types.get((workflow, key, schema))
        if adapter is None:
            return None
        try:
            adapter.validate_json(blob)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = "".join(f"[{p!r}]" for p in first["loc"])
            return f"{first['msg']}{f' at answer{where}' if where else ''}"
        return None


ASKED = AskedTypes()



class Waits(Calls):
    """ask and receive: the part of an Execution that waits for people and messages."""

    __slots__ = ()

    async def ask(
        self, seq: int, question: str, tp: Any, key: str | None, timeout: float | None = None, default: Any = None,
        assignee: str | None = None,
    ) -> Any:
        self._check("ask")
        if key is None:
            key = f"ask-{seq}"
        if not isinstance(question, str):
            raise TypeError(f"ctx.ask takes the question as a string, not {question!r}.")
        if self.keys is None:
            self.keys = set()
        elif key in self.keys:
            raise DuplicatePromptKey(self.run_id, key)
        self.keys.add(key)
        adapter = type_adapter(tp)
        record = self.recorded.get(seq)
        if record is not None:
            if record.status == "answered":
                try:
                    return adapter.validate_json(record.value)  # type: ignore[arg-type]
                except pydantic.ValidationError as exc:
                    await self._reopen(key, exc)
            elif record.status == "expired":
                return self._expired(key, default)
            elif record.status == "waiting" and await self._past_deadline(seq):
                return self._expired(key, default)
        else:
            schema = answer_schema(tp)
            ASKED.remember(self.workflow.name, key, schema, adapter)
            now = self.clock()
            deadline = None if timeout is None else now + timeout
            await self._fenced(
                self.store.append, self.fence, RecordRow(
                    seq, "ask", key, "waiting", None, None, 1, now, None, question, schema, deadline, assignee
                )
            )
            self.known += 1
            if deadline is not None:
                self._wake_for(deadline)
        await self._suspend(seq)

    async def _past_deadline(self, seq: int) -> bool:
        """Whether the waiting record at `seq` expired now (closed: 'expired'); else its deadline, if any, wakes the run.

        False also when an answer or a message came at the last moment (or the
        run is no longer ours): the run is unloaded, and replayed to read it.
        """
        deadline = await self._write(self.store.deadline(self.run_id, seq))
        if deadline is None:
            return False
        if deadline > self.clock():
            self._wake_for(deadline)
            return False
        return bool(await self._write(self.store.expire(self.fence, seq, self.clock())))

    def _wake_for(self, deadline: float) -> None:
        """The run unloads waiting for a prompt with this deadline: the worker wakes it then (or its race branch does)."""
        holder = BRANCH.get() or self
        holder.deadline = deadline if holder.deadline is None else min(holder.deadline, deadline)

    def _expired(self, key: str, default: Any) -> Any:
        if default is NO_DEFAULT:
            raise PromptExpired(self.run_id, key)
        return default

    async def receive(self, seq: int, topic: str, tp: Any, timeout: float | None, default: Any) -> Any:
        self._check("receive")
        adapter = type_adapter(tp)
        record = self.recorded.get(seq)
        if record is None:
            now = self.clock()
            deadline = None if timeout is None else now + timeout
            _, value = await self._fenced(self.store.receive, self.fence, seq, topic, now, deadline)
            self.known += 1
            if value is not None:
                if self.replay_each:
                    self._replay_from_start()
                return self._message(topic, adapter, value)
            if deadline is not None:
                self._wake_for(deadline)
        elif record.status == "received":
            return self._message(topic, adapter, record.value)  # type: ignore[arg-type]
        elif record.status == "expired":
            return self._timed_out(topic, timeout, default)
        elif record.status == "waiting" and await self._past_deadline(seq):
            return self._timed_out(topic, timeout, default)
        await self._suspend(seq)

    async def child(
        self, seq: int, workflow: str, child_id: str, blob: bytes, timeout: float | None, queue: str | None = None
    ) -> Any:
        """Start a child run (any worker with its workflow executes it) and wait, unloaded, for its outcome."""
        self._check("child")
        record = self.recorded.get(seq)
        if record is None:
            now = self.clock()
            deadline = None if timeout is None else now + timeout
            _, status, value, error = await self._fenced(
                self.store.start_child, self.fence, seq, child_id, workflow, blob, now, deadline, queue
            )
            if status == "taken":
                raise RunIdInUse(child_id, value.decode(), workflow)  # type: ignore[union-attr]
            if status == "parented":
                raise ChildOfAnother(child_id, value.decode())  # type: ignore[union-attr]
            self.known += 1
            self.engine.kick()  # a worker here with the workflow takes the child at once
            if self.replay_each and status != "waiting":
                self._replay_from_start()
        else:
            status, value, error = record.status, record.value, record.error
        if status == "completed":
            known = self.engine.workflows.get(workflow)
            label = f"the result of child run {child_id!r}"
            try:
                return decode_any(value) if known is None else known.result_codec.decode(value, label)  # type: ignore[arg-type]
            except UNREADABLE as exc:
                self._unreadable(seq, record, exc)  # type: ignore[arg-type]
        if status == "failed":  # the child's error, as its own type (a parent's retry sets it aside, as a step's)
            raise from_step(error_from_json(error, workflow), seq)  # type: ignore[arg-type]
        if status == "cancelled":
            raise RunCancelled(child_id)
        await self._suspend(seq)

    def _message(self, topic: str, adapter: pydantic.TypeAdapter[Any], blob: bytes) -> Any:
        try:
            return adapter.validate_json(blob)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = "".join(f"[{p!r}]" for p in first["loc"])
            raise InvalidMessage(self.run_id, topic, f"{first['msg']}{f' at message{where}' if where else ''}") from None

    def _timed_out(self, topic: str, timeout: float | None, default: Any) -> Any:
        if default is NO_DEFAULT:
            raise ReceiveTimedOut(self.run_id, topic, timeout)
        return default

    async def _reopen(self, key: str, exc: pydantic.ValidationError) -> None:
        # The answer matched the stored JSON schema but not the Python type (a
        # constraint JSON schema cannot express): put the prompt back to waiting.
        log.warning("run %s ✎ answer to %r does not fit its type; asking again: %s", self.run_id, key, exc)
        if not await self._write(self.store.reopen_prompt(self.fence, key, self.clock())):
            self._lost()
