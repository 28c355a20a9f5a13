"""The spill journal: accepted events kept on local disk while the database is unreachable.

Layout: a directory of segment files ``segment-<20-digit sequence>.spill``, oldest first. Every
segment starts with the 16-byte magic ``FLOWSD-SPILL-v1\\n``, then records::

    length  u32 big-endian   size of the body
    crc32   u32 big-endian   zlib.crc32 of the body
    body    msgpack of flowsd.events.types.Event

:meth:`SpillJournal.write` appends a whole batch with one ``write`` and ``fsync`` (and fsyncs
the directory when it creates a segment), so a batch is on disk before the appender lets go of
it; a write that fails (a full disk) is truncated away, so the batch is either whole in the
journal or not there at all. A crash can tear only the last batch being written: reading
stops at the first record whose length or checksum does not fit, counts it, and keeps what
came before. Segments are
committed oldest first and deleted once every event in them is in the database; a crash between
commit and delete replays a segment, which the idempotency keys turn into a no-op.

One journal per directory: the first scan or write takes an exclusive ``flock`` on
``<directory>/.lock``, held until :meth:`SpillJournal.close` or the process exits.

The methods are blocking (disk I/O); the appender calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import structlog

from flowsd.errors import UserError
from flowsd.events.codec import decode_from_spill, encode_for_spill
from flowsd.events.types import Event

MAGIC = b"FLOWSD-SPILL-v1\n"
LOCK_FILE = ".lock"
_HEADER = struct.Struct(">II")
_MAX_RECORD_BYTES = 16 * 1024 * 1024
_PREFIX, _SUFFIX = "segment-", ".spill"

log = structlog.get_logger("flowsd.events.spill")


class SpillDirectoryInUseError(UserError):
    """Two appenders must never share a journal: each would drain the other's segments."""


class SpillJournal:
    """Append-only, fsync'd segments of events, drained oldest first."""

    def __init__(self, directory: Path, *, segment_max_bytes: int = 16 * 1024 * 1024) -> None:
        self.directory = directory
        self.segment_max_bytes = segment_max_bytes
        self._writer: BinaryIO | None = None
        self._writer_path: Path | None = None
        self._counts: dict[Path, int] = {}
        self._lock_fd: int | None = None
        self.size_bytes = 0  # of the segments this journal knows, as of its last change
        self.corrupt_records = 0  # torn or foreign records and segments met while reading

    # -- inspection ---------------------------------------------------------------------------

    def segments(self) -> list[Path]:
        """Segments on disk, oldest first."""
        if not self.directory.exists():
            return []
        found = [p for p in self.directory.iterdir() if _sequence_of(p) is not None]
        return sorted(found, key=lambda p: _sequence_of(p) or 0)

    def scan(self) -> int:
        """Claim the directory and count the events on disk (at start-up).

        Raises :class:`SpillDirectoryInUseError` while another journal (another flowsd
        process, or another appender in this one) holds the directory.
        """
        self.claim()
        self._counts = {path: len(self._read_records(path)) for path in self.segments()}
        self._measure()
        return sum(self._counts.values())

    def has_segments(self) -> bool:
        """Whether any segment (known to this process) still waits to be committed."""
        return bool(self._counts)

    def oldest_segment(self) -> Path:
        return min(self._counts, key=lambda p: _sequence_of(p) or 0)

    @property
    def pending_events(self) -> int:
        return sum(self._counts.values())

    # -- writing ----------------------------------------------------------------------------

    def write(self, events: Sequence[Event]) -> None:
        """Append ``events`` durably (write + fsync). Raises OSError, e.g. on a full disk."""
        if not events:
            return
        data = b"".join(_frame(encode_for_spill(event)) for event in events)
        writer, path = self._open_writer()
        start = writer.tell()
        try:
            _write_all(writer, data)
            os.fsync(writer.fileno())
        except OSError:
            # No partial batch stays behind (the caller keeps the events and writes them
            # again, so a torn part would be committed twice); and in case the truncation
            # fails too, nothing is appended after it.
            with contextlib.suppress(OSError):
                os.ftruncate(writer.fileno(), start)
            with contextlib.suppress(OSError):
                self.seal()
            raise
        self._counts[path] = self._counts.get(path, 0) + len(events)
        self._measure()
        if writer.tell() >= self.segment_max_bytes:
            self.seal()

    def seal(self) -> None:
        """Close the segment being written; the next write starts a new one (also when the
        close itself fails, e.g. flushing into a full disk: that error is raised)."""
        writer, self._writer, self._writer_path = self._writer, None, None
        if writer is not None:
            writer.close()

    def is_being_written(self, path: Path) -> bool:
        return self._writer_path == path

    # -- draining ----------------------------------------------------------------------------

    def read(self, path: Path) -> list[Event]:
        """The intact events of one segment, in the order they were written."""
        return [decode_from_spill(body) for body in self._read_records(path)]

    def remove(self, path: Path) -> None:
        """Delete a fully committed segment."""
        if self.is_being_written(path):
            self.seal()
        path.unlink(missing_ok=True)
        _fsync_directory(self.directory)
        self._counts.pop(path, None)
        self._measure()

    def claim(self) -> None:
        """Hold an exclusive lock on the directory until :meth:`close` (or process exit)."""
        if self._lock_fd is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpillDirectoryInUseError(
                f"spill directory {self.directory} is in use by another flowsd appender"
            ) from None
        self._lock_fd = fd

    def close(self) -> None:
        self.seal()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- internals ------------------------------------------------------------------------------

    def _open_writer(self) -> tuple[BinaryIO, Path]:
        if self._writer is not None and self._writer_path is not None:
            return self._writer, self._writer_path
        self.claim()
        existing = self.segments()
        sequence = (_sequence_of(existing[-1]) or 0) + 1 if existing else 1
        path = self.directory / f"{_PREFIX}{sequence:020d}{_SUFFIX}"
        writer = path.open("xb", buffering=0)
        try:
            _write_all(writer, MAGIC)
            os.fsync(writer.fileno())
            _fsync_directory(self.directory)
        except OSError:
            writer.close()
            path.unlink(missing_ok=True)
            raise
        self._writer, self._writer_path = writer, path
        self._counts.setdefault(path, 0)
        return writer, path

    def _measure(self) -> None:
        size = 0
        for path in self._counts:
            try:
                size += path.stat().st_size
            except OSError:
                continue
        self.size_bytes = size

    def _read_records(self, path: Path) -> list[bytes]:
        records, corrupt = _read_records(path)
        self.corrupt_records += corrupt
        return records


def _write_all(writer: BinaryIO, data: bytes) -> None:
    """Write every byte (an unbuffered file may take fewer at once); OSError when it cannot."""
    view = memoryview(data)
    while view:
        written = writer.write(view)
        if not written:
            raise OSError(errno.ENOSPC, "no bytes written")
        view = view[written:]


def _frame(body: bytes) -> bytes:
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def _read_records(path: Path) -> tuple[list[bytes], int]:
    """The intact records of a segment, and 1 if it has no header or ends in unreadable bytes
    (else 0)."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        if len(data) >= len(MAGIC) or not MAGIC.startswith(data):
            log.error("spill segment has no flowsd header; ignored", segment=str(path))
            return [], 1
        return [], 0
    records: list[bytes] = []
    offset = len(MAGIC)
    while offset < len(data):
        if offset + _HEADER.size > len(data):
            break
        length, crc = _HEADER.unpack_from(data, offset)
        start, end = offset + _HEADER.size, offset + _HEADER.size + length
        if length > _MAX_RECORD_BYTES or end > len(data):
            break
        body = data[start:end]
        if zlib.crc32(body) != crc:
            break
        records.append(body)
        offset = end
    if offset < len(data):
        log.warning(
            "spill segment ends in unreadable bytes (torn write at a crash)",
            segment=str(path),
            unreadable_bytes=len(data) - offset,
            events_kept=len(records),
        )
        return records, 1
    return records, 0


def _sequence_of(path: Path) -> int | None:
    name = path.name
    if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
        return None
    digits = name[len(_PREFIX) : -len(_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
