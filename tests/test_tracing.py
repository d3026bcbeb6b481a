"""OpenTelemetry on both stores: a span per execution and per step; a run is one trace across resumes and a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import durable
from durable import tracing
from helpers import HERE, eventually, make_app


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """This test's own provider (the global one can be set once per process), its spans kept in memory."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    monkeypatch.setattr(tracing, "provider", lambda: provider)
    return spans


def shipping_app(db: str) -> durable.App:
    app = make_app(db)
    tries: list[int] = []

    def pack(order: str) -> str:
        return f"packed {order}"

    @durable.step(retries=2, backoff_seconds=0.001)
    def label(order: str) -> str:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("printer offline")
        return f"label {order}"

    @app.workflow
    async def ship(ctx: durable.Context, order: str) -> str:
        await ctx.step(pack, order)
        if not await ctx.ask(f"Ship {order}?", type=bool, key="go"):
            return "held"
        return await ctx.step(label, order)

    return app


def named(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


async def test_each_execution_and_step_is_a_span_and_the_run_is_one_trace(db: str, exporter: InMemorySpanExporter) -> None:
    async with shipping_app(db) as app:
        await app.start("ship", "o-1", run_id="o-1")
        await eventually(lambda: app.prompts("o-1"), what="the prompt")
        await app.answer("o-1", "go", True)
        assert await durable.RunHandle(app, "o-1").result() == "label o-1"
    spans = exporter.get_finished_spans()
    runs, steps = named(spans, "run "), named(spans, "step ")
    assert [(s.name, s.attributes["durable.outcome"]) for s in runs] == [("run ship", "suspended"), ("run ship", "completed")]
    assert len({s.context.trace_id for s in spans}) == 1  # one trace: the wait and the resume
    assert {s.parent.span_id for s in runs} == {runs[0].parent.span_id}  # both under the run's own span context
    assert [(s.attributes["durable.seq"], s.attributes["durable.attempts"], s.attributes["durable.status"]) for s in steps] == [
        (0, 1, "completed"), (2, 2, "completed"),
    ]  # fmt: skip
    assert steps[0].parent.span_id == runs[0].context.span_id and steps[1].parent.span_id == runs[1].context.span_id
    assert all(s.attributes["durable.run_id"] == "o-1" and s.attributes["durable.workflow"] == "ship" for s in spans)


async def test_a_failed_step_and_run_are_error_spans(db: str, exporter: InMemorySpanExporter) -> None:
    app = make_app(db)

    def charge() -> None:
        raise ValueError("card declined")

    @app.workflow
    async def pay(ctx: durable.Context) -> None:
        await ctx.step(charge)

    async with app:
        with pytest.raises(ValueError):
            await app.run(pay, run_id="p")
    [step] = named(exporter.get_finished_spans(), "step ")
    [run] = named(exporter.get_finished_spans(), "run ")
    assert step.status.status_code is StatusCode.ERROR and step.attributes["durable.status"] == "failed"
    assert run.status.status_code is StatusCode.ERROR and run.attributes["durable.status"] == "failed"
    assert [e.name for e in step.events] == ["exception"]


async def test_without_a_provider_nothing_is_made(db: str) -> None:
    assert tracing.tracer() is None  # the API's default provider: spans would go nowhere, so none is made
    async with shipping_app(db) as app:
        await app.start("ship", "o-2", run_id="o-2")
        await eventually(lambda: app.prompts("o-2"), what="the prompt")
        assert app.engine.executing("o-2") is None or app.engine.executing("o-2").tracer is None  # type: ignore[union-attr]


def test_a_run_that_crashed_and_resumed_in_another_process_is_one_trace(db: str, tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    env = dict(os.environ, DURABLE_DB=db, SPANS=str(spans))
    crashed = subprocess.run([sys.executable, str(HERE / "traced.py"), "crash"], env=env, capture_output=True, text=True, timeout=60)
    assert crashed.returncode == 9, crashed.stderr  # os._exit in the middle of its second step
    resumed = subprocess.run([sys.executable, str(HERE / "traced.py"), "resume"], env=env, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "done"
    rows = [json.loads(line) for line in spans.read_text().splitlines()]
    assert [(r["name"], r["pid"] != rows[0]["pid"]) for r in rows] == [
        ("step first", False),  # the first process finished this step; its execution span never ended (killed)
        ("step second", True), ("run crashy", True),  # the second process replayed `first` and ran `second`
    ]  # fmt: skip
    assert len({r["trace_id"] for r in rows}) == 1
