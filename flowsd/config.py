"""Typed configuration: a TOML file decoded by msgspec into frozen structs.

Every setting has a default, so an empty file (or none at all) is a valid configuration.
Unknown keys and wrong types are rejected with a message naming the key and the file.
``FLOWSD_DATABASE_URL`` overrides ``[database] url``; ``STATE_DIRECTORY`` (set by systemd's
``StateDirectory=``) supplies the state directory when the file does not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from flowsd.errors import ConfigError

DATABASE_URL_ENV = "FLOWSD_DATABASE_URL"
CONFIG_PATH_ENV = "FLOWSD_CONFIG"

Seconds = Annotated[float, msgspec.Meta(ge=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every section: immutable, and unknown keys are errors."""


class DatabaseConfig(_Section, frozen=True):
    # None means "start the embedded PostgreSQL under the state directory".
    url: str | None = None
    pool_min_size: PositiveInt = 2
    pool_max_size: PositiveInt = 8
    connect_timeout_seconds: Seconds = 10.0
    # Delay between reconnect attempts while the database is unreachable (grows to the max).
    reconnect_initial_seconds: Seconds = 0.5
    reconnect_max_seconds: Seconds = 30.0


class StateConfig(_Section, frozen=True):
    # Where the spill journal and the embedded database live. Empty: $STATE_DIRECTORY, else ./.state
    directory: str = ""


class LoggingConfig(_Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: JSON when stderr is not a terminal, coloured console lines when it is.
    format: Literal["auto", "json", "console"] = "auto"


class ManagementConfig(_Section, frozen=True):
    # Address of the HTTP endpoint serving /metrics, /healthz and /readyz. Empty disables it.
    listen: str = "127.0.0.1:9469"


class Config(_Section, frozen=True):
    database: DatabaseConfig = DatabaseConfig()
    state: StateConfig = StateConfig()
    logging: LoggingConfig = LoggingConfig()
    management: ManagementConfig = ManagementConfig()

    @property
    def state_directory(self) -> Path:
        if self.state.directory:
            return Path(self.state.directory)
        return Path(os.environ.get("STATE_DIRECTORY") or ".state")


def decode_config(text: str | bytes, *, source: str = "<config>") -> Config:
    """Decode TOML text into a :class:`Config`, naming ``source`` in any error."""
    try:
        return msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None


def _describe(exc: msgspec.ValidationError) -> str:
    # msgspec says "... - at `$.database.pool_max_size`"; operators think in TOML keys.
    message = str(exc)
    head, sep, where = message.rpartition(" - at `$.")
    if not sep:
        return message
    return f"key '{where.rstrip('`')}': {head}"


def load_config(path: str | Path | None = None, *, environ: dict[str, str] | None = None) -> Config:
    """Load the configuration from ``path`` (or ``$FLOWSD_CONFIG``) and apply env overrides.

    With neither, the built-in defaults are used: the embedded database and ./.state.
    """
    env = os.environ if environ is None else environ
    chosen = path if path is not None else env.get(CONFIG_PATH_ENV)
    if chosen:
        file = Path(chosen)
        try:
            text = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read configuration: {exc.strerror}") from None
        config = decode_config(text, source=str(file))
    else:
        config = Config()
    url = env.get(DATABASE_URL_ENV)
    if url:
        config = msgspec.structs.replace(
            config, database=msgspec.structs.replace(config.database, url=url)
        )
    return config


def with_database_url(config: Config, url: str | None) -> Config:
    """Return ``config`` with the database URL replaced when ``url`` is given (CLI flag)."""
    if not url:
        return config
    return msgspec.structs.replace(
        config, database=msgspec.structs.replace(config.database, url=url)
    )
