"""A progress bar and log lines sharing stderr: the bar stays on its own line."""

from __future__ import annotations

import io
import json

import structlog

from flowsd.ops.logs import configure_logging
from flowsd.ops.terminal import StatusTerminal
from flowsd.projections.progress import Progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(raw: str) -> list[str]:
    """What a terminal shows: ``\\r`` returns to the line start, ``ESC[K`` erases the rest."""
    lines = [""]
    column = 0
    i = 0
    while i < len(raw):
        if raw.startswith("\x1b[K", i):
            lines[-1] = lines[-1][:column]
            i += 3
            continue
        char = raw[i]
        if char == "\r":
            column = 0
        elif char == "\n":
            lines.append("")
            column = 0
        else:
            line = lines[-1]
            lines[-1] = line[:column] + char + line[column + 1 :]
            column += 1
        i += 1
    return lines


def test_a_log_line_goes_above_the_bar_and_the_bar_is_redrawn() -> None:
    raw = FakeTerminal()
    terminal = StatusTerminal(lambda: raw)
    terminal.write("before\n")
    terminal.show("replay [#.....] 1/6")
    terminal.show("replay [##....] 2/6")
    terminal.write('{"event": "projection replayed"}\n')
    terminal.show("replay [###...] 3/6")
    terminal.end("replay [######] 6/6")
    terminal.write("after\n")
    assert screen(raw.getvalue()) == [
        "before",
        '{"event": "projection replayed"}',
        "replay [######] 6/6",
        "after",
        "",
    ]


def test_progress_and_logging_share_the_terminal() -> None:
    raw = FakeTerminal()
    terminal = StatusTerminal(lambda: raw)
    configure_logging("info", fmt="json", stream=terminal, cache=False)  # type: ignore[arg-type]
    try:
        progress = Progress(100, terminal=terminal, label="verify")
        progress.advance(40, "meter_csq")
        structlog.get_logger("test").info("in the middle", step=1)
        progress.finish()
    finally:
        configure_logging("info", cache=False)
    shown = screen(raw.getvalue())
    assert json.loads(shown[0])["event"] == "in the middle"
    assert shown[1].startswith("verify [##############################] 100/100")
    assert shown[2:] == [""]
