"""The record base classes (records, two-byte status flags) and the helpers the record modules
share."""

from __future__ import annotations

import enum
import struct
from typing import Any, ClassVar, Self, TypeVar

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
    """The enum member for ``value``, or the plain integer when the enum has none."""
    try:
        return enum_type(value)
    except ValueError:
        return value


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
        key = (cls, bytes(raw[:2]))
        found = _DECODED.get(key)
        if found is None:
            if len(_DECODED) >= _STATUS_CACHE_LIMIT:
                _DECODED.clear()
                _ENCODED.clear()
            found = _DECODED[key] = cls(*bits_msb_first(raw[0]), *bits_msb_first(raw[1]))
            _ENCODED[found] = key[1]
        return found  # type: ignore[return-value]  # keyed by cls: an instance of it

    def to_bytes(self) -> bytes:
        raw = _ENCODED.get(self)  # equal structs are of one type with equal fields
        if raw is None:
            bits = [bool(getattr(self, name)) for name in self.__struct_fields__]
            raw = bytes((byte_from_bits_msb_first(bits[:8]), byte_from_bits_msb_first(bits[8:])))
        return raw


_STATUS_CACHE_LIMIT = 4096
_DECODED: dict[tuple[type[StatusFlags], bytes], StatusFlags] = {}
_ENCODED: dict[StatusFlags, bytes] = {}
