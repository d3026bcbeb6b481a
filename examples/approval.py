"""Expense approval: a step approves small expenses, a manager decides large ones.

Shows `ctx.ask`: a run asks a person a question with a typed answer (`bool`,
then a `Literal` reason when an expense is rejected), unloads while it waits,
and moves on when an answer is recorded, from this process or any other.

Run it; it plays the manager itself and finishes on its own:

    python examples/approval.py

    journal: approval.db

    taxi-5f3a2c: taxi to the airport, 42.50 EUR, by ada
       reimbursed 42.50 EUR to ada
       result: Decision(approved=True, by='policy', reason='42.50 EUR is within the 100.00 EUR limit')

    laptop-5f3a2c: new laptop, 1899.00 EUR, by ada
       pending prompt 'approve': Approve 1899.00 EUR for 'new laptop', by ada?  answer: {"type": "boolean"}
       manager: await app.answer('laptop-5f3a2c', 'approve', True)
       reimbursed 1899.00 EUR to ada
       result: Decision(approved=True, by='manager', reason='')

    dinner-5f3a2c: team dinner, 640.00 EUR, by bob
       pending prompt 'approve': Approve 640.00 EUR for 'team dinner', by bob?  answer: {"type": "boolean"}
       manager: await app.answer('dinner-5f3a2c', 'approve', False)
       pending prompt 'reason': Why is 'team dinner' rejected?  answer: {"enum": ["over budget", ...
       manager: await app.answer('dinner-5f3a2c', 'reason', 'too pricey')
          refused (InvalidAnswer): The answer to prompt 'reason' of run 'dinner-5f3a2c' was rejected: ...
       manager: await app.answer('dinner-5f3a2c', 'reason', 'over budget')
       result: Decision(approved=False, by='manager', reason='over budget')

The taxi is approved by the `auto_approve` step. The laptop run stops at its
prompt (status 'waiting'); the answer resumes it by replay: `ctx.ask` returns
True and the `reimburse` step runs. The dinner is rejected, which asks for a
reason; an answer outside the `Literal` is refused before anything is written.

Or answer from another terminal, as a manager would:

    python examples/approval.py --wait

    journal: approval.db

    laptop-e10081: new laptop, 1899.00 EUR, by ada
       pending prompt 'approve': Approve 1899.00 EUR for 'new laptop', by ada?  answer: {"type": "boolean"}
       answer it from another terminal, with the durable CLI:
          durable answer laptop-e10081 approve true --db approval.db
       or without the CLI:
          python examples/approval.py answer laptop-e10081 approve true
       waiting...
       reimbursed 1899.00 EUR to ada                   <- once either command has run
       result: Decision(approved=True, by='manager', reason='')

Answering needs only the journal, not this code: the `answer` command opens a
bare `durable.App` with no workflow on it. The waiting process notices the
answer within a poll interval and finishes the run.

The journal is `approval.db` in the current directory (or $DURABLE_DB). Each
invocation starts runs with fresh ids (`laptop-<random>`), so the script can be
run again and again and past runs stay in the journal (`durable runs --db
approval.db`); deleting the file at start instead would pull it from under a
`--wait` still waiting in another terminal. `durable serve examples.approval:app`
serves the same workflow over HTTP: importing this module runs nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import durable

DB = os.environ.get("DURABLE_DB") or "approval.db"
LIMIT = Decimal("100.00")

app = durable.App(DB)

Reason = Literal["over budget", "no receipt", "not a business expense"]


@dataclass
class Expense:
    employee: str
    description: str
    amount: Decimal


@dataclass
class Decision:
    approved: bool
    by: str  # "policy" or "manager"
    reason: str = ""


def auto_approve(expense: Expense) -> Decision:
    return Decision(approved=True, by="policy", reason=f"{expense.amount} EUR is within the {LIMIT} EUR limit")


def reimburse(expense: Expense) -> None:
    print(f"   reimbursed {expense.amount} EUR to {expense.employee}")


@app.workflow
async def approve_expense(ctx: durable.Context, expense: Expense) -> Decision:
    if expense.amount <= LIMIT:
        decision = await ctx.step(auto_approve, expense)
    else:
        question = f"Approve {expense.amount} EUR for {expense.description!r}, by {expense.employee}?"
        if await ctx.ask(question, type=bool, key="approve"):
            decision = Decision(approved=True, by="manager")
        else:
            reason = await ctx.ask(f"Why is {expense.description!r} rejected?", type=Reason, key="reason")
            decision = Decision(approved=False, by="manager", reason=reason)
    if decision.approved:
        await ctx.step(reimburse, expense)
    return decision


# --- running it ---------------------------------------------------------------

EXPENSES = {
    "taxi": Expense("ada", "taxi to the airport", Decimal("42.50")),
    "laptop": Expense("ada", "new laptop", Decimal("1899.00")),
    "dinner": Expense("bob", "team dinner", Decimal("640.00")),
}

# What the manager answers in the demo, per expense and prompt key, in order.
MANAGER = {
    "laptop": {"approve": [True]},
    "dinner": {"approve": [False], "reason": ["too pricey", "over budget"]},
}

ENDED = ("completed", "failed", "cancelled", "blocked")


async def next_prompt(handle: durable.RunHandle, shown: set[str]) -> durable.Prompt | None:
    """Wait until the run asks a question not shown yet (return it) or ends (return None)."""
    while True:
        for prompt in await app.prompts(handle.run_id):
            if prompt.key not in shown:
                shown.add(prompt.key)
                return prompt
        if await handle.status() in ENDED:
            return None
        await asyncio.sleep(0.1)


async def start(name: str, stamp: str) -> durable.RunHandle:
    expense = EXPENSES[name]
    handle = await app.start(approve_expense, expense, run_id=f"{name}-{stamp}")
    print(f"\n{handle.run_id}: {expense.description}, {expense.amount} EUR, by {expense.employee}")
    return handle


def show(prompt: durable.Prompt) -> None:
    print(f"   pending prompt {prompt.key!r}: {prompt.question}  answer: {json.dumps(prompt.schema)}")


async def demo() -> None:
    """Run the three expenses, answering each prompt from Python as the manager."""
    stamp = secrets.token_hex(3)
    print(f"journal: {DB}")
    async with app:
        for name in EXPENSES:
            handle = await start(name, stamp)
            shown: set[str] = set()
            while (prompt := await next_prompt(handle, shown)) is not None:
                show(prompt)
                for value in MANAGER[name][prompt.key]:
                    print(f"   manager: await app.answer({handle.run_id!r}, {prompt.key!r}, {value!r})")
                    try:
                        await app.answer(handle.run_id, prompt.key, value)
                    except durable.InvalidAnswer as exc:
                        print(f"      refused (InvalidAnswer): {exc}")
            print(f"   result: {await handle.result()}")


async def wait() -> None:
    """Start the laptop run and wait for answers from another process."""
    here = shlex.quote(os.path.relpath(__file__))
    env = f"DURABLE_DB={shlex.quote(DB)} " if "DURABLE_DB" in os.environ else ""
    print(f"journal: {DB}")
    async with app:
        handle = await start("laptop", secrets.token_hex(3))
        shown: set[str] = set()
        while (prompt := await next_prompt(handle, shown)) is not None:
            show(prompt)
            example = "true" if prompt.key == "approve" else shlex.quote("over budget")
            print("   answer it from another terminal, with the durable CLI:")
            print(f"      durable answer {handle.run_id} {prompt.key} {example} --db {shlex.quote(DB)}")
            print("   or without the CLI:")
            print(f"      {env}python {here} answer {handle.run_id} {prompt.key} {example}")
            print("   waiting...", flush=True)
        print(f"   result: {await handle.result()}")


async def answer(run_id: str, key: str, text: str) -> None:
    """Answer a prompt like `durable answer` does: VALUE is JSON, else a plain string."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    # A bare App: recording an answer needs the journal, not the workflow code.
    async with durable.App(DB) as journal:
        await journal.answer(run_id, key, value)
    print(f"answered {key!r} of run {run_id}: {value!r}")


if __name__ == "__main__":
    try:
        match sys.argv[1:]:
            case []:
                asyncio.run(demo())
            case ["--wait"]:
                asyncio.run(wait())
            case ["answer", run_id, key, value]:
                asyncio.run(answer(run_id, key, value))
            case _:
                print("usage: python examples/approval.py [--wait | answer RUN_ID KEY VALUE]", file=sys.stderr)
                sys.exit(2)
    except durable.DurableError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        # The run stays in the journal, waiting: once answered, any process with
        # this workflow finishes it, e.g. `durable worker examples.approval:app`.
        sys.exit("\nstopped waiting; the run is still in the journal (see `durable prompts`)")
