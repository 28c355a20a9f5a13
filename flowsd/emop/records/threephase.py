"""Three-phase interval profile responses (format 0x14, SPEC §10).

Body after the format byte: a 2-byte frame header (block number and frame number, each with
a 'last' flag in bit 7), then one block: start time u32le, interval minutes u8, channel count
u8, the channel object ids (3 bytes each, big-endian like every object id), then records to
the end: 2 status bytes and one u32le per channel.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta
from typing import Self

import msgspec

from flowsd.emop.errors import EncodeError, PayloadError
from flowsd.emop.records.base import Record, StatusFlags, need, pack
from flowsd.emop.units import from_emop_seconds

_BLOCK_HEADER = struct.Struct("<IBB")


class IntervalStatus(StatusFlags, frozen=True):
    """Interval status, 16 flags in wire order (byte 0 bit 7 first)."""

    phase_1_voltage_failure: bool = False
    phase_2_voltage_failure: bool = False
    phase_3_voltage_failure: bool = False
    security_access: bool = False
    md_reset: bool = False
    time_update: bool = False
    unused_7: bool = False
    log_reset: bool = False
    valid_data: bool = False
    power_fail: bool = False
    unused_1: bool = False
    unused_2: bool = False
    unused_3: bool = False
    unused_4: bool = False
    unused_5: bool = False
    unused_6: bool = False


class IntervalRecord(msgspec.Struct, frozen=True):
    """One interval: status and one raw u32 per channel (W for P1.ax, 0.1 W for P1.cx)."""

    status: IntervalStatus
    channel_data: tuple[int, ...]


class ThreePhaseIntervals(Record, frozen=True):
    """One response frame of three-phase interval data (one block)."""

    block_is_last: bool
    block_number: int
    frame_is_last: bool
    frame_number: int
    block_start_time: int
    interval_duration: int
    channel_ids: tuple[int, ...]
    intervals: tuple[IntervalRecord, ...]

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        need(payload, 2 + _BLOCK_HEADER.size, "three-phase intervals")
        start, minutes, channels = _BLOCK_HEADER.unpack_from(payload, 2)
        offset = 2 + _BLOCK_HEADER.size
        need(payload, offset + 3 * channels, "three-phase interval channel ids")
        ids = tuple(
            int.from_bytes(payload[offset + 3 * i : offset + 3 * i + 3], "big")
            for i in range(channels)
        )
        offset += 3 * channels
        record = struct.Struct(f"<2s{channels}I")
        rest = len(payload) - offset
        if rest % record.size:
            raise PayloadError(
                f"three-phase intervals: {rest} bytes is not a whole number of "
                f"{record.size}-byte records"
            )
        intervals = tuple(
            IntervalRecord(IntervalStatus.from_bytes(status), tuple(values))
            for status, *values in record.iter_unpack(payload[offset:])
        )
        return cls(
            block_is_last=bool(payload[0] & 0x80),
            block_number=payload[0] & 0x7F,
            frame_is_last=bool(payload[1] & 0x80),
            frame_number=payload[1] & 0x7F,
            block_start_time=start,
            interval_duration=minutes,
            channel_ids=ids,
            intervals=intervals,
        )

    def encode(self) -> bytes:
        if not 0 <= self.block_number <= 0x7F or not 0 <= self.frame_number <= 0x7F:
            raise EncodeError("block and frame numbers are 7-bit")
        out = bytearray(
            (
                (0x80 if self.block_is_last else 0) | self.block_number,
                (0x80 if self.frame_is_last else 0) | self.frame_number,
            )
        )
        channels = len(self.channel_ids)
        out += pack(
            _BLOCK_HEADER, "block header", self.block_start_time, self.interval_duration, channels
        )
        for channel in self.channel_ids:
            if not 0 <= channel <= 0xFFFFFF:
                raise EncodeError(f"channel id out of range: {channel}")
            out += channel.to_bytes(3, "big")
        record = struct.Struct(f"<2s{channels}I")
        for interval in self.intervals:
            if len(interval.channel_data) != channels:
                raise EncodeError(f"each interval needs {channels} channel values")
            out += pack(record, "interval", interval.status.to_bytes(), *interval.channel_data)
        return bytes(out)

    def interval_start(self, index: int) -> datetime:
        """Start time of interval ``index`` (start + index x duration)."""
        return from_emop_seconds(self.block_start_time) + timedelta(
            minutes=index * self.interval_duration
        )
