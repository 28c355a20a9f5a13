"""The record base classes (records, two-byte status flags) and the helpers the record modules
share."""

from __future__ import annotations

import enum
import struct
from functools import lru_cache
from typing import Any, ClassVar, Self, TypeVar, cast

import msgspec

from flowsd.emop.errors import EncodeError, PayloadError


class Record(msgspec.Struct, frozen=True):
    """A typed payload. Subclasses implement ``decode`` and ``encode``."""

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        raise NotImplementedError

    def encode(self) -> bytes:
        raise NotImplementedError


class PackedRecord(Record, frozen=True):
    """A record whose payload is its integer fields, in order, packed with the class's
    ``layout``."""

    layout: ClassVar[struct.Struct]
    what: ClassVar[str]  # names the record in error messages

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(*unpack(cls.layout, payload, cls.what))

    def encode(self) -> bytes:
        return pack(self.layout, self.what, *(getattr(self, f) for f in self.__struct_fields__))


class RawPayload(Record, frozen=True):
    """An object without a dedicated layout: the payload bytes as they came."""

    payload: bytes

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(bytes(payload))

    def encode(self) -> bytes:
        return self.payload


def need(payload: bytes, size: int, what: str) -> None:
    """Raise :class:`PayloadError` unless ``payload`` holds at least ``size`` bytes."""
    if len(payload) < size:
        raise PayloadError(f"{what}: needs {size} payload bytes, got {len(payload)}")


def unpack(fmt: struct.Struct, payload: bytes, what: str, offset: int = 0) -> tuple[Any, ...]:
    need(payload, offset + fmt.size, what)
    return fmt.unpack_from(payload, offset)


def pack(fmt: struct.Struct, what: str, *values: int | bytes) -> bytes:
    try:
        return fmt.pack(*values)
    except struct.error as exc:
        raise EncodeError(f"{what}: value out of range ({exc})") from None


E = TypeVar("E", bound=enum.IntEnum)


def enum_or_int(enum_type: type[E], value: int) -> E | int:
    """The enum member for ``value``, or the plain integer when the enum has none (for
    plain ``IntEnum`` types: an enum's ``_missing_`` hook, or an ``IntFlag``'s composite
    values, are not consulted)."""
    # The enum's own value map: a dict look-up, where calling the enum runs Python-level
    # code for every value (and builds a ValueError for each one it lacks).
    member = enum_type._value2member_map_.get(value)
    return value if member is None else cast(E, member)


def bits_msb_first(byte: int) -> list[bool]:
    return [bool(byte & (0x80 >> i)) for i in range(8)]


def byte_from_bits_msb_first(bits: list[bool]) -> int:
    value = 0
    for i, bit in enumerate(bits):
        if bit:
            value |= 0x80 >> i
    return value


class StatusFlags(msgspec.Struct, frozen=True):
    """Two status bytes as 16 boolean fields, which subclasses declare in wire order
    (byte 0 bit 7 first).

    A meter's records carry a handful of distinct status words, and a back-fill decodes
    thousands of records (and the ingest turns each status back into its word): decoded
    statuses are shared, immutable values, remembered by their two bytes."""

    @classmethod
    def from_bytes(cls, raw: bytes) -> Self:
        return _decoded_status(cls, bytes(raw[:2]))  # type: ignore[return-value]  # of cls

    def to_bytes(self) -> bytes:
        return _status_word(self)


@lru_cache(maxsize=4096)
def _decoded_status(cls: type[StatusFlags], raw: bytes) -> StatusFlags:
    return cls(*bits_msb_first(raw[0]), *bits_msb_first(raw[1]))


@lru_cache(maxsize=4096)  # equal statuses are of one type with equal fields: one word
def _status_word(status: StatusFlags) -> bytes:
    bits = [bool(getattr(status, name)) for name in status.__struct_fields__]
    return bytes((byte_from_bits_msb_first(bits[:8]), byte_from_bits_msb_first(bits[8:])))
