"""Identity records: serial, hardware version, firmware version, three-phase configuration."""

from __future__ import annotations

import enum
from typing import ClassVar, Self

from flowsd.emop.errors import EncodeError
from flowsd.emop.records.base import (
    Record,
    bits_msb_first,
    byte_from_bits_msb_first,
    need,
)
from flowsd.emop.units import ascii_text

TWIN_ELEMENT_MODEL = "C1.w"
_SINGLE_PHASE_MODELS = {"6C": "C1.w", "6Cw": "C1.w", "6Bw": "B1.w", "3Aw": "EMA1.w"}


class AsciiRecord(Record, frozen=True):
    """A record whose payload is one text field, all payload bytes as ASCII."""

    what: ClassVar[str]  # names the record in error messages

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(ascii_text(payload, cls.what))

    def encode(self) -> bytes:
        text: str = getattr(self, self.__struct_fields__[0])
        try:
            return text.encode("ascii")
        except UnicodeEncodeError:
            raise EncodeError(f"{self.what} must be ASCII: {text!r}") from None


class Serial(AsciiRecord, frozen=True):
    """``serial`` / ``three_phase_serial``: all payload bytes as ASCII (space padded)."""

    serial: str
    what = "serial"

    @property
    def value(self) -> str:
        """The serial number without padding."""
        return self.serial.strip()


class HardwareVersion(AsciiRecord, frozen=True):
    """``hardware_version``: ASCII; empty on three-phase meters."""

    hardware: str
    what = "hardware version"

    @property
    def is_three_phase(self) -> bool:
        return self.hardware.replace("\0", "").strip() == ""

    @property
    def model(self) -> str:
        """``C1.w``, ``B1.w``, ``EMA1.w``, ``SINGLE_PHASE_UNKNOWN`` or ``THREE_PHASE`` (empty)."""
        code = self.hardware.replace("\0", "").strip()
        if not code:
            return "THREE_PHASE"
        return _SINGLE_PHASE_MODELS.get(code, "SINGLE_PHASE_UNKNOWN")

    @property
    def is_twin_element(self) -> bool:
        return self.model == TWIN_ELEMENT_MODEL


class FirmwareVersion(Record, frozen=True):
    """``firmware_version``: all payload bytes."""

    version_bytes: tuple[int, ...]

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(tuple(payload))

    def encode(self) -> bytes:
        try:
            return bytes(self.version_bytes)
        except ValueError:
            raise EncodeError(f"firmware bytes out of range: {self.version_bytes}") from None

    @property
    def text(self) -> str:
        """``3_03_2`` for the four ASCII characters ``3032``, else the bytes in lowercase hex."""
        raw = bytes(self.version_bytes)
        if len(raw) == 4 and raw.isascii():
            chars = raw.decode("ascii")
            return f"{chars[0]}_{chars[1:3]}_{chars[3]}"
        return raw.hex()


class MeterType(enum.IntEnum):
    CX_CT_OPERATED = 0
    AX_WHOLE_CURRENT = 1


class MiddleOutputTerminals(enum.IntEnum):
    AUXILIARY_RELAY_FITTED = 0
    PULSE_OUTPUT_FITTED = 1


class Fitted(enum.IntEnum):
    NOT_FITTED = 0
    FITTED = 1


class ThreePhaseHardwareConfiguration(Record, frozen=True):
    """``three_phase_hardware_configuration``: one bitfield byte (bit 7 first), 3 unused bytes."""

    meter_type: MeterType
    middle_output_terminals: MiddleOutputTerminals
    disconnect_switch: Fitted
    gsm_communications: Fitted
    real_time_clock: Fitted
    magnetic_detection: Fitted
    terminal_cover_tamper_switch: Fitted
    top_cover_tamper_switch: Fitted
    unused: bytes = b"\0\0\0"

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        need(payload, 4, "three-phase hardware configuration")
        bits = [int(b) for b in bits_msb_first(payload[0])]
        return cls(
            meter_type=MeterType(bits[0]),
            middle_output_terminals=MiddleOutputTerminals(bits[1]),
            disconnect_switch=Fitted(bits[2]),
            gsm_communications=Fitted(bits[3]),
            real_time_clock=Fitted(bits[4]),
            magnetic_detection=Fitted(bits[5]),
            terminal_cover_tamper_switch=Fitted(bits[6]),
            top_cover_tamper_switch=Fitted(bits[7]),
            unused=bytes(payload[1:4]),
        )

    def encode(self) -> bytes:
        if len(self.unused) != 3:
            raise EncodeError("three-phase hardware configuration: 'unused' must be 3 bytes")
        flags = [
            self.meter_type,
            self.middle_output_terminals,
            self.disconnect_switch,
            self.gsm_communications,
            self.real_time_clock,
            self.magnetic_detection,
            self.terminal_cover_tamper_switch,
            self.top_cover_tamper_switch,
        ]
        return bytes((byte_from_bits_msb_first([bool(f) for f in flags]),)) + self.unused

    @property
    def model(self) -> str:
        """``P1.ax`` (whole current) or ``P1.cx`` (CT operated)."""
        return "P1.ax" if self.meter_type == MeterType.AX_WHOLE_CURRENT else "P1.cx"
