"""Context: what a workflow sees. Each call takes the next seq at the moment it is made."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from .codec import encode
from .errors import WorkflowNotFound
from .steps import STUBS, step_spec
from .waits import NO_DEFAULT
from .workflow import check_seconds

if TYPE_CHECKING:
    from .races import Branches
    from .replay import Execution

__all__ = ["Context"]

T = TypeVar("T")


class Context:
    """The handle a workflow uses for durable work; passed as its first argument.

    Every call is journaled under the next ``seq``, taken when the method is
    called (not when it is awaited), so ``asyncio.gather(ctx.step(a), ctx.step(b))``
    replays the same way every time. On replay the call is matched against its
    record at that moment too: a mismatch raises at the call, before anything
    after it starts.
    """

    __slots__ = ("_ex",)

    def __init__(self, execution: Execution) -> None:
        self._ex = execution

    @property
    def run_id(self) -> str:
        return self._ex.run_id

    @property
    def workflow(self) -> str:
        return self._ex.workflow.name

    def step(self, fn: Callable[..., Awaitable[T] | T], /, *args: Any, **kwargs: Any) -> Awaitable[T]:
        """Run `fn(*args, **kwargs)` once per run and record its result; on replay return the record.

        Args:
            fn: a sync or async function; `@durable.step` sets its name, retries and timeout.
        Returns:
            The result, decoded from its record by `fn`'s return annotation (live and on replay).
        Raises:
            The step's final error, rebuilt as its own type (or `StepFailed`);
            `EncodingError` if the result cannot be stored.

        Example:
            order = await ctx.step(load_order, order_id)
            a, b = await asyncio.gather(ctx.step(price, a_id), ctx.step(price, b_id))
        """
        ex = self._ex
        spec = step_spec(fn)
        if STUBS:  # durable.testing.stub: the stub's outcome is recorded instead of calling fn
            fn = STUBS.get(fn, fn)
        return ex.step(ex.take("step", spec.name), spec, fn, args, kwargs)

    def sleep(self, seconds: float | dt.timedelta) -> Awaitable[None]:
        """Wait durably: the wake-up time is recorded, so after a restart only the remainder is waited."""
        ex = self._ex
        return ex.sleep(ex.take("sleep", "sleep"), seconds)

    def ask(
        self,
        question: str,
        *,
        type: Any = str,
        key: str | None = None,
        timeout: float | dt.timedelta | None = None,
        default: Any = NO_DEFAULT,
        assignee: str | None = None,
    ) -> Awaitable[Any]:
        """Ask a person; wait (unloaded, holding no memory) until an answer is recorded.

        Args:
            question: the text shown to whoever answers.
            type: the answer's type; its JSON schema is recorded and answers are validated against it.
            key: how answerers name this prompt (default ``ask-<seq>``); unique within a run.
            timeout: seconds (or a timedelta) after which the prompt expires unanswered: it
                leaves the inbox, takes no answer, and the worker resumes the run.
            default: what an expired prompt returns; without one, it raises PromptExpired.
            assignee: whom it is for, a free-form name ("ada", "finance"): ``app.prompts(assignee=...)``
                and the page's "assigned to me" show it to them (anyone may still answer it).
        Returns:
            The answer, validated as `type` (or `default`, once expired).
        Raises:
            DuplicatePromptKey: another prompt of this run has the same key.
            PromptExpired: the timeout passed with no answer and no default was given.

        Example:
            ok = await ctx.ask(f"Approve order {order_id}?", type=bool, key="approve", timeout=86400, default=False)
        """
        if key is not None and (not isinstance(key, str) or not key):
            raise TypeError(f"ctx.ask(key=...) takes a non-empty string, not {key!r}.")
        if assignee is not None and (not isinstance(assignee, str) or not assignee):
            raise TypeError(f"ctx.ask(assignee=...) takes a name (a non-empty string), not {assignee!r}.")
        seconds = check_seconds("ctx.ask(timeout=...)", timeout)
        ex = self._ex
        return ex.ask(ex.take("ask", key), question, type, key, seconds, default, assignee)

    def patched(self, patch_id: str) -> bool:
        """Whether this run takes the new path of a code change named `patch_id`.

        True when the run reaches this point with the new code (a marker is
        recorded, so its replays say True too); False when the run had already
        gone past this point before the patch existed, so it replays the old
        path without a NondeterminismError. Old runs keep their seq numbers.

        Example:
            if ctx.patched("fraud-check"):
                await ctx.step(check_fraud, order)   # new runs only
            await ctx.step(charge, order)            # recorded runs replay as before
        """
        if not isinstance(patch_id, str) or not patch_id:
            raise TypeError(f"ctx.patched takes a non-empty string naming the patch, not {patch_id!r}.")
        return self._ex.patched(patch_id)

    def receive(
        self, topic: str, *, type: Any = Any, timeout: float | dt.timedelta | None = None, default: Any = NO_DEFAULT
    ) -> Awaitable[Any]:
        """The next message sent to this run on `topic` (``app.send``), validated as `type`; waits unloaded until one comes.

        Messages wait in the journal until received, and are received in send
        order, each once. The value is recorded with the receive, so replay returns it.

        Args:
            topic: the name senders use, e.g. ``"payment"``.
            type: what the message must be (validated by pydantic; InvalidMessage if it does not fit).
            timeout: seconds (or a timedelta) to wait at most; then `default`, or ReceiveTimedOut.
        Example:
            paid = await ctx.receive("payment", type=Payment, timeout=3600, default=None)
        """
        if not isinstance(topic, str) or not topic:
            raise TypeError(f"ctx.receive takes a topic (a non-empty string), not {topic!r}.")
        seconds = check_seconds("ctx.receive(timeout=...)", timeout)
        ex = self._ex
        return ex.receive(ex.take("receive", topic), topic, type, seconds, default)

    def child(self, wf: Any, /, *args: Any, run_id: str | None = None, **kwargs: Any) -> Awaitable[Any]:
        """Start a child run of workflow `wf` (a registered function, or a workflow's name) and wait for its result.

        The parent waits unloaded; any worker with the child's workflow executes
        the child. Its result comes back decoded by its return annotation, its
        error raised as its own type (RunCancelled if it was cancelled), also
        after either run crashed. The child's run_id is ``<parent run_id>.<seq>``
        unless given, so a replay finds the same child. Cancelling the parent
        cancels its unfinished children. A child of a workflow with a queue
        (``@app.workflow(queue=...)``) goes on that queue, within its limits.

        Example:
            shipment = await ctx.child(ship, order_id)
            a, b = await asyncio.gather(ctx.child(price, "a"), ctx.child(price, "b"))
        """
        ex = self._ex
        workflows = ex.engine.workflows
        found = workflows.get(wf) if isinstance(wf, str) else next((w for w in workflows.values() if w.fn is wf), None)
        name = wf if isinstance(wf, str) else getattr(found, "name", None)
        if not isinstance(name, str) or not name:
            raise WorkflowNotFound(getattr(wf, "__name__", repr(wf)), list(workflows))
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise TypeError(f"ctx.child(run_id=...) takes a non-empty string, not {run_id!r}.")
        if found is not None:
            blob = found.encode_args(args, kwargs)[0]
        else:  # a workflow this process does not have: its worker checks the arguments
            blob = encode({"args": list(args), "kwargs": kwargs}, f"the arguments of child workflow {name!r}")
        seq = ex.take("child", name)
        timeout, queue = (None, None) if found is None else (found.timeout, found.queue)
        return ex.child(seq, name, run_id or f"{ex.run_id}.{seq}", blob, timeout, queue)

    def publish(self, topic: str, value: Any) -> Awaitable[None]:
        """Append `value` to this run's stream `topic` (progress for people and programs); journaled, so once.

        Readers follow it with ``app.stream(run_id, topic)``, the run's event
        stream (``GET /runs/{id}/events``, event ``published``) and the web page.

        Example:
            await ctx.publish("progress", {"done": i, "of": len(rows)})
        """
        if not isinstance(topic, str) or not topic:
            raise TypeError(f"ctx.publish takes a topic (a non-empty string), not {topic!r}.")
        ex = self._ex
        return ex.publish(ex.take("publish", topic), topic, value)

    def wait(
        self, aws: Iterable[Awaitable[Any]], *, return_when: str = asyncio.FIRST_COMPLETED, timeout: float | dt.timedelta | None = None
    ) -> Awaitable[tuple[Branches, Branches]]:
        """Like ``asyncio.wait``, over ctx calls: run them together and return ``(done, pending)`` once `return_when` holds.

        Which calls finished (and whether the timeout fired) is recorded, so a
        replay returns the same sets even if the timings differ. The calls in
        `pending` are withdrawn: a waiting one is closed ('withdrawn': a prompt
        leaves the inbox, a child run is cancelled, a message goes to the next
        receive) and a step still running is cancelled, its result never recorded.
        Elements of both sets have ``.result()``, and compare equal to the call passed.

        Args:
            aws: ctx calls not yet awaited: ``ctx.step(...)``, ``ctx.sleep(...)``,
                ``ctx.ask(...)``, ``ctx.receive(...)``, ``ctx.child(...)``.
            return_when: ``asyncio.FIRST_COMPLETED`` (default), ``FIRST_EXCEPTION`` or ``ALL_COMPLETED``.
            timeout: seconds (or a timedelta), kept durably: the race ends then with what has finished.

        Example:
            paid = ctx.receive("payment", type=Payment)
            done, pending = await ctx.wait([paid, ctx.sleep(3600)])
            if paid in done:
                payment = done[paid].result()
        """
        ex = self._ex
        branches = ex.branches(aws, "ctx.wait")  # first: whatever is wrong next, the calls given are closed
        if return_when not in (asyncio.FIRST_COMPLETED, asyncio.FIRST_EXCEPTION, asyncio.ALL_COMPLETED):
            raise ValueError(f"ctx.wait(return_when=...) takes asyncio.FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED, not {return_when!r}.")
        seconds = check_seconds("ctx.wait(timeout=...)", timeout)
        return ex.wait(ex.take("wait", return_when), branches, return_when, seconds)

    def as_completed(self, aws: Iterable[Awaitable[Any]], *, timeout: float | dt.timedelta | None = None) -> Iterator[Awaitable[Any]]:
        """Like ``asyncio.as_completed``, over ctx calls: awaitables of their results in the order they finish, recorded.

        The calls not yet taken keep running while the workflow handles each
        result; those left when the run ends end with it. With `timeout`, a
        ``next`` after it raises TimeoutError.

        Example:
            for next_quote in ctx.as_completed([ctx.child(quote, s) for s in suppliers], timeout=600):
                offer = await next_quote
        """
        ex = self._ex
        branches = ex.branches(aws, "ctx.as_completed")
        seconds = check_seconds("ctx.as_completed(timeout=...)", timeout)
        return ex.as_completed(ex.take("wait", "as_completed"), branches, seconds)

    @property
    def is_replaying(self) -> bool:
        """True while the run is still returning recorded results (before the first call it executes anew)."""
        return self._ex.next_seq < self._ex.replay_end

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger for the workflow (``durable.workflow.<name>``) that stays quiet while the run replays.

        Example:
            ctx.logger.info("charging %s", order_id)   # logged once, not again at every resume
        """
        return ReplayQuietLogger(self)

    def now(self) -> dt.datetime:
        """The current UTC time, recorded on first execution and identical on replay."""
        ex = self._ex
        return ex.now(ex.take("now", "now"))

    def __repr__(self) -> str:
        return f"<Context run_id={self.run_id!r} workflow={self.workflow!r}>"


class ReplayQuietLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``ctx.logger``: logs what the workflow does now, not again what it replays."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(logging.getLogger(f"durable.workflow.{ctx.workflow}"), {"run_id": ctx.run_id})
        self._ctx = ctx

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        return not self._ctx.is_replaying and self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"run {self._ctx.run_id}: {msg}", kwargs
