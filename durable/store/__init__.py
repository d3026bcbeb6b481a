"""Where runs and records are kept: an SQLite file, or a PostgreSQL database shared by many hosts.

:func:`open_store` picks the store from the target: a ``postgresql://`` (or
``postgres://``) URL is PostgreSQL, anything else a file path for SQLite.
The engine sees only the :class:`~.base.Store` interface.
"""

from __future__ import annotations

import urllib.parse

from .base import Store

__all__ = ["Store", "is_url", "make_store", "redact"]

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(target: str) -> bool:
    return target.startswith(URL_SCHEMES)


def redact(target: str) -> str:
    """A target as people may see it: a URL without its password."""
    if not is_url(target):
        return target
    scheme, _, rest = target.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return target
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Separate durable's own options (pool_size, statement_cache_size) from the URL the driver gets."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in ("pool_size", "statement_cache_size")}
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k not in ours])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), ours


def make_store(target: str, durability: str = "normal", read_only: bool = False) -> Store:
    """The store for a path (SQLite) or a postgresql:// URL (PostgreSQL, needs durable[postgres])."""
    if is_url(target):
        from .postgres import PostgresStore  # imports the driver, with an install hint when it is missing

        return PostgresStore(target, durability, read_only)
    from .sqlite import SQLiteStore

    return SQLiteStore(target, durability, read_only)
