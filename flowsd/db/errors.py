"""What can go wrong with the database, decided in one place.

Two outcomes matter to flowsd:

* **unavailable**: the database cannot be used at the moment: unreachable, starting or
  shutting down, out of connections, the connection was lost or terminated (also by the
  server itself, e.g. after ``idle_in_transaction_session_timeout``), a statement timed out,
  or the connection is in a state asyncpg refuses to use (its ``InternalClientError``:
  "cannot switch to state ...; another operation is in progress", seen after the server shut
  the connection down under it). Every database-facing loop
  drops its connection and retries with backoff; nothing is fatal. :data:`DATABASE_ERRORS`
  is the ``except`` clause for it, :class:`DatabaseUnavailableError` what flowsd raises
  itself (from :func:`flowsd.db.connect.connect`).
* **refused**: the server answered and will not let this flowsd in: no such database, a wrong
  password or unknown role, no ``pg_hba.conf`` entry, no CONNECT privilege, or a URL that is
  not PostgreSQL's. Retrying cannot fix it: at start-up and in one-shot commands it is one
  line and exit status 2 (:class:`DatabaseRefusedError` is a :class:`~flowsd.errors.UserError`).
  A running daemon treats a refusal like an outage (the password may be rotated back) and
  logs it as an error.

A refusal of the *data* (SQLSTATE classes 22 and 23, e.g. an unknown ``meter_id``) is neither:
:func:`is_data_rejection` tells the appender to set the event aside.
"""

from __future__ import annotations

import asyncpg

from flowsd.errors import UserError


class DatabaseUnavailableError(Exception):
    """The database cannot be used now; worth a retry."""


class DatabaseRefusedError(UserError):
    """The server refused this flowsd for good (database, role, password, URL)."""


# Everything a statement or a connection can raise that means "the database is not usable
# now": asyncpg's three roots (server errors, interface errors, and InternalClientError,
# which derives only from Exception), the socket layer, timeouts, and flowsd's own error.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    DatabaseUnavailableError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

# Answers to a connection attempt that no retry will change.
_REFUSALS: tuple[type[Exception], ...] = (
    asyncpg.InvalidCatalogNameError,  # 3D000: the database does not exist
    asyncpg.InvalidAuthorizationSpecificationError,  # 28000/28P01: role, password, pg_hba
    asyncpg.InsufficientPrivilegeError,  # 42501: no CONNECT privilege
    asyncpg.ClientConfigurationError,  # a URL asyncpg cannot use
)


# admin_shutdown, crash_shutdown, cannot_connect_now: the server is stopping or starting;
# idle_in_transaction_session_timeout, transaction_timeout (PostgreSQL 17),
# idle_session_timeout: the server ended the session (:mod:`flowsd.db.connect`).
_SESSION_ENDED_STATES = frozenset({"57P01", "57P02", "57P03", "25P03", "25P04", "57P05"})


def is_refusal(exc: BaseException) -> bool:
    """Whether a failed connection attempt is final (see the module docstring)."""
    return isinstance(exc, _REFUSALS)


def is_connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection itself is gone (as opposed to a statement the
    server refused): a one-shot command reports it as such rather than as a bad statement."""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        return sqlstate[:2] == "08" or sqlstate in _SESSION_ENDED_STATES
    return isinstance(exc, DATABASE_ERRORS)


def lost_connection_in(exc: BaseException) -> BaseException | None:
    """The connection-lost error ``exc`` stands for, looking inside exception groups (a task
    group of several connections that all lost the server): None if anything else failed."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [lost_connection_in(inner) for inner in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
        return None
    return exc if is_connection_lost(exc) else None


def is_data_rejection(exc: BaseException) -> bool:
    """A refusal of the data itself (data exception, integrity violation), not of the moment."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and sqlstate[:2] in ("22", "23")


def describe(exc: BaseException) -> str:
    """One line for logs and messages: the first line of the error, or its type's name."""
    if isinstance(exc, DatabaseUnavailableError | DatabaseRefusedError):
        text = str(exc)
    else:
        lines = str(exc).strip().splitlines()
        text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text
