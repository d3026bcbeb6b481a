"""The threads plain-function steps run in: each call handed to the thread that went idle last.

A plain (sync) step function runs in a worker thread so it never blocks the
event loop. The hand-off is most of what such a step costs: on a 2-core VM,
``asyncio.to_thread`` took about 104 µs per call, a ``ThreadPoolExecutor``
about 81 µs, and handing the call straight to one waiting thread about 62 µs
(what aiosqlite does for every statement). The standard executors wake their
threads in turn and wrap each call in two futures; here an idle thread waits
on a queue of its own, the most recently idle one gets the next call (its
cache is warm). Threads are made as calls need them, up to ``max_threads``
(then calls wait their turn), and end after a minute without work.

Results go back to the event loop through a queue and a socket of their own
that the loop watches (``add_reader``), not ``call_soon_threadsafe``: that
builds a ``Handle`` in Python and checks the loop for every call, about a
quarter of the Python a thread runs per call. The loop drains the queue when
the socket wakes it, and resolves each result's future.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import queue
import socket
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["run_in_thread"]

MAX_THREADS = 32
IDLE_SECONDS = 60.0

_Call = tuple["_Results", "asyncio.Future[Any]", contextvars.Context, Callable[..., Any], tuple[Any, ...]]


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return  # the caller gave up; the call ran all the same
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class _Results:
    """Where worker threads put results for one event loop: a queue, and a socket the loop reads to drain it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: deque[tuple[asyncio.Future[Any], bool, Any]] = deque()
        self._read, self._write = socket.socketpair()
        for end in (self._read, self._write):
            end.setblocking(False)
        try:
            loop.add_reader(self._read.fileno(), self._drain)
        except NotImplementedError:  # a loop without add_reader (Windows' proactor): its threadsafe call
            self.put = functools.partial(_call_soon, weakref.ref(loop))  # type: ignore[method-assign]
        weakref.finalize(loop, _close, self._read, self._write)

    def put(self, fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
        """From any thread: resolve `fut` on its loop."""
        self.done.append((fut, ok, value))
        try:
            self._write.send(b"\0")
        except OSError:
            pass  # the socket is full (the loop wakes all the same), or closed with its loop

    def _drain(self) -> None:
        try:
            self._read.recv(4096)  # what is left past 4 KiB wakes the loop again, to find nothing new
        except OSError:
            pass  # nothing to read: drained already
        done = self.done
        while done:
            _resolve(*done.popleft())


def _call_soon(loop: weakref.ref[asyncio.AbstractEventLoop], fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    running = loop()
    try:
        if running is not None:
            running.call_soon_threadsafe(_resolve, fut, ok, value)
    except RuntimeError:
        pass  # the loop has closed: nobody waits any more


def _close(*ends: socket.socket) -> None:
    for end in ends:
        end.close()


_results: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Results] = weakref.WeakKeyDictionary()
_last: tuple[Any, Any] = (None, None)  # the loop of the latest call and its _Results (one lookup fewer per call)


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
            results, fut, context, fn, args = call
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
            results.put(fut, *outcome)
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


def _forget_the_parent() -> None:
    # A forked child has none of its parent's threads, nor its event loops: start over.
    global _pool, _last
    _pool = _Pool(_pool.max_threads)
    _results.clear()
    _last = (None, None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_parent)


def run_in_thread(
    fn: Callable[..., Any], *args: Any, loop: asyncio.AbstractEventLoop | None = None
) -> asyncio.Future[Any]:
    """Run ``fn(*args)`` in a worker thread, in a copy of the caller's context; await the result.

    `loop` is the running loop, when the caller has it at hand (on Python 3.11,
    looking it up costs a getpid() system call).
    """
    global _last
    if loop is None:
        loop = asyncio.get_running_loop()
    last = _last  # one read: another thread's loop may replace it
    if last[0] is loop:
        results = last[1]
    else:
        results = _results.get(loop)
        if results is None:
            results = _results[loop] = _Results(loop)
        _last = (loop, results)
    fut = loop.create_future()
    _pool.submit((results, fut, contextvars.copy_context(), fn, args))
    return fut
