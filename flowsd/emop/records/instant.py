"""Instantaneous and setting records: CSQ, voltage, power, flags, backlight, load switch."""

from __future__ import annotations

import enum
import struct
from typing import ClassVar, Self

from flowsd.emop.errors import EncodeError
from flowsd.emop.records.base import PackedRecord, Record, enum_or_int, need, unpack
from flowsd.emop.units import volts

_U16 = struct.Struct("<H")
_U8 = struct.Struct("<B")


class CsqNetOp(Record, frozen=True):
    """``csq_net_op``: bits 7-5 network operator (1 = O2, 2 = Vodafone), bits 4-0 CSQ 0-31."""

    network_operator: int
    csq: int

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        need(payload, 1, "csq_net_op")
        return cls(payload[0] >> 5, payload[0] & 0x1F)

    def encode(self) -> bytes:
        if not 0 <= self.network_operator <= 7 or not 0 <= self.csq <= 31:
            raise EncodeError(f"csq_net_op out of range: {self!r}")
        return bytes(((self.network_operator << 5) | self.csq,))


class Voltage(PackedRecord, frozen=True):
    """Instantaneous voltage (single or one phase), u16le in 0.1 V."""

    voltage: int
    layout, what = _U16, "voltage"

    @property
    def volts(self) -> float:
        return volts(self.voltage)


class ActivePower(PackedRecord, frozen=True):
    """Instantaneous active power, u16le in W."""

    power: int
    layout, what = _U16, "power"

    @property
    def kw(self) -> float:
        return self.power / 1000


class Flag(PackedRecord, frozen=True):
    """A one-byte flag; only 1 means enabled."""

    enabled_flag: int
    layout, what = _U8, "flag"

    @property
    def enabled(self) -> bool:
        return self.enabled_flag == 1


class BacklightSetting(enum.IntEnum):
    NORMAL_SP_OR_ALWAYS_OFF_3P = 0
    N1_SECONDS_TURN_OFF_3P = 1
    N2_SECONDS_TURN_OFF_3P = 2
    N3_SECONDS_TURN_OFF_3P = 3
    N4_SECONDS_TURN_OFF_3P = 4
    N5_SECONDS_TURN_OFF_3P = 5
    N6_SECONDS_TURN_OFF_3P = 6
    N7_SECONDS_TURN_OFF_3P = 7
    N8_SECONDS_TURN_OFF_3P = 8
    N9_SECONDS_TURN_OFF_3P = 9
    N10_SECONDS_TURN_OFF_3P = 10
    N11_SECONDS_TURN_OFF_3P = 11
    N12_SECONDS_TURN_OFF_3P = 12
    N13_SECONDS_TURN_OFF_3P = 13
    N14_SECONDS_TURN_OFF_3P = 14
    N15_SECONDS_TURN_OFF_3P = 15
    N16_SECONDS_TURN_OFF_3P = 16
    N17_SECONDS_TURN_OFF_3P = 17
    N18_SECONDS_TURN_OFF_3P = 18
    N19_SECONDS_TURN_OFF_3P = 19
    N20_SECONDS_TURN_OFF_3P = 20
    N21_SECONDS_TURN_OFF_3P = 21
    N22_SECONDS_TURN_OFF_3P = 22
    N23_SECONDS_TURN_OFF_3P = 23
    N24_SECONDS_TURN_OFF_3P = 24
    N25_SECONDS_TURN_OFF_3P = 25
    N26_SECONDS_TURN_OFF_3P = 26
    N27_SECONDS_TURN_OFF_3P = 27
    N28_SECONDS_TURN_OFF_3P = 28
    N29_SECONDS_TURN_OFF_3P = 29
    N30_SECONDS_TURN_OFF_3P = 30
    ALWAYS_OFF_SP = 102
    ALWAYS_ON_SP = 119
    ALWAYS_ON_3P = 255


class LoadSwitchSetting(enum.IntEnum):
    NORMAL_BUTTON_ALWAYS = 0
    NO_BUTTON_PREPAY_MODE = 102
    NO_BUTTON_CREDIT_MODE = 119
    NEVER_BUTTON_REQUIRED = 136


class SettingRecord(PackedRecord, frozen=True):
    """A one-byte setting; values outside the class's ``settings`` enum stay plain integers."""

    settings: ClassVar[type[enum.IntEnum]]
    layout = _U8

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(enum_or_int(cls.settings, unpack(cls.layout, payload, cls.what)[0]))


class Backlight(SettingRecord, frozen=True):
    """``backlight``."""

    setting: BacklightSetting | int
    settings, what = BacklightSetting, "backlight"


class LoadSwitch(SettingRecord, frozen=True):
    """``load_switch``."""

    setting: LoadSwitchSetting | int
    settings, what = LoadSwitchSetting, "load switch"
