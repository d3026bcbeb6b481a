"""Testing workflows without a server or real time: a pytest plugin, loaded by pytest once durable is installed.

- ``durable_clock``, a fixture: a :class:`VirtualClock` for Apps made in the
  test (``durable.App(path, clock=durable_clock)``). Durable sleeps, retry
  backoffs and prompt timeouts wait for it, not for real time; ``await
  durable_clock.advance(seconds)`` moves it and fires what falls due.
- :func:`stub`: under ``with stub(charge, returns=...)``, ``ctx.step(charge, ...)``
  records the stub's outcome instead of calling ``charge``.
- ``durable.App(path, replay_every_step=True)``: after each new record the
  run is replayed from its start, so nondeterminism fails the first test run.
- :func:`answering`: answers prompts as they are asked, by key or with a
  function of the prompt.
- :func:`assert_replays`: "my code still replays these journals", for a CI
  gate on a copy of a production journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .steps import STUBS

if TYPE_CHECKING:
    from .app import App
    from .model import Prompt
    from .worker import Worker

__all__ = ["SKIP", "Answering", "VirtualClock", "answering", "assert_replays", "durable_clock", "stub"]

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: a fixed start, so a test's times are the same at every run


class VirtualClock:
    """A clock that moves only when told to; pass it as ``App(path, clock=...)``.

    Every App opened with it unloads a run at each durable wait (none is held
    in memory for a while, as with the real clock), and :meth:`advance` wakes
    their workers and returns once each has looked for what fell due.
    """

    virtual = True

    def __init__(self, start: float = START) -> None:
        self._now = float(start)
        self._workers: list[Worker] = []

    def __call__(self) -> float:
        return self._now

    def attach(self, worker: Worker) -> None:
        self._workers.append(worker)

    def detach(self, worker: Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)

    async def advance(self, seconds: float) -> None:
        """Move the clock on by `seconds`; wait until every App on it has claimed the runs that fell due."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError(f"advance() takes seconds >= 0, not {seconds!r}: a clock does not go back.")
        self._now += seconds
        await asyncio.gather(*(worker.settle() for worker in list(self._workers)))

    def __repr__(self) -> str:
        return f"<VirtualClock {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self._now))}>"


@contextlib.contextmanager
def stub(step_fn: Callable[..., Any], *, returns: Any = None, raises: BaseException | type[BaseException] | None = None) -> Iterator[None]:
    """Under this block, ``ctx.step(step_fn, ...)`` records `returns` (or fails with `raises`) instead of calling it.

    The outcome is journaled like the real step's, under the step's name, so
    replays and later runs see it. Stubs are process-wide (workers run the
    workflow in tasks of their own) and nest; leaving the block restores the step.

    Example:
        with durable.testing.stub(charge_card, raises=CardDeclined("insufficient funds")):
            assert await app.run(checkout, "o-1") == {"status": "declined"}
    """
    if not callable(step_fn):
        raise TypeError(f"stub() takes the step function to replace, not {step_fn!r}.")

    async def stubbed(*args: Any, **kwargs: Any) -> Any:
        if raises is not None:
            raise raises
        return returns

    before = STUBS.get(step_fn)
    STUBS[step_fn] = stubbed
    try:
        yield
    finally:
        if before is None:
            STUBS.pop(step_fn, None)
        else:
            STUBS[step_fn] = before


SKIP = object()  # what an answering function returns to leave a prompt unanswered


class Answering:
    """The prompts answered so far by :func:`answering`, in the order they were answered."""

    def __init__(self) -> None:
        self.answered: list[Prompt] = []


@contextlib.asynccontextmanager
async def answering(
    app: App, answers: Mapping[str, Any] | Callable[[Prompt], Any], *, run_id: str | None = None
) -> AsyncIterator[Answering]:
    """Answer prompts of `app` as they are asked, while the block runs.

    `answers` maps a prompt key to its answer, or is a function of the
    :class:`~durable.Prompt` returning the answer (or :data:`SKIP`). Prompts of
    other keys are left alone; `run_id` limits it to one run. An answer the
    prompt refuses (InvalidAnswer) is raised when the block ends.
    """
    done = Answering()
    seen: set[tuple[str, str]] = set()

    def choose(prompt: Prompt) -> Any:
        if callable(answers):
            return answers(prompt)
        return answers.get(prompt.key, SKIP)

    stopping = False

    async def loop() -> None:
        engine = app.engine
        while not stopping:  # also when a cancel is lost (asyncio.wait_for can swallow one, in Python 3.11)
            changed = engine.subscribe()
            for prompt in await app.prompts(run_id):
                if (prompt.run_id, prompt.key) in seen:
                    continue
                value = choose(prompt)
                if value is SKIP:
                    continue
                seen.add((prompt.run_id, prompt.key))
                await app.answer(prompt.run_id, prompt.key, value)
                done.answered.append(prompt)
            await engine.wait_changed(changed, app.poll_interval)

    task = asyncio.create_task(loop(), name="durable.testing.answering")
    try:
        yield done
    finally:
        stopping = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def assert_replays(app: App, journal: str | os.PathLike[str], *, include_ended: bool = False) -> None:
    """Fail (AssertionError, one line per run) unless every run of `journal` replays against `app`'s code.

    `journal` is a copy of a real journal (an SQLite file, copied again here so
    the original is never opened; or a PostgreSQL URL, opened read-only). Nothing
    is executed or written: see ``App.check``.

    Example:
        async def test_this_code_still_replays_production_runs():
            await durable.testing.assert_replays(shop.app, "tests/journals/production.db")
    """
    from .store import is_url

    target = os.fspath(journal)
    with tempfile.TemporaryDirectory(prefix="durable-check-") as scratch:
        if not is_url(target):
            if not os.path.exists(target):
                raise FileNotFoundError(f"No journal at {target!r} to check against.")
            copy = os.path.join(scratch, os.path.basename(target))
            shutil.copyfile(target, copy)
            if os.path.exists(target + "-wal"):
                shutil.copyfile(target + "-wal", copy + "-wal")
            target = copy
        async with app.reader(target) as reader:
            results = await reader.check(include_ended=include_ended)
    bad = [r for r in results if r.verdict != "ok"]
    if bad:
        lines = "\n".join(f"  {r.run_id} ({r.workflow}): {r.verdict}: {r.detail}" for r in bad)
        raise AssertionError(f"{len(bad)} of {len(results)} runs of {os.fspath(journal)} would not replay:\n{lines}")


try:
    import pytest
except ModuleNotFoundError:  # pragma: no cover - used without pytest: no fixtures
    pass
else:

    @pytest.fixture
    def durable_clock() -> VirtualClock:
        """A virtual clock for Apps made in this test: ``durable.App(path, clock=durable_clock)``."""
        return VirtualClock()
