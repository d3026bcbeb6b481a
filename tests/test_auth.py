"""People and tokens over HTTP, on both stores: who answered, sign-in, the session cookie, CSRF, `durable token add`."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from click.testing import CliRunner

import durable
from durable.cli import main
from durable.http import create_app
from durable.tokens import Tokens, add_token
from helpers import eventually, make_app


def team_app(db: str) -> durable.App:
    app = make_app(db)

    @app.workflow
    async def refund(ctx: durable.Context, amount: int) -> bool:
        return await ctx.ask(f"Refund {amount} EUR?", type=bool, key="refund", assignee="ada")

    return app


@pytest.fixture
def tokens_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    path = str(tmp_path / "tokens")
    people = {name: add_token(path, name) for name in ("ada", "bob")}
    monkeypatch.setenv("DURABLE_TOKENS", path)
    monkeypatch.setenv("DURABLE_SESSION_SECRET", "the server's secret")  # so a test can make sessions too
    monkeypatch.delenv("DURABLE_TOKEN", raising=False)
    return people


@pytest.fixture
async def server(db: str, tokens_file: dict[str, str]) -> AsyncIterator[tuple[durable.App, httpx.AsyncClient]]:
    app = team_app(db)
    async with LifespanManager(create_app(app)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


async def asked(client: httpx.AsyncClient, token: str, run_id: str) -> None:
    async def listed() -> bool:
        prompts = (await client.get("/prompts", headers=bearer(token))).json()
        return any(p["run_id"] == run_id for p in prompts)

    await eventually(listed, what=f"the prompt of {run_id}")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_answer_over_http_records_the_tokens_name(server: tuple[durable.App, httpx.AsyncClient], tokens_file: dict[str, str]) -> None:
    app, client = server
    ada, bob = tokens_file["ada"], tokens_file["bob"]
    assert (await client.post("/workflows/refund/runs", json={"args": [30], "run_id": "r1"}, headers=bearer(bob))).status_code == 202
    await asked(client, bob, "r1")
    mine = (await client.get("/prompts", params={"assignee": "ada"}, headers=bearer(ada))).json()
    assert [(p["run_id"], p["assignee"]) for p in mine] == [("r1", "ada")]
    assert (await client.get("/prompts", params={"assignee": "bob"}, headers=bearer(ada))).json() == []
    moved = await client.post("/runs/r1/prompts/refund/assignee", json={"assignee": "bob"}, headers=bearer(ada))
    assert moved.json() == {"run_id": "r1", "key": "refund", "assignee": "bob"}
    answered = await client.post("/runs/r1/prompts/refund", json={"value": True}, headers=bearer(bob))
    assert answered.json() == {"run_id": "r1", "key": "refund", "value": True, "by": "bob"}
    assert await durable.RunHandle(app, "r1").result() is True
    exported = (await client.get("/runs/r1/export", headers=bearer(ada))).json()
    assert [(e["action"], e["value"], e["by"], e["via"]) for e in exported["prompt_log"]] == [
        ("reassigned", "bob", "ada", "http"), ("answered", True, "bob", "http"),
    ]  # fmt: skip
    ask = exported["run"]["steps"][0]
    assert (ask["by"], ask["via"], ask["assignee"]) == ("bob", "http", "bob")


async def test_sign_in_gives_a_session_cookie_and_the_page_must_send_its_csrf_token(
    server: tuple[durable.App, httpx.AsyncClient], tokens_file: dict[str, str]
) -> None:
    app, client = server
    page = await client.get("/")
    assert page.status_code == 200 and 'name="token"' in page.text  # the sign-in form, not a JSON 401
    refused = await client.post("/login", content="token=wrong", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert refused.status_code == 401 and "That token is not one of this server&#x27;s" in refused.text
    signed = await client.post(
        "/login", content=f"token={tokens_file['ada']}", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert (signed.status_code, signed.headers["location"]) == (303, "/")
    cookies = {c.split("=", 1)[0]: c.lower() for c in signed.headers.get_list("set-cookie")}
    assert "httponly" in cookies["durable_session"] and "samesite=strict" in cookies["durable_session"]
    assert "httponly" not in cookies["durable_csrf"] and "samesite=strict" in cookies["durable_csrf"]
    assert "secure" not in cookies["durable_session"]  # plain HTTP here; Secure is set when served over HTTPS
    assert (await client.get("/me")).json() == {"name": "ada", "tokens": True}
    assert "runs, journals and prompts" in (await client.get("/")).text  # signed in: the page itself
    # A POST with the session but without the CSRF token (what another site's form would send) is refused.
    start = await client.post("/workflows/refund/runs", json={"args": [5], "run_id": "r2"})
    assert start.status_code == 403 and start.json()["error"] == "CSRFRefused"
    assert await app.list_runs() == []
    csrf = {"X-CSRF-Token": client.cookies["durable_csrf"]}
    assert (await client.post("/workflows/refund/runs", json={"args": [5], "run_id": "r2"}, headers=csrf)).status_code == 202
    await eventually(lambda: _prompted(app, "r2"), what="the prompt of r2")
    assert (await client.post("/runs/r2/prompts/refund", json={"value": False}, headers=csrf)).json()["by"] == "ada"
    [entry] = (await app.export("r2"))["prompt_log"]
    assert (entry["by"], entry["via"]) == ("ada", "page")  # a session is the page's
    out = await client.post("/logout")
    assert out.status_code == 303
    client.cookies.clear()
    assert (await client.get("/runs")).status_code == 401


async def _prompted(app: durable.App, run_id: str) -> bool:
    return bool(await app.prompts(run_id))


async def test_a_forged_or_expired_session_is_refused(server: tuple[durable.App, httpx.AsyncClient]) -> None:
    _, client = server
    tokens = Tokens.from_env()  # the server's secret: its sessions are the server's
    assert (await client.get("/runs", headers={"Cookie": f"durable_session={tokens.session('ada')}"})).status_code == 200
    other = Tokens(os.environ["DURABLE_TOKENS"], secret="another secret")
    for cookie in [
        "ada:99999999999:00:" + "0" * 64,  # a MAC made up
        tokens.session("ada", now=1.0),  # expired (in 1970)
        tokens.session("carol"),  # nobody of that name
        other.session("ada"),  # signed with another secret
    ]:
        response = await client.get("/runs", headers={"Cookie": f"durable_session={cookie}"})
        assert response.status_code == 401, cookie


def test_tokens_are_stored_hashed_the_file_is_private_and_read_again_when_it_changes(tmp_path: Path) -> None:
    path = str(tmp_path / "tokens")
    ada = add_token(path, "ada")
    text = Path(path).read_text()
    assert ada not in text and text.startswith("ada ") and len(text.split()[1]) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    tokens = Tokens(path)
    assert tokens.who(ada) == "ada" and tokens.who("guess") is None
    session = tokens.session("ada")
    assert tokens.session_name(session) == "ada"
    bob = add_token(path, "bob")
    assert tokens.who(bob) == "bob"  # no restart
    Path(path).write_text(f"bob {text.split()[1].replace(text.split()[1], 'f' * 64)}\n")
    assert tokens.who(ada) is None and tokens.session_name(session) is None  # ada removed: her session ends too
    Path(path).write_text("ada not-a-hash\n")
    with pytest.raises(ValueError, match=r"line 1: expected 'NAME SHA256_HEX_OF_TOKEN'"):
        tokens.who(ada)


def test_durable_token_add_prints_the_token_once(tmp_path: Path) -> None:
    path = str(tmp_path / "tokens")
    result = CliRunner().invoke(main, ["token", "add", "ci-bot", "--file", path])
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert Tokens(path).who(secret) == "ci-bot"
    again = CliRunner().invoke(main, ["token", "add", "ci-bot", "--file", path])
    assert again.exit_code == 1 and "'ci-bot' has a token in" in again.output
    bad = CliRunner().invoke(main, ["token", "add", "two words", "--file", path])
    assert bad.exit_code == 1 and "A token's name is 1 to 64 letters" in bad.output


async def test_over_https_the_session_cookie_is_secure(db: str, tokens_file: dict[str, str]) -> None:
    async with LifespanManager(create_app(team_app(db))) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://durable.example") as client:
            signed = await client.post(
                "/login", content=f"token={tokens_file['bob']}", headers={"Content-Type": "application/x-www-form-urlencoded"}
            )
    cookies = {c.split("=", 1)[0]: c.lower() for c in signed.headers.get_list("set-cookie")}
    assert "; secure" in cookies["durable_session"] and "; secure" in cookies["durable_csrf"]
