"""Typed records for every EMOP payload, one module per family.

Every record is a frozen msgspec Struct deriving from :class:`~flowsd.emop.records.base.Record`:
``Type.decode(payload)`` parses the bytes after the data field's header, ``record.encode()``
produces them again. Field names and raw integers follow the SPEC (and the reference package);
properties add the values in operator units (GBP as Decimal, kWh, volts, datetimes).
"""

from flowsd.emop.records.base import RawPayload, Record
from flowsd.emop.records.clock import ClockTime, DayOfWeek
from flowsd.emop.records.eventlog import Event, EventId, EventLog
from flowsd.emop.records.identity import (
    FirmwareVersion,
    Fitted,
    HardwareVersion,
    MeterType,
    MiddleOutputTerminals,
    Serial,
    ThreePhaseHardwareConfiguration,
)
from flowsd.emop.records.instant import (
    ActivePower,
    Backlight,
    BacklightSetting,
    CsqNetOp,
    Flag,
    LoadSwitch,
    LoadSwitchSetting,
    Voltage,
)
from flowsd.emop.records.prepay import (
    PrepayBalance,
    TopUpToken,
    TransactionCount,
    TransactionDetails,
)
from flowsd.emop.records.profile import (
    ProfileLog1,
    ProfileLog1Record,
    ProfileLog2,
    ProfileLog2Record,
    ProfileLog2SingleRecord,
    ProfileLog2TwinRecord,
    ProfileStatus,
)
from flowsd.emop.records.registers import Registers
from flowsd.emop.records.tariffs import (
    ThresholdMask,
    ThresholdValues,
    TimeSwitches,
    U8Value,
    U32Value,
)
from flowsd.emop.records.threephase import IntervalRecord, IntervalStatus, ThreePhaseIntervals

__all__ = [
    "ActivePower",
    "Backlight",
    "BacklightSetting",
    "ClockTime",
    "CsqNetOp",
    "DayOfWeek",
    "Event",
    "EventId",
    "EventLog",
    "FirmwareVersion",
    "Fitted",
    "Flag",
    "HardwareVersion",
    "IntervalRecord",
    "IntervalStatus",
    "LoadSwitch",
    "LoadSwitchSetting",
    "MeterType",
    "MiddleOutputTerminals",
    "PrepayBalance",
    "ProfileLog1",
    "ProfileLog1Record",
    "ProfileLog2",
    "ProfileLog2Record",
    "ProfileLog2SingleRecord",
    "ProfileLog2TwinRecord",
    "ProfileStatus",
    "RawPayload",
    "Record",
    "Registers",
    "Serial",
    "ThreePhaseHardwareConfiguration",
    "ThreePhaseIntervals",
    "ThresholdMask",
    "ThresholdValues",
    "TimeSwitches",
    "TopUpToken",
    "TransactionCount",
    "TransactionDetails",
    "U8Value",
    "U32Value",
    "Voltage",
]
