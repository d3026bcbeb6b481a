"""Who is asking: named tokens for people and services, and the page's signed sessions.

``$DURABLE_TOKENS`` names a file with one line per person or service,
``NAME SHA256_HEX_OF_TOKEN`` (``durable token add NAME`` appends one and
prints the token, once); ``$DURABLE_TOKEN`` alone is one token named
``token``. Tokens are never stored, only their SHA-256; a token given is
hashed and compared with every entry in constant time. The file is read again
when it changes, so a person added or removed counts at their next request.

A session (the page's cookie, after signing in with a token) is
``NAME:EXPIRES:NONCE:MAC``, the MAC keyed by the server's secret and the
token's hash: removing a person's line ends their sessions too. The secret is
``$DURABLE_SESSION_SECRET``, or one drawn when the server starts (sessions then
end when it restarts). The CSRF token the page sends with each POST is a MAC
of the session.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from pathlib import Path

__all__ = ["SESSION_SECONDS", "TOKENS_ENV", "TOKEN_ENV", "Tokens", "add_token", "digest"]

TOKEN_ENV = "DURABLE_TOKEN"
TOKENS_ENV = "DURABLE_TOKENS"
SECRET_ENV = "DURABLE_SESSION_SECRET"
SESSION_SECONDS = 12 * 3600  # a working day: sign in again the next morning
NAME = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _read(path: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"${TOKENS_ENV} names {path!r}, which cannot be read ({exc.strerror}).") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not NAME.fullmatch(parts[0]) or not re.fullmatch(r"[0-9a-f]{64}", parts[1]):
            raise ValueError(
                f"{path}, line {number}: expected 'NAME SHA256_HEX_OF_TOKEN' (a name of letters, digits and _.@+-, "
                "then 64 lowercase hex digits). Add people with: durable token add NAME"
            )
        if parts[0] in entries:
            raise ValueError(f"{path}, line {number}: {parts[0]!r} is named twice; each name has one token.")
        entries[parts[0]] = parts[1]
    return entries


class Tokens:
    """The tokens the server accepts, from the environment; falsy when none is configured (no identity at all)."""

    def __init__(self, path: str | None = None, single: str | None = None, secret: str | None = None) -> None:
        self.path, self.single = path, single
        self._secret = (secret or secrets.token_hex(32)).encode()
        self._seen: tuple[int, int] | None = None
        self._entries: dict[str, str] = {}
        self._load()

    @classmethod
    def from_env(cls) -> Tokens:
        return cls(os.environ.get(TOKENS_ENV) or None, os.environ.get(TOKEN_ENV) or None, os.environ.get(SECRET_ENV))

    def __bool__(self) -> bool:
        return bool(self.path or self.single)

    def _load(self) -> dict[str, str]:
        if self.path is not None:
            stat = os.stat(self.path)
            if (stat.st_mtime_ns, stat.st_size) != self._seen:
                self._entries, self._seen = _read(self.path), (stat.st_mtime_ns, stat.st_size)
        entries = dict(self._entries)
        if self.single:
            entries.setdefault("token", digest(self.single))
        return entries

    def who(self, token: str) -> str | None:
        """The name of `token`, or None; every entry is compared, so the time taken says nothing of which matched."""
        given, found = digest(token).encode(), None
        for name, stored in self._load().items():
            if hmac.compare_digest(given, stored.encode()):
                found = name
        return found

    def _mac(self, name: str, text: str) -> str | None:
        stored = self._load().get(name)
        if stored is None:
            return None
        key = hmac.new(self._secret, stored.encode(), hashlib.sha256).digest()
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    def session(self, name: str, now: float | None = None) -> str:
        body = f"{name}:{int((now or time.time()) + SESSION_SECONDS)}:{secrets.token_hex(8)}"
        return f"{body}:{self._mac(name, body)}"

    def session_name(self, cookie: str, now: float | None = None) -> str | None:
        """The signed-in name of a session cookie still valid, else None."""
        name, _, rest = cookie.partition(":")
        body, _, mac = cookie.rpartition(":")
        expires = rest.split(":", 1)[0]
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        expected = self._mac(name, body)
        return name if expected is not None and hmac.compare_digest(expected, mac) else None

    def csrf(self, cookie: str) -> str:
        name = cookie.partition(":")[0]
        return (self._mac(name, "csrf:" + cookie) or "")[:32]


def add_token(path: str, name: str) -> str:
    """Append a new token for `name` to the tokens file (created, readable by its owner only); return the token."""
    if not NAME.fullmatch(name):
        raise ValueError(f"A token's name is 1 to 64 letters, digits and _.@+- (as 'ada' or 'ci-bot'), not {name!r}.")
    if Path(path).exists() and name in _read(path):
        raise ValueError(f"{name!r} has a token in {path} already. Remove its line first to give them a new one.")
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(f"{name} {digest(token)}\n")
    return token
