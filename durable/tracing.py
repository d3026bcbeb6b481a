"""OpenTelemetry spans, where the application configured a tracer provider (``pip install 'durable[otel]'``).

Each execution of a run is a span (``run <workflow>``), and each step it
executes is a child span (``step <name>``), with the run_id, seq, workflow,
attempts and status as attributes. A run is one trace, however many times it
is executed (resumed after a wait, a crash, on another host): every execution
span's parent is the run's own span context, whose trace and span ids are
derived from the run_id, so no trace context needs storing.

Without ``opentelemetry`` installed, or with no provider configured (the API's
default), nothing is made and a step pays one attribute check.
"""

from __future__ import annotations

import hashlib
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
except ImportError:  # the otel extra is not installed
    trace = None  # type: ignore[assignment]

__all__ = ["end_run", "provider", "start_run", "step_span", "tracer"]


def provider() -> Any:
    return None if trace is None else trace.get_tracer_provider()


_made: tuple[Any, Any] = (None, None)  # (provider, its tracer): made once, not at each execution


def tracer() -> Any:
    """The tracer to make spans with, or None: no provider configured (the API's proxy or no-op one)."""
    global _made
    found = provider()
    if found is None or isinstance(found, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    if _made[0] is not found:
        from . import __version__

        _made = (found, found.get_tracer("durable", __version__))
    return _made[1]


def run_context(run_id: str) -> Any:
    """The context whose span is the run itself: the same ids for every execution of it, from its run_id."""
    digest = hashlib.sha256(run_id.encode()).digest()
    parent = trace.SpanContext(
        trace_id=int.from_bytes(digest[:16]) or 1, span_id=int.from_bytes(digest[16:24]) or 1, is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )  # fmt: skip
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def start_run(tracer: Any, run_id: str, workflow: str) -> tuple[Any, Any]:
    """Start an execution's span and make it current (its steps are its children); (span, token to detach)."""
    span = tracer.start_span(
        f"run {workflow}", context=run_context(run_id), attributes={"durable.run_id": run_id, "durable.workflow": workflow}
    )
    return span, otel_context.attach(trace.set_span_in_context(span))


def end_run(span: Any, token: Any, outcome: str, status: str | None, error: BaseException | None) -> None:
    span.set_attribute("durable.outcome", outcome)  # completed, failed, suspended (it waits) or stopped
    if status is not None:
        span.set_attribute("durable.status", status)
    if error is not None:
        span.record_exception(error)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()
    otel_context.detach(token)


def step_span(tracer: Any, run_id: str, workflow: str, seq: int, name: str) -> Any:
    """A step's span (a context manager), current while its attempts run."""
    attributes = {"durable.run_id": run_id, "durable.workflow": workflow, "durable.seq": seq, "durable.step": name}
    return tracer.start_as_current_span(f"step {name}", attributes=attributes, record_exception=False, set_status_on_exception=False)


def step_done(span: Any, attempts: int, error: BaseException | None) -> None:
    span.set_attribute("durable.attempts", attempts)
    span.set_attribute("durable.status", "failed" if error is not None else "completed")
    if error is not None:
        span.record_exception(error)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))
