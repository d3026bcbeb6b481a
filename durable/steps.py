"""Step options (``@durable.step``) and running one step: attempts, timeout, backoff."""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .codec import Codec, return_codec
from .errors import DefinitionError, StepTimeout
from .threads import run_in_thread

__all__ = [
    "STUBS", "StepSpec", "attempt", "backoff", "failing_step", "from_step", "run_and_record", "run_attempts", "step",
    "step_spec",
]

F = TypeVar("F", bound=Callable[..., Any])

MAX_BACKOFF_SECONDS = 60.0

# durable.testing.stub: step function -> what ctx.step calls instead (its outcome is recorded as the step's).
STUBS: dict[Any, Callable[..., Any]] = {}


Errors = tuple[type[BaseException], ...]


class StepOptions:
    __slots__ = ("backoff_seconds", "name", "no_retry_on", "retries", "retry_on", "timeout")

    def __init__(
        self,
        name: str | None,
        retries: int,
        timeout: float | None,
        backoff_seconds: float,
        retry_on: Errors = (Exception,),
        no_retry_on: Errors = (),
    ) -> None:
        self.name, self.retries, self.timeout, self.backoff_seconds = name, retries, timeout, backoff_seconds
        self.retry_on, self.no_retry_on = retry_on, no_retry_on


def _errors(option: str, given: Any) -> Errors:
    """An exception class or a tuple of them, as a tuple; DefinitionError otherwise."""
    found = given if isinstance(given, tuple) else (given,)
    if not found or not all(isinstance(e, type) and issubclass(e, Exception) for e in found):
        raise DefinitionError(
            f"@durable.step({option}=...) takes an exception class or a tuple of them, not {given!r}."
        )
    return found


def step(
    fn: F | None = None,
    *,
    name: str | None = None,
    retries: int = 0,
    timeout: float | None = None,
    backoff_seconds: float = 1.0,
    retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
    no_retry_on: type[Exception] | tuple[type[Exception], ...] = (),
) -> Any:
    """Set how ctx.step runs a function: its journal name, retries, timeout and backoff.

    `retries=N` allows up to N more attempts after the first; the wait before
    attempt k+1 is ``backoff_seconds * 2**(k-1)``, capped at 60 s, with ±50 % jitter.
    Only errors of `retry_on` (default: any) and not of `no_retry_on` are
    retried; any other fails the step at once (a declined card is not a timeout).
    Each failed attempt and the time of the next are journaled before the wait,
    so a crash never adds attempts (only an attempt in flight runs again, as any
    step in flight does), and a wait longer than 2 s unloads the run like a
    durable sleep. `timeout` bounds each attempt. An async function is cancelled
    at its timeout; a plain function runs in a thread, which Python cannot stop:
    the attempt is abandoned (its result ignored) while the thread finishes.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise DefinitionError(f"@durable.step(retries=...) takes a whole number >= 0, not {retries!r}.")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise DefinitionError(f"@durable.step(timeout=...) takes seconds > 0 or None, not {timeout!r}.")
    if isinstance(backoff_seconds, bool) or not isinstance(backoff_seconds, (int, float)) or backoff_seconds < 0:
        raise DefinitionError(f"@durable.step(backoff_seconds=...) takes seconds >= 0, not {backoff_seconds!r}.")
    if name is not None and (not isinstance(name, str) or not name):
        raise DefinitionError(f"@durable.step(name=...) takes a non-empty string, not {name!r}.")
    options = StepOptions(
        name, retries, None if timeout is None else float(timeout), float(backoff_seconds),
        _errors("retry_on", retry_on), _errors("no_retry_on", no_retry_on) if no_retry_on != () else (),
    )  # fmt: skip

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise DefinitionError(f"@durable.step decorates a function, not {fn!r}.")
        # A bound method keeps no attributes of its own: its function carries them
        # (as when the method's definition is decorated), for every instance.
        holder = fn.__func__ if inspect.ismethod(fn) else fn
        try:
            holder.__durable_step__ = options  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            raise DefinitionError(
                f"@durable.step cannot set options on {fn!r}: it takes no attributes. "
                "Decorate the function it calls, or wrap it in a plain function."
            ) from None
        for obj in (fn, holder):
            if hasattr(obj, "__dict__"):
                vars(obj).pop("__durable_spec__", None)  # options changed: a cached spec is stale
        try:
            _specs.pop(holder, None)
        except TypeError:
            pass  # not weakly referable, so never cached there
        return fn

    return decorate if fn is None else decorate(fn)


class StepSpec:
    """Everything ctx.step needs to know about a step function, computed once."""

    __slots__ = (
        "backoff_seconds", "codec", "is_async", "label", "name", "no_retry_on", "once", "plain", "retries", "retry_on",
        "timeout", "__weakref__",
    )  # fmt: skip

    def __init__(self, fn: Callable[..., Any]) -> None:
        target = fn.func if isinstance(fn, functools.partial) else fn
        # Options set on a partial or a callable object are its own; else those of what it calls.
        options: StepOptions | None = getattr(fn, "__durable_step__", None) or getattr(target, "__durable_step__", None)
        default_name = getattr(target, "__qualname__", None) or type(target).__qualname__
        self.name = (options.name if options and options.name else None) or default_name
        self.retries = options.retries if options else 0
        self.timeout = options.timeout if options else None
        self.backoff_seconds = options.backoff_seconds if options else 1.0
        self.retry_on: Errors = options.retry_on if options else (Exception,)
        self.no_retry_on: Errors = options.no_retry_on if options else ()
        self.is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            getattr(target, "__call__", None)
        )
        self.codec: Codec = return_codec(fn, f"step {self.name!r}")
        self.label = f"the result of step {self.name!r}"  # names the value in an EncodingError
        # Tried once, without a timeout: one attempt, awaited by the step itself (no retry machinery);
        # plain, an async function of those, is even awaited directly.
        self.once = self.retries == 0 and self.timeout is None
        self.plain = self.once and self.is_async and not isinstance(fn, functools.partial)


    def retryable(self, exc: Exception) -> bool:
        """Whether a failed attempt's error may be retried (retries left aside)."""
        return isinstance(exc, self.retry_on) and not isinstance(exc, self.no_retry_on)


_specs: weakref.WeakKeyDictionary[Any, StepSpec] = weakref.WeakKeyDictionary()


def step_spec(fn: Callable[..., Any]) -> StepSpec:
    try:
        return fn.__durable_spec__  # type: ignore[attr-defined,no-any-return]  # the fast path of replay
    except AttributeError:
        pass
    if not callable(fn):
        raise TypeError(f"ctx.step takes a function to run, not {fn!r}.")
    spec = StepSpec(fn)
    try:
        fn.__durable_spec__ = spec  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # bound methods, partials, builtins: cache by their function
        key = getattr(fn, "__func__", None)
        if key is not None:
            cached = _specs.get(key)
            if cached is None:
                cached = _specs[key] = spec
            return cached
    return spec


async def attempt(spec: StepSpec, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if spec.is_async:
        result = fn(*args, **kwargs)
    else:
        result = await run_in_thread(functools.partial(fn, *args, **kwargs) if kwargs else fn, *(() if kwargs else args))
    if inspect.isawaitable(result):
        result = await result
    return result


# What plain functions mostly return: types no awaitable can be (inspect.isawaitable costs an ABC check).
NEVER_AWAITABLE = frozenset({int, float, str, bytes, bool, type(None), dict, list, tuple})


def run_and_record(
    spec: StepSpec, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
    record: Callable[[bytes], Any],
) -> tuple[Any, Any]:
    """A plain function's one attempt and, in the same thread, its record: (value, what `record` returned).

    Runs in the step's thread (see Calls.step). The function's error is raised,
    as by any attempt. What `record(blob)` returned is None when nothing was
    recorded here: the function returned an awaitable, its value does not
    encode, or `record` declined; then `value` is what the function returned,
    and the event loop goes on as for any step.
    """
    value = fn(*args, **kwargs)
    if type(value) not in NEVER_AWAITABLE and inspect.isawaitable(value):
        return value, None
    try:
        blob, decoded = spec.codec.roundtrip(value, spec.label)
    except Exception:
        return value, None  # raised again by the event loop's own encoding, where any step's is raised
    recorded = record(blob)
    return (value, None) if recorded is None else (decoded, recorded)


def from_step(error: BaseException, seq: int) -> BaseException:
    """Mark the error a step raises into the workflow with the step's seq (what retry() sets aside)."""
    try:
        error.__durable_step_seq__ = seq  # type: ignore[attr-defined]
    except AttributeError:  # an exception type with __slots__
        pass
    return error


def failing_step(exc: BaseException) -> int | None:
    """The seq of the step whose error failed the run: the error itself, or what it was raised `from` explicitly.

    An error raised while handling a step's failure (in its `except`, without
    `from`) is not that step's: the code handled it, and its record stays.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        seq = getattr(exc, "__durable_step_seq__", None)
        if seq is not None:
            return seq
        exc = exc.__cause__  # type: ignore[assignment]
    return None


def backoff(spec: StepSpec, attempts: int) -> float:
    """Seconds to wait after `attempts` failed attempts: exponential, capped, with ±50 % jitter."""
    delay = min(MAX_BACKOFF_SECONDS, spec.backoff_seconds * 2 ** (attempts - 1))
    return delay * random.uniform(0.5, 1.5)


async def run_attempts(
    spec: StepSpec,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    first: int = 1,
    between: Callable[[int, Exception, float], Awaitable[None]] | None = None,
) -> tuple[int, Any, Exception | None]:
    """Run a step until it succeeds, fails with an error not to retry, or its retries are spent.

    Returns (attempts, value, final error). `first` is the number of this first
    attempt (after a crash, the one after those journaled); `between(attempts,
    error, delay)` waits before the next attempt (the caller journals it), else
    it is a plain sleep.
    """
    attempts = first - 1
    while True:
        attempts += 1
        try:
            if spec.timeout is None:
                return attempts, await attempt(spec, fn, args, kwargs), None
            deadline = asyncio.timeout(spec.timeout)
            try:
                async with deadline:
                    result = await attempt(spec, fn, args, kwargs)
            except TimeoutError:
                if deadline.expired():
                    raise StepTimeout(spec.name, spec.timeout) from None
                raise
            if deadline.expired():
                # It caught its cancellation and returned anyway: a timed-out attempt
                # is a timeout, whatever the function did after it.
                raise StepTimeout(spec.name, spec.timeout)
            return attempts, result, None
        except Exception as exc:
            if attempts > spec.retries or not spec.retryable(exc):
                return attempts, None, exc
            delay = backoff(spec, attempts)
            if between is None:
                await asyncio.sleep(delay)
            else:
                await between(attempts, exc, delay)
