"""Who a request comes from: a bearer token, or the page's session; sign-in, sign-out, and CSRF (design §10).

With tokens configured (see :mod:`durable.tokens`) every request needs one,
except ``/health``, the page's assets, and signing in. An API client sends
``Authorization: Bearer <token>``; a person signs in on the page with a token
and gets a session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS), and
each POST of the page also carries the ``X-CSRF-Token`` header, the value of
the ``durable_csrf`` cookie, which another site can neither read nor send.

The name found is ``request.state.who`` (None without tokens); the channel,
``request.state.via``, is ``page`` for the page and ``http`` for other clients.
Both are what an answer records.
"""

from __future__ import annotations

import html
import urllib.parse
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .tokens import SESSION_SECONDS, TOKEN_ENV, TOKENS_ENV, Tokens

__all__ = ["CSRF_COOKIE", "CSRF_HEADER", "Identity", "SESSION_COOKIE", "router"]

SESSION_COOKIE = "durable_session"
CSRF_COOKIE = "durable_csrf"
CSRF_HEADER = "x-csrf-token"
PAGE_HEADER = "x-durable-client"  # the page says it is the page: a channel label, not a credential
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PATHS = frozenset({"/health", "/login", "/logout"})
SIGN_IN = resources.files(__package__) / "web" / "signin.html"

router = APIRouter(include_in_schema=False)


def refusal(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def sign_in_page(status: int = 200, problem: str = "") -> HTMLResponse:
    text = SIGN_IN.read_text(encoding="utf-8")
    shown = f'<p class="form-error" role="alert">{html.escape(problem)}</p>' if problem else ""
    return HTMLResponse(text.replace("<!--problem-->", shown), status_code=status)


class Identity:
    """Decide who each request is (or refuse it: 401 without a valid token or session, 403 without the CSRF token)."""

    def __init__(self, app: ASGIApp, tokens: Tokens) -> None:
        self.app, self.tokens = app, tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        state = scope.setdefault("state", {})
        state["who"], state["via"] = None, "page" if headers.get(PAGE_HEADER) == "page" else "http"
        path = scope["path"]
        if not self.tokens or path in OPEN_PATHS or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given.strip():
            state["who"] = self.tokens.who(given.strip())
            if state["who"] is None:
                await self._unauthorized(scope, receive, send, "That bearer token is not one of this server's.")
                return
            await self.app(scope, receive, send)
            return
        cookie = Request(scope).cookies.get(SESSION_COOKIE, "")
        name = self.tokens.session_name(cookie) if cookie else None
        if name is not None:
            if scope["method"] not in SAFE_METHODS and headers.get(CSRF_HEADER, "") != self.tokens.csrf(cookie):
                detail = "A POST from the page needs its X-CSRF-Token header; reload the page and try again."
                await refusal(403, "CSRFRefused", detail)(scope, receive, send)
                return
            state["who"], state["via"] = name, "page"
            await self.app(scope, receive, send)
            return
        if path == "/" and scope["method"] == "GET":
            await sign_in_page()(scope, receive, send)
            return
        await self._unauthorized(scope, receive, send, "")

    async def _unauthorized(self, scope: Scope, receive: Receive, send: Send, why: str) -> None:
        detail = (
            f"{why + ' ' if why else ''}This server needs 'Authorization: Bearer <token>' (a token of ${TOKENS_ENV} "
            f"or ${TOKEN_ENV}), or a session: sign in on its page."
        )
        await refusal(401, "Unauthorized", detail, {"WWW-Authenticate": "Bearer"})(scope, receive, send)


def _tokens(request: Request) -> Tokens:
    return request.app.state.tokens  # type: ignore[no-any-return]


@router.post("/login")
async def login(request: Request) -> Any:
    """Sign in with a token (the form field `token`): a session cookie, and back to the page."""
    tokens = _tokens(request)
    if not tokens:
        return RedirectResponse("/", status_code=303)
    form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    name = tokens.who(token) if token else None
    if name is None:
        return sign_in_page(401, "That token is not one of this server's. Ask whoever runs it for yours.")
    session = tokens.session(name)
    secure = request.url.scheme == "https"
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, session, max_age=SESSION_SECONDS, httponly=True, samesite="strict", secure=secure)
    # Readable by the page's script (not HttpOnly), sent back as X-CSRF-Token: a site elsewhere can do neither.
    response.set_cookie(CSRF_COOKIE, tokens.csrf(session), max_age=SESSION_SECONDS, samesite="strict", secure=secure)
    return response


@router.post("/logout")
async def logout() -> Any:
    """End the session: its cookies are cleared, and the page shows the sign-in form again."""
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
    response.delete_cookie(CSRF_COOKIE, samesite="strict")
    return response


@router.get("/me")
async def me(request: Request) -> Any:
    """Who the page is signed in as (None without tokens), for "assigned to me"."""
    return {"name": request.state.who, "tokens": bool(_tokens(request))}
