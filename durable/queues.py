"""Queues: named limits on how many runs execute at once, per key and per process, and how fast they start.

A :class:`Queue` is registered on an App (``app.add_queue``); a run is put on
it by ``submit(..., queue=...)`` or by its workflow's default
(``@app.workflow(queue=...)``). The limits hold across every process sharing
the store: they are counted inside each claim's transaction (see
``durable/store/queues.py``). Only processes that registered a queue claim its
runs, so every worker of a queue must register it, with the same limits.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from .errors import DefinitionError, RunIdInUse, WorkflowNotFound
from .codec import encode
from .store.base import Placement
from .store.queues import Limits
from .workflow import check_seconds

if TYPE_CHECKING:
    from .app import App, RunHandle

__all__ = ["Queue", "submit"]

log = logging.getLogger("durable")


def _count(queue: str, what: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DefinitionError(f"Queue {queue!r}: {what} takes a whole number >= 1 (or None, no limit), not {value!r}.")
    return value


class Queue:
    """A named queue of runs and its limits (None: no limit).

    Args:
        name: what ``submit(queue=...)`` and ``@app.workflow(queue=...)`` call it.
        concurrency: at most this many of its runs execute at once, across all processes.
        worker_concurrency: at most this many in any one process.
        key_concurrency: at most this many with the same ``submit(key=...)`` (one: runs of a key in order).
        rate: ``(n, seconds)``: at most n runs start in any window of that many seconds.

    Runs that wait (a prompt, a sleep, a message, a child run) execute nothing
    and hold no place: they count again once resumed.

    Example:
        app.add_queue(durable.Queue("emails", concurrency=10, rate=(100, 60)))
    """

    __slots__ = ("name", "concurrency", "worker_concurrency", "key_concurrency", "rate")

    def __init__(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        worker_concurrency: int | None = None,
        key_concurrency: int | None = None,
        rate: tuple[int, float] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise DefinitionError(f"durable.Queue takes a name (a non-empty string), not {name!r}.")
        self.name = name
        self.concurrency = _count(name, "concurrency", concurrency)
        self.worker_concurrency = _count(name, "worker_concurrency", worker_concurrency)
        self.key_concurrency = _count(name, "key_concurrency", key_concurrency)
        if rate is not None:
            ok = isinstance(rate, tuple) and len(rate) == 2 and isinstance(rate[1], (int, float)) and rate[1] > 0
            if not ok or _count(name, "rate's n", rate[0]) is None:
                raise DefinitionError(f"Queue {name!r}: rate takes (n, seconds), n >= 1 and seconds > 0, not {rate!r}.")
            rate = (rate[0], float(rate[1]))
        self.rate = rate

    @property
    def limits(self) -> Limits:
        return Limits(self.concurrency, self.worker_concurrency, self.key_concurrency, self.rate)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__[1:] if getattr(self, k) is not None)
        return f"Queue({self.name!r}{', ' if shown else ''}{shown})"


async def submit(
    app: App, wf: Any, args: tuple[Any, ...], kwargs: dict[str, Any], run_id: str | None, timeout: float | None,
    queue: str | None, key: str | None, delay: float | dt.timedelta | None, priority: int,
    debounce: float | dt.timedelta | None = None,
) -> RunHandle:
    """App.submit: record a run as 'pending', on its queue, for any worker that has its workflow."""
    from .app import RunHandle, _check_run_id

    engine = app._engine_now()
    workflow = app._workflows.get(wf) if isinstance(wf, str) else app._resolve(wf)
    if workflow is not None:
        name, blob = workflow.name, workflow.encode_args(args, kwargs)[0]
        queue = workflow.queue if queue is None else queue
    elif isinstance(wf, str) and wf:
        name, blob = wf, encode({"args": list(args), "kwargs": kwargs}, f"the arguments of workflow {wf!r}")
    else:
        raise WorkflowNotFound(repr(wf), list(app._workflows))
    for what, value in (("queue", queue), ("key", key)):
        if value is not None and (not isinstance(value, str) or not value):
            raise TypeError(f"submit({what}=...) takes a non-empty string, not {value!r}.")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"submit(priority=...) takes a whole number (higher starts sooner), not {priority!r}.")
    seconds, quiet = check_seconds("submit(delay=...)", delay), check_seconds("submit(debounce=...)", debounce)
    if quiet is not None and (key is None or run_id is not None):
        raise TypeError(
            "submit(debounce=...) collapses the submits of one key into one run: give it a key=..., and no run_id "
            "(the run is the key's pending one, or a new one)."
        )
    now = app._clock()
    placement = None
    if queue is not None or key is not None or seconds or priority:
        start = now + (seconds or 0.0) + (quiet or 0.0)
        placement = Placement(queue, key, priority, start if start > now else None, quiet)
    run_id = _check_run_id(run_id)
    existing = await app._store.create_run(
        run_id, name, blob, None, app.lease_seconds, now, app._deadline(workflow, timeout), placement
    )
    if existing is not None and existing.workflow != name:
        raise RunIdInUse(run_id, existing.workflow, name)
    if existing is not None and quiet is not None:
        return RunHandle(app, existing.run_id, created=False)  # the key's pending run: it took these arguments
    if existing is not None and existing.args != blob:
        log.warning(
            "run %s exists already, with other arguments (%s); it is left as it is and these (%s) are not used. "
            "Submit under another run_id to run with them.", run_id, existing.args.decode(), blob.decode(),
        )  # fmt: skip
    if existing is None and name in app._workflows:
        engine.kick()
    return RunHandle(app, run_id, created=existing is None)
