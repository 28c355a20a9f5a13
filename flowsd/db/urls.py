"""Small helpers for PostgreSQL connection URLs."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from flowsd.errors import UserError

SCHEMES = ("postgresql", "postgres")


def check_url(url: str) -> None:
    """Raise a one-line :class:`UserError` unless ``url`` is a PostgreSQL URL flowsd can use."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        shown = parts.scheme or "none"
        raise UserError(
            f"database URL {redact(url)!r} is not a PostgreSQL URL (scheme {shown}): "
            "expected postgresql://USER@HOST:PORT/DATABASE"
        )
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError as exc:
        raise UserError(f"database URL {redact(url)!r}: {exc}") from None


def with_database(url: str, database: str) -> str:
    """Return ``url`` pointing at ``database`` on the same server (query string kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database)))


def redact(url: str) -> str:
    """``url`` with any password replaced, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
