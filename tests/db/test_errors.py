"""One place decides what a database error means: refused (fatal at start-up), unavailable
(retry), a lost connection (one line in a command), a refusal of the data (set aside)."""

from __future__ import annotations

import ssl

import asyncpg
import pytest

from flowsd.db.connect import connection_failure
from flowsd.db.errors import (
    DATABASE_ERRORS,
    DatabaseRefusedError,
    DatabaseUnavailableError,
    is_connection_lost,
    is_data_rejection,
    lost_connection_in,
)
from flowsd.errors import UserError

URL = "postgresql://flowsd:secret@db.example:5432/flows"


def test_asyncpg_internal_client_error_is_a_database_error() -> None:
    # It derives from Exception only, and escaped every retry loop before this family.
    error = asyncpg.InternalClientError("cannot switch to state 15; another operation (2)")
    assert isinstance(error, DATABASE_ERRORS)
    assert is_connection_lost(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InvalidCatalogNameError('database "flows" does not exist'),
        asyncpg.InvalidPasswordError('password authentication failed for user "flowsd"'),
        asyncpg.InvalidAuthorizationSpecificationError('no pg_hba.conf entry for host "x"'),
        asyncpg.ClientConfigurationError('invalid DSN: scheme is expected to be "postgresql"'),
        ValueError("invalid literal for int() with base 10: 'port'"),
    ],
)
def test_refusals_are_user_errors_without_the_password(error: Exception) -> None:
    classified = connection_failure(URL, error)
    assert isinstance(classified, DatabaseRefusedError) and isinstance(classified, UserError)
    assert "secret" not in str(classified) and "flowsd:***@db.example" in str(classified)


def test_a_certificate_that_fails_verification_is_refused() -> None:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    classified = connection_failure(URL, error)
    assert isinstance(classified, DatabaseRefusedError)
    assert str(classified).startswith("cannot connect to postgresql://flowsd:***@db.example")


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.InternalClientError("cannot switch to state 11"),
    ],
)
def test_everything_else_is_unavailable(error: Exception) -> None:
    classified = connection_failure(URL, error)
    assert isinstance(classified, DatabaseUnavailableError)
    assert not isinstance(classified, UserError)
    assert str(classified).startswith("cannot connect to postgresql://flowsd:***@db.example")


def test_lost_connections_inside_task_groups_are_found() -> None:
    lost = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")
    assert lost_connection_in(ExceptionGroup("lanes", [lost, OSError(104, "reset")])) is lost
    bad = asyncpg.DeadlockDetectedError("deadlock detected")
    assert lost_connection_in(ExceptionGroup("lanes", [lost, bad])) is None
    assert lost_connection_in(bad) is None
    assert lost_connection_in(asyncpg.AdminShutdownError("terminating connection")) is not None


def test_data_rejections_are_classes_22_and_23() -> None:
    assert is_data_rejection(asyncpg.ForeignKeyViolationError("meter_id"))
    assert is_data_rejection(asyncpg.NumericValueOutOfRangeError("out of range"))
    assert not is_data_rejection(asyncpg.QueryCanceledError("statement timeout"))
    assert not is_data_rejection(OSError())
