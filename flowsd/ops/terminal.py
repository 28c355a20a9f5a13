"""stderr shared by log lines and one status line (a progress bar).

On a terminal, a progress bar is redrawn in place (``\\r``) and never ends its line, so a log
line written meanwhile would land at the end of the bar and the next redraw would overwrite
it. :data:`STDERR` is the one writer of stderr for both: a log line first erases the bar,
is written on its own line, and the bar is drawn again below it. Logging
(:func:`flowsd.ops.logs.configure_logging`) and :class:`flowsd.projections.progress.Progress`
both write through it. ``sys.stderr`` is looked up at every write, so a stream replaced later
(pytest's capture, a redirection) is honoured.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from typing import TextIO

_ERASE_LINE = "\r\x1b[K"


class StatusTerminal(io.TextIOBase):
    """A text stream that keeps one status line at the bottom (see the module docstring)."""

    def __init__(self, stream: Callable[[], TextIO] = lambda: sys.stderr) -> None:
        super().__init__()
        self._stream = stream
        self._status = ""

    @property
    def status(self) -> str:
        return self._status

    def write(self, text: str) -> int:
        out = self._stream()
        if not self._status or not text:
            return out.write(text)
        out.write(_ERASE_LINE)
        written = out.write(text)
        if text.endswith("\n"):
            out.write(self._status)
        out.flush()
        return written

    def show(self, line: str) -> None:
        """Draw (or redraw) the status line."""
        out = self._stream()
        out.write(_ERASE_LINE + line)
        out.flush()
        self._status = line

    def end(self, line: str | None = None) -> None:
        """Leave the status line (optionally redrawn as ``line``) where it is, ended by a
        newline; later writes go below it."""
        if line is not None:
            self.show(line)
        if self._status:
            out = self._stream()
            out.write("\n")
            out.flush()
        self._status = ""

    def flush(self) -> None:
        self._stream().flush()

    def isatty(self) -> bool:
        return self._stream().isatty()

    def fileno(self) -> int:
        return self._stream().fileno()

    def writable(self) -> bool:
        return True


STDERR = StatusTerminal()
