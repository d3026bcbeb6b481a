"""The examples run to completion and print what their docstrings say."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 60


def env_with(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DURABLE_DB"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run_example(name: str, *args: str, cwd: Path, **env: str) -> list[str]:
    """Run an example to its end and return its stdout lines."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=env_with(**env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def line_with(lines: list[str], pattern: str) -> str:
    found = [line for line in lines if re.search(pattern, line)]
    assert found, f"no line matches {pattern!r} in:\n" + "\n".join(lines)
    return found[0]


# --- approval -------------------------------------------------------------------


def test_approval_answers_its_own_prompts(tmp_path: Path) -> None:
    lines = run_example("approval.py", cwd=tmp_path, DURABLE_DB=str(tmp_path / "j.db"))

    assert lines[0] == f"journal: {tmp_path / 'j.db'}"
    assert "   result: Decision(approved=True, by='policy', reason='42.50 EUR is within the 100.00 EUR limit')" in lines
    assert "   reimbursed 42.50 EUR to ada" in lines
    assert line_with(lines, r"pending prompt 'approve': Approve 1899\.00 EUR for 'new laptop', by ada\?")
    assert line_with(lines, r"manager: await app.answer\('laptop-\w+', 'approve', True\)")
    assert "   reimbursed 1899.00 EUR to ada" in lines
    assert "   result: Decision(approved=True, by='manager', reason='')" in lines
    assert line_with(lines, r"pending prompt 'reason': Why is 'team dinner' rejected\?")
    assert line_with(lines, r"refused \(InvalidAnswer\): The answer to prompt 'reason' .* 'too pricey' is not one of")
    assert "   result: Decision(approved=False, by='manager', reason='over budget')" in lines
    assert not any("to bob" in line for line in lines)  # a rejected expense is not reimbursed


def test_approval_is_rerunnable_with_fresh_run_ids(tmp_path: Path) -> None:
    first = run_example("approval.py", cwd=tmp_path)
    second = run_example("approval.py", cwd=tmp_path)

    assert (tmp_path / "approval.db").exists()
    run_ids = [re.match(r"(\w+-\w+):", line) for line in first + second]
    assert len({m.group(1) for m in run_ids if m}) == 6
    assert second.count("   result: Decision(approved=True, by='manager', reason='')") == 1


@contextlib.contextmanager
def waiting_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run `approval.py --wait`; yield it and its run_id once it waits for an answer."""
    with subprocess.Popen(
        [sys.executable, str(EXAMPLES / "approval.py"), "--wait"],
        cwd=tmp_path,
        env=env_with(),
        stdout=subprocess.PIPE,
        text=True,
    ) as waiting:
        try:
            assert waiting.stdout is not None
            lines = []
            while (line := waiting.stdout.readline()) and line.strip() != "waiting...":
                lines.append(line.rstrip("\n"))
            assert line, "\n".join(lines)
            assert line_with(lines, r"^      durable answer laptop-\w+ approve true --db approval\.db$")
            command = line_with(lines, r"^      python \S+approval\.py answer laptop-\w+ approve true$")
            yield waiting, command.split()[3]
        finally:
            waiting.kill()


def finish(waiting: subprocess.Popen[str]) -> list[str]:
    """The rest of the waiting process's output, once it has ended by itself."""
    out, _ = waiting.communicate(timeout=TIMEOUT)
    assert waiting.returncode == 0, out
    return out.splitlines()


def test_approval_answered_from_another_process(tmp_path: Path) -> None:
    with waiting_run(tmp_path) as (waiting, run_id):
        answered = run_example("approval.py", "answer", run_id, "approve", "true", cwd=tmp_path)
        assert answered == [f"answered 'approve' of run {run_id}: True"]
        lines = finish(waiting)

    assert "   reimbursed 1899.00 EUR to ada" in lines
    assert lines[-1] == "   result: Decision(approved=True, by='manager', reason='')"


def test_approval_rejection_and_bad_answer_from_another_process(tmp_path: Path) -> None:
    with waiting_run(tmp_path) as (waiting, run_id):
        run_example("approval.py", "answer", run_id, "approve", "false", cwd=tmp_path)
        assert waiting.stdout is not None
        while "pending prompt 'reason'" not in (line := waiting.stdout.readline()):
            assert line, "the --wait process ended before asking for a reason"

        bad = subprocess.run(
            [sys.executable, str(EXAMPLES / "approval.py"), "answer", run_id, "reason", "too pricey"],
            cwd=tmp_path,
            env=env_with(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert bad.returncode == 1
        assert bad.stderr.startswith(f"error: The answer to prompt 'reason' of run '{run_id}' was rejected")

        run_example("approval.py", "answer", run_id, "reason", "no receipt", cwd=tmp_path)
        lines = finish(waiting)

    assert lines[-1] == "   result: Decision(approved=False, by='manager', reason='no receipt')"


def test_approval_answered_with_the_printed_cli_command(tmp_path: Path) -> None:
    cli = shutil.which("durable", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.skip("the `durable` command is not installed")
    with waiting_run(tmp_path) as (waiting, run_id):
        subprocess.run(
            [cli, "answer", run_id, "approve", "true", "--db", "approval.db"],
            cwd=tmp_path,
            env=env_with(),
            check=True,
            capture_output=True,
            timeout=TIMEOUT,
        )
        lines = finish(waiting)

    assert lines[-1] == "   result: Decision(approved=True, by='manager', reason='')"


def test_approval_imports_without_running_anything(tmp_path: Path) -> None:
    code = "from examples import approval; print(type(approval.app).__name__, sorted(approval.app.workflows))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env_with(PYTHONPATH=str(EXAMPLES.parent)),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "App ['approve_expense']\n"
    assert list(tmp_path.iterdir()) == []


# --- crash and rerun -------------------------------------------------------------


def test_crash_and_rerun_executes_completed_steps_once(tmp_path: Path) -> None:
    lines = run_example("crash_and_rerun.py", cwd=tmp_path, DURABLE_DB=str(tmp_path / "c.db"))

    assert "  charge_card: killing this process (SIGKILL) before the step returns" in lines
    assert "  exit code -9 (killed)" in lines
    assert "  result: order o-42: charged charge-o-42, shipped parcel-o-42" in lines
    assert "  exit code 0" in lines
    table = [line.split() for line in lines[lines.index("side-effect log    run 1     run 2") + 1 :][:5]]
    assert table == [
        ["fetch_order", "executed", "replayed"],
        ["reserve_stock", "executed", "replayed"],
        ["charge_card", "executed", "executed"],
        ["ship_parcel", "-", "executed"],
        ["email_receipt", "-", "executed"],
    ]
    assert "executed exactly once: fetch_order, reserve_stock, ship_parcel, email_receipt" in lines
    assert "executed twice, in flight when run 1 was killed: charge_card" in lines
    assert (tmp_path / "c.log").read_text().split("\n") == [
        "1 fetch_order",
        "1 reserve_stock",
        "1 charge_card",
        "2 charge_card",
        "2 ship_parcel",
        "2 email_receipt",
        "",
    ]


def test_crash_and_rerun_starts_afresh_each_time(tmp_path: Path) -> None:
    first = run_example("crash_and_rerun.py", cwd=tmp_path)
    second = run_example("crash_and_rerun.py", cwd=tmp_path)

    assert first == second


# --- nightly ETL ------------------------------------------------------------------


def journal_rows(lines: list[str]) -> list[list[str]]:
    start = lines.index("  seq  kind   name       status     attempts") + 1
    return [line.split() for line in lines[start:]]


def test_nightly_etl_retries_sleeps_and_prints_its_journal(tmp_path: Path) -> None:
    lines = run_example("nightly_etl.py", cwd=tmp_path, DURABLE_DB=str(tmp_path / "e.db"))

    assert lines[1:4] == [
        "  extract: attempt 1 failed: warehouse busy",
        "  extract: attempt 2 failed: warehouse busy",
        "  extract: attempt 3 read 3 sales",
    ]
    assert "  transform: 14 units, 108.50 EUR, top seller lamp" in lines
    assert "  load: wrote the 2024-06-01 report" in lines
    assert (
        "result: Report(day=datetime.date(2024, 6, 1), units=14, revenue=Decimal('108.50'), top_sku='lamp')" in lines
    )
    assert "journal of run etl-2024-06-01 (completed):" in lines
    rows = journal_rows(lines)
    assert [row[:3] + row[4:] for row in rows] == [
        ["0", "step", "extract", "3"],
        ["1", "step", "transform", "1"],
        ["2", "sleep", "sleep", "1"],
        ["3", "step", "load", "1"],
    ]
    assert [row[3] for row in rows] == ["completed"] * 4  # the sleep too, once it fired


def test_nightly_etl_second_run_returns_the_recorded_result(tmp_path: Path) -> None:
    first = run_example("nightly_etl.py", cwd=tmp_path)
    second = run_example("nightly_etl.py", cwd=tmp_path)

    assert (tmp_path / "nightly_etl.db").exists()
    assert not any("extract:" in line or "load:" in line for line in second)
    assert journal_rows(second) == journal_rows(first)
    assert second[1] == line_with(first, "^result: ")


# --- renewal (the README's testing example) ------------------------------------------


def test_renewal_prints_what_its_docstring_says(tmp_path: Path) -> None:
    lines = run_example("renewal.py", cwd=tmp_path)
    assert lines == [
        "   email to ada: renewed, receipt rcpt-ada-1200",
        "ada: {'status': 'renewed', 'receipt': 'rcpt-ada-1200'}",
        "bob: card declined; support is asked: Bob's card was declined (insufficient funds). Give 3 more days?",
        "bob: two days pass, nobody answers",
        "   bob's account is suspended",
        "bob: {'status': 'suspended'}",
    ]
    assert list(tmp_path.iterdir()) == []  # its journal was a scratch file


def test_renewal_tests_pass_under_pytest(tmp_path: Path) -> None:
    """The README's example test file, run as a user would run it, in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "test_renewal.py")],
        cwd=tmp_path, env=env_with(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout


def test_the_readme_shows_the_renewal_tests_as_they_are() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme[readme.index("## Testing your workflows") :]
    shown = section[section.index("```python\n") + len("```python\n") : section.index("\n```\n")]
    assert shown + "\n" == (EXAMPLES / "test_renewal.py").read_text()


# --- payment webhook (a race of messages and a timer, a child run, published progress) ----------------------------


def test_payment_webhook_prints_what_its_docstring_says(tmp_path: Path) -> None:
    lines = run_example("payment_webhook.py", cwd=tmp_path)
    assert lines == [
        "o-1: waiting for payment (published: 'awaiting payment')",
        "o-1: the payment webhook arrives: {'amount': 4200, 'reference': 'pay-81'}",
        "o-1: {'status': 'shipped', 'paid': 4200, 'tracking': 'TRACK-o-1'}",
        "   its journal: publish stage, receive payment, receive cancel (withdrawn), sleep sleep (withdrawn),"
        " wait FIRST_COMPLETED, child ship_order (run o-1.5), publish stage",
        "o-2: nobody pays; an hour passes",
        "o-2: {'status': 'cancelled', 'reason': 'no payment within 3600 s'}",
        "o-3: the customer cancels: 'ordered twice'",
        "o-3: {'status': 'cancelled', 'reason': 'by the customer: ordered twice'}",
    ]
    assert list(tmp_path.iterdir()) == []


# --- digest ---------------------------------------------------------------------


def test_digest_runs_three_slots_through_a_rate_limited_queue(tmp_path: Path) -> None:
    lines = run_example("digest.py", cwd=tmp_path, DURABLE_DB=str(tmp_path / "digest.db"))
    digests = [re.fullmatch(r"digest@(\S+): mailed ada, bob, cy, dan, eve, fay over (\d+\.\d) s", line) for line in lines[:3]]
    assert all(digests), lines
    slots = [dt.datetime.fromisoformat(m[1]) for m in digests]  # type: ignore[index]
    assert [b - a for a, b in zip(slots, slots[1:])] == [dt.timedelta(seconds=2)] * 2  # consecutive slots
    assert all(float(m[2]) >= 0.9 for m in digests)  # type: ignore[index]  # six emails at four a second: over a second
    assert lines[3] == f"schedule digest: cron */2 * * * * *, last slot {digests[2][1]}"  # type: ignore[index]
