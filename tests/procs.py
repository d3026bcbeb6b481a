"""Workflows run in child processes by the durability tests.

    python tests/procs.py DB LOG RUN_ID WORKFLOW [--block STEP]

Every step appends `start NAME` and `done NAME` to LOG (O_APPEND, so a SIGKILL
loses nothing already written). With --block, step NAME blocks forever after
writing `start NAME`: the test kills the process there. The run's result is
printed as `RESULT <json>`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import decimal
import enum
import os
import sys
import time
import uuid

import msgspec
import pydantic

import durable

DB, LOG, RUN_ID, WORKFLOW = sys.argv[1:5]
BLOCK = sys.argv[sys.argv.index("--block") + 1] if "--block" in sys.argv else None

app = durable.App(DB, poll_interval=0.05)


def note(line: str) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def work(name: str) -> str:
    note(f"start {name}")
    if name == BLOCK:
        time.sleep(3600)
    note(f"done {name}")
    return f"{name}-ok"


async def awork(name: str) -> str:
    note(f"start {name}")
    if name == BLOCK:
        await asyncio.sleep(3600)
    note(f"done {name}")
    return f"{name}-ok"


@app.workflow
async def sequential(ctx: durable.Context) -> list[str]:
    return [await ctx.step(work, f"s{i}") for i in range(5)]


@app.workflow
async def parallel(ctx: durable.Context) -> list[str]:
    first = await ctx.step(awork, "before")
    branches = await asyncio.gather(*(ctx.step(awork, f"p{i}") for i in range(4)))
    last = await ctx.step(awork, "after")
    return [first, *branches, last]


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Invoice:
    id: uuid.UUID
    amount: decimal.Decimal
    issued: dt.date
    at: dt.datetime
    blob: bytes
    colour: Colour
    pair: tuple[int, str]


class Customer(pydantic.BaseModel):
    name: str
    since: dt.datetime


class Line(msgspec.Struct):
    sku: str
    qty: int


def make_invoice() -> Invoice:
    note("start invoice")
    return Invoice(
        uuid.uuid4(),
        decimal.Decimal("1234.56"),
        dt.date.today(),
        dt.datetime.now(dt.timezone.utc),
        os.urandom(8),
        Colour.BLUE,
        (7, "seven"),
    )


def make_customer() -> Customer:
    note("start customer")
    return Customer(name="Ada", since=dt.datetime.now(dt.timezone.utc))


def make_lines() -> list[Line]:
    note("start lines")
    return [Line("a", 1), Line("b", 2)]


@app.workflow
async def typed(ctx: durable.Context) -> str:
    values = (await ctx.step(make_invoice), await ctx.step(make_customer), await ctx.step(make_lines), ctx.now())
    note("values " + repr(values))
    note("types " + repr([type(v).__name__ for v in values]))
    await ctx.step(work, "end")
    return "typed-ok"


@app.workflow
async def sleeper(ctx: durable.Context, seconds: float) -> str:
    await ctx.step(work, "before")
    await ctx.sleep(seconds)
    await ctx.step(work, "after")
    return "slept"


def leave(name: str) -> str:
    note(f"start {name}")
    how = os.environ.get("PROCS_LEAVE")
    if how == "exit":
        sys.exit(3)  # as a library might
    if how == "interrupt":
        raise KeyboardInterrupt
    note(f"done {name}")
    return "stayed"


@app.workflow
async def leaver(ctx: durable.Context) -> list[str]:
    return [await ctx.step(work, "before"), await ctx.step(leave, "leave")]


@durable.step(retries=2, backoff_seconds=1.5)
def always_fails(name: str) -> str:
    note(f"start {name}")
    raise ConnectionError("the far end is down")


@app.workflow
async def retrier(ctx: durable.Context) -> str:
    try:
        return await ctx.step(always_fails, "attempt")
    except ConnectionError:
        return "gave up"


def got(i: int) -> int:
    note(f"got {i}")
    time.sleep(0.003)
    return i


@app.workflow
async def collector(ctx: durable.Context) -> list[int]:
    """Receives 100 messages on topic 'n', one step each."""
    return [await ctx.step(got, await ctx.receive("n", type=int)) for _ in range(100)]


@app.workflow
async def kid(ctx: durable.Context, name: str) -> str:
    return await ctx.step(work, name)


@app.workflow
async def family(ctx: durable.Context) -> str:
    """A step, then a child run whose step is child-1."""
    await ctx.step(work, "parent-0")
    return "child:" + await ctx.child(kid, "child-1")


def pace(name: str) -> float:
    """How long step `name` of a race takes: 'fast' is fast, 'slow' slow, and swapped under RACE_FLIP=1."""
    fast = (name == "fast") != (os.environ.get("RACE_FLIP") == "1")
    return 0.05 if fast else float(os.environ.get("RACE_SLOW", "3"))


async def paced(name: str, seconds: float) -> str:
    note(f"start {name}")
    await asyncio.sleep(seconds)
    note(f"done {name}")
    return name


@app.workflow
async def first_wins(ctx: durable.Context) -> str:
    """ctx.wait over a slow step (seq 0) and a fast one (seq 1); then a step named after the winner."""
    done, _ = await ctx.wait([ctx.step(paced, "slow", pace("slow")), ctx.step(paced, "fast", pace("fast"))])
    (winner,) = done
    return await ctx.step(work, "after-" + winner.result())


@app.workflow
async def in_order(ctx: durable.Context) -> list[str]:
    """ctx.as_completed over a slow step (seq 0) and a fast one (seq 1); a step after each, in that order."""
    steps = [ctx.step(paced, "slow", pace("slow")), ctx.step(paced, "fast", pace("fast"))]
    return [await ctx.step(work, "after-" + await next_done) for next_done in ctx.as_completed(steps)]


async def main() -> None:
    async with app:
        args = (float(sys.argv[sys.argv.index("--seconds") + 1]),) if "--seconds" in sys.argv else ()
        result = await app.run(WORKFLOW, *args, run_id=RUN_ID)
        print("RESULT " + msgspec.json.encode(result).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
