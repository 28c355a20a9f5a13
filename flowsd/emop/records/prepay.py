"""Prepayment records: balance, top-up token, monetary transaction count and details."""

from __future__ import annotations

import struct
from datetime import datetime
from decimal import Decimal
from typing import Self

from flowsd.emop.errors import EncodeError, PayloadError
from flowsd.emop.records.base import PackedRecord, Record, unpack
from flowsd.emop.units import ascii_text, from_emop_seconds, gbp

_S32 = struct.Struct("<i")
_U16 = struct.Struct("<H")
_DETAILS = struct.Struct("<8sIi")


class PrepayBalance(PackedRecord, frozen=True):
    """``prepay_balance``: s32le in 1e-5 GBP; negative means debt."""

    balance: int
    layout, what = _S32, "prepay balance"

    @property
    def gbp(self) -> Decimal:
        return gbp(self.balance)


class TopUpToken(Record, frozen=True):
    """``prepay_token_send`` (write only): the token as ASCII digits, 20 in practice."""

    token: str

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        token = ascii_text(payload, "top-up token")
        if not token.isdigit():
            raise PayloadError(f"a top-up token is ASCII digits only: {token!r}")
        return cls(token)

    def encode(self) -> bytes:
        if not (self.token.isascii() and self.token.isdigit()):
            raise EncodeError(f"a top-up token is ASCII digits only: {self.token!r}")
        return self.token.encode("ascii")


class TransactionCount(PackedRecord, frozen=True):
    """``monetary_info_transaction_count``: u16le, number of transactions minus one."""

    count: int
    layout, what = _U16, "transaction count"


class TransactionDetails(Record, frozen=True):
    """``monetary_info_transaction_details``: 8 undecoded bytes, u32le time, s32le value."""

    reserved: bytes
    payment_time: int
    payment_value: int

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        reserved, when, value = unpack(_DETAILS, payload, "transaction details")
        return cls(reserved, when, value)

    def encode(self) -> bytes:
        if len(self.reserved) != 8:
            raise EncodeError("transaction details: 'reserved' must be 8 bytes")
        return _DETAILS.pack(self.reserved, *_pack_check(self.payment_time, self.payment_value))

    @property
    def payment_datetime(self) -> datetime:
        return from_emop_seconds(self.payment_time)

    @property
    def payment_gbp(self) -> Decimal:
        return gbp(self.payment_value)


def _pack_check(when: int, value: int) -> tuple[int, int]:
    if not 0 <= when <= 0xFFFF_FFFF or not -(2**31) <= value < 2**31:
        raise EncodeError(f"transaction details out of range: {when}, {value}")
    return when, value
