"""Frames: the envelope around every EMOP message (SPEC §3), encoded and decoded.

Wire layout: ``7e | L | dst type | dst addr(3) | src type | src addr(3) | control | data | crc``
where ``L`` counts every byte after the delimiter (CRC included) and the CRC-16/CCITT-FALSE
covers the length byte up to the last data byte, sent big-endian. There is no byte stuffing.
"""

from __future__ import annotations

import enum

import msgspec

from flowsd.emop.crc import crc16
from flowsd.emop.errors import (
    BadDelimiterError,
    BadFrameLengthError,
    CrcMismatchError,
    EncodeError,
    FrameTooLargeError,
    TruncatedFrameError,
)

DELIMITER = 0x7E
HEADER_LENGTH = 11  # delimiter, L, 8 address bytes, control
OVERHEAD = 12  # what L counts besides the data field: L itself, addresses, control, CRC
MIN_FRAME_LENGTH = OVERHEAD + 1  # a data field holds at least its format byte
MAX_FRAME_LENGTH = 0xFF  # L is one byte
MAX_DATA_LENGTH = MAX_FRAME_LENGTH - OVERHEAD  # 243
MAX_FRAME_BYTES = MAX_FRAME_LENGTH + 1


class Format(enum.IntEnum):
    """Byte 0 of the data field (SPEC §4)."""

    DEFAULT = 0x01
    PROFILE_LOG_1 = 0x03
    PROFILE_LOG_2 = 0x04
    EVENT_LOG = 0x05
    THREE_PHASE_INTERVALS = 0x14


class ReadWrite(enum.IntEnum):
    """The read/write flag of a default-format data field."""

    READ = 0
    WRITE = 1


class NakCode(enum.IntEnum):
    """Bits 3-7 of a response's control byte (SPEC §3.2); 0 means OK."""

    OK = 0
    FCS_ERROR = 1
    FORMAT_ERROR = 2
    FRAME_LENGTH_INCORRECT = 3
    MAX_PAYLOAD_EXCEEDED = 4
    OBJECT_NOT_RECOGNISED = 5
    SECURITY_NOT_GRANTED = 6
    FRAME_ADDRESS_INCORRECT = 7


def nak_code_name(code: int) -> str:
    try:
        return NakCode(code).name.lower()
    except ValueError:
        return "unknown"


class Address(msgspec.Struct, frozen=True):
    """A device type byte plus a 24-bit address."""

    device_type: int
    address: int

    def __str__(self) -> str:
        return f"{self.device_type:02x}/{self.address:06x}"


ANY_METER = Address(0x00, 0x000000)
"""Destination a meter accepts as 'whoever you are' (what the reference client sends)."""

REFERENCE_CLIENT = Address(0x00, 0x21AE42)
"""The fixed source address of the reference client."""

REFERENCE_SEQUENCE = 5


class Frame(msgspec.Struct, frozen=True):
    """One frame. ``data`` is the whole data field, format byte first."""

    destination: Address
    source: Address
    control: int
    data: bytes

    @property
    def sequence(self) -> int:
        return self.control & 0x07

    @property
    def nak_code(self) -> int:
        return self.control >> 3

    @property
    def format(self) -> int:
        return self.data[0]

    @property
    def frame_length(self) -> int:
        return len(self.data) + OVERHEAD


def control_byte(sequence: int, nak_code: int = 0) -> int:
    if not 0 <= sequence <= 7 or not 0 <= nak_code <= 31:
        raise EncodeError(f"sequence {sequence} / NAK code {nak_code} out of range")
    return sequence | (nak_code << 3)


def _check_address(address: Address) -> None:
    if not 0 <= address.device_type <= 0xFF or not 0 <= address.address <= 0xFFFFFF:
        raise EncodeError(f"address out of range: {address!r}")


def encode_frame(frame: Frame) -> bytes:
    """The bytes on the wire for ``frame`` (CRC computed here)."""
    if not frame.data:
        raise EncodeError("a frame needs a data field (at least the format byte)")
    if len(frame.data) > MAX_DATA_LENGTH:
        raise FrameTooLargeError(f"data field of {len(frame.data)} bytes exceeds {MAX_DATA_LENGTH}")
    if not 0 <= frame.control <= 0xFF:
        raise EncodeError(f"control byte out of range: {frame.control}")
    _check_address(frame.destination)
    _check_address(frame.source)
    dst, src = frame.destination, frame.source
    body = bytearray()
    body.append(len(frame.data) + OVERHEAD)
    body.append(dst.device_type)
    body += dst.address.to_bytes(3, "big")
    body.append(src.device_type)
    body += src.address.to_bytes(3, "big")
    body.append(frame.control)
    body += frame.data
    crc = crc16(body)
    return bytes((DELIMITER, *body, crc >> 8, crc & 0xFF))


def frame_size(buffer: bytes | bytearray | memoryview) -> int | None:
    """How many bytes at the start of ``buffer`` one exchange's frame takes, once that is known;
    None while more bytes are needed (sans-I/O: the transport and the simulator feed it what
    their sockets return).

    The rule for leading garbage on a connection that carries one frame each way: a frame
    starts at the first byte, so a buffer whose first byte is not the delimiter holds no frame
    and its whole length is returned at once; the reader stops there and decoding those bytes
    reports the bad delimiter (a meter drops such a request). Only
    :class:`~flowsd.emop.parser.FrameParser`, for a stream of many frames, skips to the next
    delimiter instead.
    """
    if not buffer:
        return None
    if buffer[0] != DELIMITER:
        return len(buffer)
    if len(buffer) < 2 or len(buffer) < buffer[1] + 1:
        return None
    return buffer[1] + 1


def check_frame_length(length: int, max_frame_length: int = MAX_FRAME_LENGTH) -> None:
    """Raise for a frame-length byte no frame may carry."""
    if length < MIN_FRAME_LENGTH:
        raise BadFrameLengthError(
            f"bad frame length: {length} (at least {MIN_FRAME_LENGTH} for a data field)"
        )
    if length > max_frame_length:
        raise FrameTooLargeError(f"frame length {length} exceeds the limit of {max_frame_length}")


def decode_frame_prefix(buffer: bytes | bytearray | memoryview) -> tuple[Frame, int]:
    """Decode the frame at the start of ``buffer``; return it and the number of bytes used."""
    total = _frame_total(buffer)
    raw = bytes(buffer[:total])
    carried = (raw[-2] << 8) | raw[-1]
    computed = crc16(memoryview(raw)[1:-2])
    if carried != computed:
        raise CrcMismatchError(carried, computed)
    return _unpack(raw), total


def decode_frame(buffer: bytes | bytearray | memoryview) -> Frame:
    """Decode one frame; bytes after its CRC are ignored (as the SPEC recommends)."""
    return decode_frame_prefix(buffer)[0]


def decode_frame_unverified(buffer: bytes | bytearray | memoryview) -> Frame:
    """Decode one frame without checking its CRC (delimiter and length are still checked).

    For a meter that must answer a request whose CRC is wrong with NAK 1: the NAK goes back
    to the requester's address with its sequence, which this reads from the damaged frame.
    """
    return _unpack(bytes(buffer[: _frame_total(buffer)]))


def _frame_total(buffer: bytes | bytearray | memoryview) -> int:
    """The byte count of the frame at the start of ``buffer``; raise unless all are there."""
    if len(buffer) == 0:
        raise TruncatedFrameError("truncated: no bytes at all (empty reply)")
    if buffer[0] != DELIMITER:
        raise BadDelimiterError(f"bad delimiter: first byte is {buffer[0]:02x}, expected 7e")
    if len(buffer) < 2:
        raise TruncatedFrameError("truncated: only the delimiter, no frame length")
    length = buffer[1]
    check_frame_length(length)
    total = length + 1
    if len(buffer) < total:
        raise TruncatedFrameError(
            f"truncated: frame length {length} needs {total} bytes, only {len(buffer)} received"
        )
    return total


def _unpack(raw: bytes) -> Frame:
    return Frame(
        destination=Address(raw[2], int.from_bytes(raw[3:6], "big")),
        source=Address(raw[6], int.from_bytes(raw[7:10], "big")),
        control=raw[10],
        data=raw[HEADER_LENGTH:-2],
    )
