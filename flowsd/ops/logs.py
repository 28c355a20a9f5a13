"""structlog set-up, done once per process.

flowsd's own log calls go through native structlog (cheap on the hot path); records from
the standard library's loggers (asyncio, asyncpg) are rendered by the same processors, so
journald sees one JSON shape. Under systemd a ``<N>`` priority prefix lets journald set
PRIORITY from each line. Lines go to stderr through :data:`flowsd.ops.terminal.STDERR`, so a
progress bar drawn there stays on its own line.
"""

from __future__ import annotations

import logging
import os
from typing import Literal, TextIO, cast

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from flowsd.ops.terminal import STDERR

# syslog priorities by structlog method name, for journald's "<N>" line prefix.
_SYSLOG_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "exception": 3, "critical": 2}


def _connected_to_journal(stream: TextIO) -> bool:
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{info.st_dev}:{info.st_ino}"


def _json_line_renderer(*, priority_prefix: bool) -> Processor:
    # repr() for anything msgspec cannot encode: a log call must never raise.
    encoder = msgspec.json.Encoder(enc_hook=repr)

    def render(_logger: WrappedLogger, method: str, event: EventDict) -> str:
        line = encoder.encode(event).decode()
        if priority_prefix:
            return f"<{_SYSLOG_PRIORITY.get(method, 6)}>{line}"
        return line

    return render


def configure_logging(
    level: str = "info",
    *,
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
    cache: bool = True,
) -> None:
    """Configure structlog and the standard library's root logger to write to ``stream``
    (default: stderr, shared with the progress bar)."""
    out = stream if stream is not None else cast(TextIO, STDERR)
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    common: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderers: list[Processor]
    if as_json:
        renderers = [
            structlog.processors.dict_tracebacks,
            _json_line_renderer(priority_prefix=_connected_to_journal(out)),
        ]
    else:
        renderers = [structlog.dev.ConsoleRenderer()]
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*common, *renderers],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=cache,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=common,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
        )
    )
    logging.basicConfig(handlers=[handler], level=numeric_level, force=True)
