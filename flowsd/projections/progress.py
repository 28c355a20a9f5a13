"""Progress of a rebuild: a bar on a terminal, a log line every few seconds otherwise.

The bar is the status line of :data:`flowsd.ops.terminal.STDERR`, which log lines also go
through, so they are printed above it instead of into it.
"""

from __future__ import annotations

import time

import structlog

from flowsd.ops.terminal import STDERR, StatusTerminal

log = structlog.get_logger("flowsd.projections")


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Units of work (events x projections) done out of a total, with rate and ETA."""

    def __init__(
        self,
        total: int,
        *,
        terminal: StatusTerminal | None = None,
        label: str = "replay",
        log_every_seconds: float = 10.0,
    ) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.phase = ""
        self._terminal = terminal if terminal is not None else STDERR
        self._tty = self._terminal.isatty()
        self._label = label
        self._started = time.monotonic()
        self._last_shown = 0.0
        self._every = 0.2 if self._tty else log_every_seconds

    def advance(self, units: int, phase: str | None = None) -> None:
        self.done = min(self.done + units, self.total)
        if phase is not None:
            self.phase = phase
        now = time.monotonic()
        if now - self._last_shown >= self._every:
            self._last_shown = now
            self._show(final=False)

    def set_phase(self, phase: str) -> None:
        self.advance(0, phase)

    def finish(self) -> None:
        self.done = self.total
        self._show(final=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def _show(self, *, final: bool) -> None:
        elapsed = max(self.elapsed, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        if self._tty:
            width = 30
            filled = int(width * self.done / self.total)
            bar = "#" * filled + "." * (width - filled)
            line = (
                f"{self._label} [{bar}] {self.done:,}/{self.total:,} "
                f"{rate:,.0f}/s ETA {_duration(eta)} {self.phase:<28}"
            )
            if final:
                self._terminal.end(line)
            else:
                self._terminal.show(line)
        else:
            log.info(
                f"{self._label} progress",
                done=self.done,
                total=self.total,
                rate_per_second=round(rate),
                eta_seconds=round(eta),
                phase=self.phase,
            )
