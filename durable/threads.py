"""The threads plain-function steps run in: each call handed to the thread that went idle last.

A plain (sync) step function runs in a worker thread so it never blocks the
event loop. The hand-off is most of what such a step costs: on a 2-core VM,
``asyncio.to_thread`` took about 104 µs per call, a ``ThreadPoolExecutor``
about 81 µs, and handing the call straight to one waiting thread about 62 µs
(what aiosqlite does for every statement). The standard executors wake their
threads in turn and wrap each call in two futures; here an idle thread waits
on a queue of its own, the most recently idle one gets the next call (its
cache is warm), and the result comes back in one ``call_soon_threadsafe``.
Threads are made as calls need them, up to ``max_threads`` (then calls wait
their turn), and end after a minute without work.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["run_in_thread"]

MAX_THREADS = 32
IDLE_SECONDS = 60.0

_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context, Callable[..., Any], tuple[Any, ...]]


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return  # the caller gave up; the call ran all the same
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class _Pool:
    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Call | None]] = []  # the inboxes of idle threads, last idle on top
        self._waiting: deque[_Call] = deque()  # calls for which no thread was free
        self._threads = 0

    def submit(self, call: _Call) -> None:
        with self._lock:
            if self._idle:
                self._idle.pop().put(call)
                return
            if self._threads >= self.max_threads:
                self._waiting.append(call)
                return
            self._threads += 1
        threading.Thread(target=self._work, args=(call,), name="durable-step", daemon=True).start()

    def _work(self, call: _Call | None) -> None:
        inbox: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        while call is not None:
            loop, fut, context, fn, args = call
            try:
                outcome = (True, context.run(fn, *args))
            except BaseException as exc:  # handed to the caller, whatever it is
                outcome = (False, exc)
            # Bookkeeping first, then the hand-back, then straight to sleep: the
            # woken event loop needs the GIL, and this thread lets go of it at once.
            with self._lock:
                call = self._waiting.popleft() if self._waiting else None
                if call is None:
                    self._idle.append(inbox)
            try:
                loop.call_soon_threadsafe(_resolve, fut, *outcome)
            except RuntimeError:
                pass  # the loop has closed: nobody waits any more
            del fut, outcome
            if call is not None:
                continue
            try:
                call = inbox.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # nobody handed it a call meanwhile: end this thread
                        self._idle.remove(inbox)
                        self._threads -= 1
                        return
                call = inbox.get()  # a call was handed over just as the wait ended


_pool = _Pool(MAX_THREADS)


def run_in_thread(
    fn: Callable[..., Any], *args: Any, loop: asyncio.AbstractEventLoop | None = None
) -> asyncio.Future[Any]:
    """Run ``fn(*args)`` in a worker thread, in a copy of the caller's context; await the result.

    `loop` is the running loop, when the caller has it at hand (on Python 3.11,
    looking it up costs a getpid() system call).
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    fut = loop.create_future()
    _pool.submit((loop, fut, contextvars.copy_context(), fn, args))
    return fut
