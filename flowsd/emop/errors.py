"""The codec's one exception family: everything it raises derives from :class:`EmopError`.

Framing problems (:class:`FrameError` and subclasses) mean the bytes are not a valid frame.
:class:`NakError` means a valid frame in which the meter refused the request.
:class:`ResponseMismatchError` means a valid frame that does not answer the request
(:class:`ResponseAddressError`: it is addressed to another client).
:class:`PayloadError` means a valid frame whose payload does not fit the object's record.
:class:`EncodeError` means a value that cannot be put on the wire.
"""

from __future__ import annotations


class EmopError(Exception):
    """Base of every error the EMOP codec raises."""


class FrameError(EmopError):
    """The bytes are not a well-formed frame."""


class BadDelimiterError(FrameError):
    """The first byte is not the 0x7e delimiter."""


class TruncatedFrameError(FrameError):
    """Fewer bytes than the frame-length byte announces (includes an empty reply)."""


class BadFrameLengthError(FrameError):
    """The frame-length byte is below the minimum for a frame with a data field."""


class FrameTooLargeError(FrameError):
    """A frame (or a data field being encoded) exceeds what the protocol or the parser allows."""


class CrcMismatchError(FrameError):
    """The CRC carried by the frame differs from the one computed over its bytes."""

    def __init__(self, carried: int, computed: int) -> None:
        super().__init__(f"CRC mismatch: frame carries {carried:04x}, computed {computed:04x}")
        self.carried = carried
        self.computed = computed


class NakError(EmopError):
    """The meter answered with a non-zero ACK/NAK code in the control byte."""

    def __init__(self, code: int, object_id: int | None = None) -> None:
        from flowsd.emop.frame import nak_code_name  # noqa: PLC0415 - avoids an import cycle

        where = f" for object {object_id:06x}" if object_id is not None else ""
        super().__init__(f"NAK code {code} ({nak_code_name(code)}){where}")
        self.code = code
        self.object_id = object_id


class ResponseMismatchError(EmopError):
    """A valid frame that does not answer the request (format or echoed object id differs)."""


class ResponseAddressError(ResponseMismatchError):
    """A valid frame addressed to someone other than the client that sent the request."""


class PayloadError(EmopError):
    """The payload does not fit the object's record layout (too short, not ASCII, ...)."""


class EncodeError(EmopError, ValueError):
    """A value cannot be encoded (out of range, naive datetime, payload too long, ...)."""


class UnknownObjectError(EmopError, LookupError):
    """No object of that name or id in the catalogue."""
