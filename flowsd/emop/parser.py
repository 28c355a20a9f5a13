"""Incremental, byte-fed frame parsing (sans-I/O).

:class:`FrameParser` takes bytes in pieces of any size and returns complete frames. Bytes
before a delimiter are skipped and counted; a bad length, an oversized frame or a CRC
mismatch is returned as a :class:`~flowsd.emop.errors.FrameError` instance (never raised,
so one bad frame does not stop the stream) after which parsing resumes one byte after the
offending delimiter. The parser never holds more than one maximal frame of unparsed bytes.

:class:`ResponseReader` is the client's view of one exchange: feed it what the socket
returns until it hands back the checked :class:`~flowsd.emop.messages.Response`; every
problem (framing, NAK, mismatch, payload) is raised from the codec's error family.
"""

from __future__ import annotations

from flowsd.emop.errors import CrcMismatchError, FrameError, TruncatedFrameError
from flowsd.emop.frame import (
    DELIMITER,
    MAX_FRAME_LENGTH,
    Address,
    Frame,
    check_frame_length,
    decode_frame,
)
from flowsd.emop.messages import Request, Response, decode_response


class FrameParser:
    """Turns a byte stream into frames and frame errors."""

    def __init__(self, *, max_frame_length: int = MAX_FRAME_LENGTH) -> None:
        self.max_frame_length = max_frame_length
        self._buffer = bytearray()
        self.skipped_bytes = 0
        """Bytes dropped while looking for a delimiter."""
        self.frames_parsed = 0
        self.errors = 0

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (at most ``max_frame_length``)."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame | FrameError]:
        """Add bytes; return the frames (and frame errors) they complete, in stream order."""
        buf = self._buffer
        buf += data
        out: list[Frame | FrameError] = []
        pos = 0
        while True:
            start = buf.find(DELIMITER, pos)
            if start < 0:
                self.skipped_bytes += len(buf) - pos
                pos = len(buf)
                break
            self.skipped_bytes += start - pos
            pos = start
            if len(buf) - pos < 2:
                break
            length = buf[pos + 1]
            try:
                check_frame_length(length, self.max_frame_length)
            except FrameError as exc:
                out.append(exc)
                pos += 1
                continue
            if len(buf) - pos < length + 1:
                break
            try:
                frame = decode_frame(bytes(buf[pos : pos + length + 1]))
            except CrcMismatchError as exc:
                out.append(exc)
                pos += 1
                continue
            out.append(frame)
            pos += length + 1
        del buf[:pos]
        self.frames_parsed += sum(1 for item in out if isinstance(item, Frame))
        self.errors += sum(1 for item in out if isinstance(item, FrameError))
        return out

    def truncation(self) -> TruncatedFrameError | None:
        """At end of stream: the error for a partial frame still buffered, if any."""
        if not self._buffer:
            return None
        if len(self._buffer) < 2:
            return TruncatedFrameError("truncated: stream ended after the delimiter")
        total = self._buffer[1] + 1
        return TruncatedFrameError(
            f"truncated: frame length {total - 1} needs {total} bytes, "
            f"stream ended after {len(self._buffer)}"
        )


class ResponseReader:
    """Reads the response to one request from a stream (one request per connection).

    ``feed`` returns None while more bytes are needed and the checked response once a frame
    is complete; at end of stream call :meth:`eof`, which raises what went wrong.
    """

    def __init__(
        self, request: Request, *, twin: bool = False, client: Address | None = None
    ) -> None:
        self.request = request
        self.twin = twin
        self.client = client
        self._parser = FrameParser()
        self._response: Response | None = None

    @property
    def skipped_bytes(self) -> int:
        """Bytes before the frame's delimiter that were skipped."""
        return self._parser.skipped_bytes

    def feed(self, data: bytes | bytearray | memoryview) -> Response | None:
        if self._response is not None:
            return self._response  # bytes after the answer are ignored
        for item in self._parser.feed(data):
            if isinstance(item, FrameError):
                raise item
            self._response = decode_response(item, self.request, twin=self.twin, client=self.client)
            return self._response
        return None

    def eof(self) -> Response:
        """The response if one was read; otherwise raise why there is none."""
        if self._response is not None:
            return self._response
        raise self._parser.truncation() or TruncatedFrameError("truncated: no frame received")
