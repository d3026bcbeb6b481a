"""The web page in headless Chromium: see a pending prompt, answer it by clicking, see the run complete.

Drives Debian's chromium (/usr/bin/chromium, which .ci/run installs) through
Playwright; Playwright never downloads a browser of its own. Takes a screenshot
of the page every time; with DURABLE_UPDATE_SCREENSHOT=1 it also replaces
docs/screenshot.png (the one the README shows), so a plain test run leaves the
tree clean.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from helpers import wait_until
from servers import ROOT, durable_serve

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "screenshot.png"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no browser: Debian's chromium is not at /usr/bin/chromium (apt-get install chromium)"
)

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

EXPENSES = {
    "taxi": {"employee": "ada", "description": "taxi to the airport", "amount": "42.50"},
    "dinner": {"employee": "bob", "description": "team dinner", "amount": "640.00"},
    "laptop": {"employee": "ada", "description": "new laptop", "amount": "1899.00"},
}


def test_answer_a_prompt_in_the_page_and_watch_the_run_complete(tmp_path: Path) -> None:
    with durable_serve(str(tmp_path / "approval.db")) as base, httpx.Client(base_url=base, timeout=10) as http:
        for name, expense in EXPENSES.items():
            response = http.post("/workflows/approve_expense/runs", json={"args": [expense], "run_id": name})
            assert response.status_code == 202, response.text
        wait_until(lambda: len(http.get("/prompts").json()) == 2, what="the two approval prompts")

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1360, "height": 860})
                page.goto(f"{base}/#run=laptop")

                laptop = page.locator('article.prompt[data-run-id="laptop"]')
                expect(laptop).to_contain_text("Approve 1899.00 EUR for 'new laptop', by ada?")
                expect(page.locator("#run-status")).to_have_text("waiting")
                expect(page.locator(".timeline .record")).to_have_count(1)

                laptop.get_by_role("button", name="Yes").click()
                expect(laptop.get_by_role("button", name="Send yes")).to_be_focused()  # a second step: nothing sent yet
                laptop.get_by_role("button", name="Send yes").click()

                # The run's event stream brings the answer and the reimbursement; its end event the status.
                expect(page.locator("#run-status")).to_have_text("completed")
                expect(page.locator('.record[data-seq="0"]')).to_contain_text("answered")
                expect(page.locator('.record[data-seq="1"]')).to_contain_text("reimburse")
                expect(laptop).to_have_count(0)
                expect(page.locator("#prompt-count")).to_have_text("1")
                expect(page.locator('#runs tr[data-run-id="taxi"]')).to_contain_text("completed")
                shot = tmp_path / "screenshot.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 0
                if os.environ.get("DURABLE_UPDATE_SCREENSHOT") == "1":
                    shutil.copyfile(shot, SCREENSHOT)

                # Rejecting the dinner asks why, with a choice among the Literal's values.
                dinner = page.locator('article.prompt[data-run-id="dinner"]')
                dinner.get_by_role("button", name="No").click()
                dinner.get_by_role("button", name="Send no").click()
                reason = page.locator('article.prompt[data-run-id="dinner"][data-key="reason"]')
                reason.locator("select").select_option(label="no receipt")
                reason.get_by_role("button", name="Answer").click()
                page.locator('#runs tr[data-run-id="dinner"]').click()
                expect(page.locator("#run-status")).to_have_text("completed")
                expect(page.locator(".facts")).to_contain_text('"reason":"no receipt"')
                expect(page.locator("#prompts")).to_contain_text("No prompts are waiting for an answer.")
            finally:
                browser.close()

        run = http.get("/runs/laptop").json()
        assert (run["status"], run["result"]["approved"], run["result"]["by"]) == ("completed", True, "manager")


def test_answer_forms_follow_the_schema_and_show_refusals_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from durable.tokens import add_token

    tokens = str(tmp_path / "tokens")
    lea = add_token(tokens, "lea")
    monkeypatch.setenv("DURABLE_TOKENS", tokens)  # a server with tokens: the page signs in first
    here = Path(__file__).parent
    with durable_serve(str(tmp_path / "onboarding.db"), "onboarding:app", cwd=here) as base:
        auth = {"Authorization": f"Bearer {lea}"}
        response = httpx.post(f"{base}/workflows/onboarding/runs", json={"run_id": "team-1"}, headers=auth)
        assert response.status_code == 202, response.text

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page()
                page.goto(f"{base}/#run=team-1")
                page.get_by_label("Token").fill(lea)
                page.get_by_role("button", name="Sign in").click()
                expect(page.locator("#who-name")).to_have_text("lea")
                page.goto(f"{base}/#run=team-1")
                prompt = page.locator("article.prompt")
                error = prompt.locator(".form-error")

                # int: a number input; the server's refusal of 2.5 shows under the form.
                expect(prompt).to_contain_text("How many seats?")
                prompt.locator('input[type="number"]').fill("2.5")
                prompt.get_by_role("button", name="Answer").click()
                expect(error).to_contain_text("2.5 is not of type 'integer'")
                prompt.locator('input[type="number"]').fill("12")
                prompt.get_by_role("button", name="Answer").click()

                # str: a text input.
                expect(prompt).to_contain_text("What is the team called?")
                prompt.locator('input[type="text"]').fill("platform")
                prompt.get_by_role("button", name="Answer").click()

                # A Literal: a choice among its values.
                expect(prompt).to_contain_text("Which plan?")
                expect(prompt.locator("select")).to_have_value("")  # nothing chosen for the person
                prompt.get_by_role("button", name="Answer").click()
                expect(error).to_contain_text("Choose one.")
                prompt.locator("select").select_option(label="business")
                prompt.get_by_role("button", name="Answer").click()

                # A dataclass: a JSON editor, prefilled with its fields.
                expect(prompt).to_contain_text("Billing address?")
                # A dataclass: one labelled input per field, the Literal as a choice with nothing chosen yet.
                street, city = prompt.locator('[name="root[street]"]'), prompt.locator('[name="root[city]"]')
                kind = prompt.locator('select[name="root[kind]"]')
                expect(kind).to_have_value("")
                street.fill("1 Main St")
                prompt.get_by_role("button", name="Answer").click()
                expect(error).to_contain_text("To fix: city, kind.")
                expect(prompt.locator(".schema-form")).to_contain_text("Choose one.")  # at the field
                city.fill("Lyon")
                kind.select_option("office")
                prompt.get_by_role("button", name="Answer").click()

                expect(page.locator("#run-status")).to_have_text("completed")
                expect(page.locator(".facts")).to_contain_text('{"seats":12,"team":"platform","plan":"business","city":"Lyon"}')
                expect(page.locator(".timeline .record")).to_have_count(4)
                expect(page.locator('.record[data-seq="3"]')).to_contain_text("by lea (page)")
            finally:
                browser.close()


def test_a_run_has_the_buttons_its_status_allows(tmp_path: Path) -> None:
    here = Path(__file__).parent
    fixed = tmp_path / "fixed"
    os.environ["REFUNDS_FIXED"] = str(fixed)
    try:
        with durable_serve(str(tmp_path / "refunds.db"), "refunds:app", cwd=here) as base, httpx.Client(base_url=base) as http:
            assert http.post("/workflows/refund_order/runs", json={"args": ["o-1"], "run_id": "broken"}).status_code == 202
            assert http.post("/workflows/review/runs", json={"args": ["o-2"], "run_id": "asks"}).status_code == 202
            wait_until(lambda: http.get("/runs/broken").json()["status"] == "failed", what="the refund to fail")
            wait_until(lambda: http.get("/runs/asks").json()["status"] == "waiting", what="the review prompt")

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
                try:
                    page = browser.new_page()
                    page.on("dialog", lambda dialog: dialog.accept())  # "Retry run …?", "Cancel run …?"
                    actions = page.locator(".run-head .actions button")

                    page.goto(f"{base}/#run=broken")
                    expect(page.locator("#run-status")).to_have_text("failed")
                    expect(actions).to_have_text(["Retry"])
                    expect(page.locator(".record .error details summary").first).to_have_text("traceback")  # expandable
                    fixed.write_text("deployed")  # the fix
                    actions.get_by_text("Retry").click()
                    expect(page.locator("#run-status")).to_have_text("completed")
                    expect(actions).to_have_count(0)

                    page.locator('#runs tr[data-run-id="asks"]').click()
                    expect(page.locator("#run-status")).to_have_text("waiting")
                    expect(actions).to_have_text(["Pause", "Cancel run"])
                    actions.get_by_text("Pause").click()
                    expect(page.locator("#run-status")).to_have_text("paused")
                    expect(actions).to_have_text(["Resume", "Cancel run"])
                    actions.get_by_text("Resume").click()
                    expect(page.locator("#run-status")).to_have_text("waiting")
                    actions.get_by_text("Cancel run").click()
                    expect(page.locator("#run-status")).to_have_text("cancelled")
                finally:
                    browser.close()
            assert http.get("/runs/broken").json()["result"] == "refunded o-1"
            assert [r["kind"] for r in http.get("/runs/broken").json()["set_aside"]] == ["run", "step"]
    finally:
        os.environ.pop("REFUNDS_FIXED", None)


def test_a_run_shows_what_it_published_and_links_its_child_and_parent(tmp_path: Path) -> None:
    here = Path(__file__).parent
    with durable_serve(str(tmp_path / "claims.db"), "refunds:app", cwd=here) as base, httpx.Client(base_url=base) as http:
        assert http.post("/workflows/claim/runs", json={"args": ["o-3"], "run_id": "c"}).status_code == 202
        wait_until(lambda: http.get("/runs/c.1").status_code == 200, what="the child run")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page()
                page.goto(f"{base}/#run=c")
                expect(page.locator(".facts")).to_contain_text("published stage")
                expect(page.locator(".facts")).to_contain_text("reviewing o-3")
                page.locator('.record[data-seq="1"] a').click()  # the child record links to the child run
                expect(page.locator(".run-head h2")).to_have_text("c.1")
                expect(page.locator(".facts")).to_contain_text("parent")
                page.locator(".facts a").click()
                expect(page.locator(".run-head h2")).to_have_text("c")
            finally:
                browser.close()


def test_the_page_shows_queues_and_schedules_and_pauses_a_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULED_LOG", str(tmp_path / "marks"))
    here = Path(__file__).parent
    with durable_serve(str(tmp_path / "scheduled.db"), "scheduled:app", cwd=here) as base, httpx.Client(base_url=base, timeout=10) as http:
        assert http.post("/workflows/report/runs", json={"run_id": "weekly"}).status_code == 202
        wait_until(lambda: http.get("/runs/weekly").json()["status"] == "waiting", what="the report to wait")
        wait_until(lambda: http.get("/schedules").json()[0]["last"], what="a first slot fired")

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1360, "height": 1000})
                page.goto(base)
                queue = page.locator('#queues tr[data-queue="reports"]')
                expect(queue).to_contain_text("1 waiting")
                expect(queue).to_contain_text("1 at once, 10 per 60 s")
                queue.click()  # the runs list shows that queue's runs only
                expect(page.locator("#queue-filter")).to_have_text("queue reports ×")
                expect(page.locator("#runs tr")).to_have_count(1)
                expect(page.locator('#runs tr[data-run-id="weekly"]')).to_have_count(1)
                page.locator("#queue-filter").click()
                expect(page.locator('#runs tr[data-run-id^="every_second@"]').first).to_be_visible()

                schedule = page.locator('#schedules tr[data-schedule="every_second"]')
                expect(schedule).to_contain_text("* * * * * *")
                schedule.get_by_role("button", name="Pause").click()
                expect(schedule).to_contain_text("paused")
                expect(schedule.get_by_role("button", name="Resume")).to_be_visible()
            finally:
                browser.close()
        assert http.get("/schedules").json()[0]["paused"] is True


def test_a_person_signs_in_sees_what_is_theirs_and_their_answer_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from durable.tokens import add_token

    tokens = str(tmp_path / "tokens")
    ada = add_token(tokens, "ada")
    monkeypatch.setenv("DURABLE_TOKENS", tokens)
    here = Path(__file__).parent
    auth = {"Authorization": f"Bearer {ada}"}
    with durable_serve(str(tmp_path / "team.db"), "team:app", cwd=here) as base, httpx.Client(base_url=base, timeout=10, headers=auth) as http:
        for run_id, who in (("r-ada", "ada"), ("r-bob", "bob")):
            assert http.post("/workflows/refund/runs", json={"args": [40, who], "run_id": run_id}).status_code == 202
        wait_until(lambda: len(http.get("/prompts").json()) == 2, what="the two prompts")

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page()
                page.goto(base)
                expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
                page.get_by_label("Token").fill("not the token")
                page.get_by_role("button", name="Sign in").click()
                expect(page.locator(".form-error")).to_contain_text("That token is not one of this server's")
                page.get_by_label("Token").fill(ada)
                page.get_by_label("Token").press("Enter")
                expect(page.locator("#who-name")).to_have_text("ada")
                expect(page.locator("article.prompt")).to_have_count(2)
                page.get_by_role("button", name="Assigned to me").click()
                expect(page.locator("article.prompt")).to_have_count(1)
                mine = page.locator('article.prompt[data-run-id="r-ada"]')
                expect(mine).to_contain_text("for ada")
                mine.get_by_role("button", name="Yes").click()
                mine.get_by_role("button", name="Send yes").click()
                expect(page.locator("#prompts")).to_contain_text("No prompts are assigned to ada.")
                page.goto(f"{base}/#run=r-ada")
                expect(page.locator("#run-status")).to_have_text("completed")
                expect(page.locator('.record[data-seq="0"]')).to_contain_text("by ada (page)")
                page.get_by_role("button", name="Sign out").click()
                expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            finally:
                browser.close()
        [entry] = http.get("/runs/r-ada/export").json()["prompt_log"]
        assert (entry["by"], entry["via"], entry["value"]) == ("ada", "page", True)


def test_start_a_run_from_its_form_and_answer_by_keyboard_on_a_phone(tmp_path: Path) -> None:
    here = Path(__file__).parent
    with durable_serve(str(tmp_path / "team.db"), "team:app", cwd=here) as base, httpx.Client(base_url=base, timeout=10) as http:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
                page.goto(base)
                # Start a run from the workflow's argument schema: one field per argument.
                page.locator("#start-workflow").select_option("refund")
                page.locator('#start-fields [name="root[amount]"]').fill("75")
                page.locator("#start-form").get_by_role("button", name="Start").click()
                expect(page.locator("#start-error")).to_contain_text("To fix: owner.")
                page.locator('#start-fields [name="root[owner]"]').fill("ada")
                page.locator("#start-form").get_by_role("button", name="Start").click()
                # The run's page replaces the lists on a phone; the URL names the run, so it can be shared.
                expect(page.locator("#run-status")).to_have_text("waiting")
                assert "#run=" in page.url
                expect(page.locator(".side")).to_be_hidden()
                page.get_by_role("button", name="Back to the runs").click()
                expect(page.locator("#run")).to_be_hidden()
                expect(page.locator("article.prompt")).to_contain_text("Refund 75 EUR?")

                # Answer by keyboard alone: Tab to Yes, Enter, then Enter on "Send yes" (which has the focus).
                for _ in range(60):
                    page.keyboard.press("Tab")
                    if page.evaluate("document.activeElement.textContent") == "Yes":
                        break
                else:
                    raise AssertionError("Tab never reached the Yes button")
                page.keyboard.press("Enter")
                expect(page.get_by_role("button", name="Send yes")).to_be_focused()
                page.keyboard.press("Enter")
                expect(page.locator("#prompts")).to_contain_text("No prompts are waiting for an answer.")
                shot = tmp_path / "phone.png"
                page.locator("#runs tr").first.click()
                expect(page.locator("#run-status")).to_have_text("completed")
                page.screenshot(path=str(shot), full_page=True)
                if os.environ.get("DURABLE_UPDATE_SCREENSHOT") == "1":
                    shutil.copyfile(shot, SCREENSHOT.with_name("screenshot-phone.png"))
            finally:
                browser.close()
        [run] = http.get("/runs").json()
        assert (run["args"], run["kwargs"], run["status"]) == ([], {"amount": 75, "owner": "ada"}, "completed")


def test_what_a_person_types_stays_when_another_prompt_is_answered(tmp_path: Path) -> None:
    here = Path(__file__).parent
    with durable_serve(str(tmp_path / "onboarding.db"), "onboarding:app", cwd=here) as base, httpx.Client(base_url=base, timeout=10) as http:
        for run_id in ("team-a", "team-b"):
            assert http.post("/workflows/onboarding/runs", json={"run_id": run_id}).status_code == 202
        wait_until(lambda: len(http.get("/prompts").json()) == 2, what="both seat prompts")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page()
                page.goto(base)
                typing = page.locator('article.prompt[data-run-id="team-a"] input[type="number"]')
                typing.fill("7")
                typing.focus()
                assert http.post("/runs/team-b/prompts/seats", json={"value": 3}).status_code == 200  # someone else
                expect(page.locator('article.prompt[data-run-id="team-b"] >> text=What is the team called?')).to_be_visible()
                expect(typing).to_have_value("7")  # the card was not rebuilt: the text and the focus stayed
                expect(typing).to_be_focused()
            finally:
                browser.close()
