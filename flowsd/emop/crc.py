"""CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR (SPEC §3.3).

``binascii.crc_hqx`` computes exactly this polynomial without reflection, in C; seeding it
with 0xFFFF gives the CCITT-FALSE variant (check value 0x29B1 for ``b"123456789"``).
"""

from __future__ import annotations

from binascii import crc_hqx

INITIAL = 0xFFFF


def crc16(data: bytes | bytearray | memoryview, crc: int = INITIAL) -> int:
    """CRC of ``data``; pass a previous result as ``crc`` to continue over more bytes."""
    return crc_hqx(data, crc)
