"""A run traced with OpenTelemetry that crashes mid-run (argv: crash) and is resumed (argv: resume).

Each finished span is appended to $SPANS as one JSON line (name, trace id, pid) when it ends, so what a
killed process finished is kept. The journal is $DURABLE_DB.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import durable


class LineExporter(SpanExporter):
    def export(self, spans):  # type: ignore[no-untyped-def]
        with open(os.environ["SPANS"], "a") as out:
            for span in spans:
                out.write(json.dumps({"name": span.name, "trace_id": f"{span.context.trace_id:032x}", "pid": os.getpid()}) + "\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(LineExporter()))
trace.set_tracer_provider(provider)

app = durable.App(poll_interval=0.05)


def first() -> str:
    return "one"


def second() -> str:
    if sys.argv[1] == "crash":
        os._exit(9)  # the process dies mid-step: nothing of it is recorded
    return "two"


@app.workflow
async def crashy(ctx: durable.Context) -> str:
    await ctx.step(first)
    await ctx.step(second)
    return "done"


async def main() -> None:
    async with app:
        print(await app.run(crashy, run_id="crashy"))


asyncio.run(main())
