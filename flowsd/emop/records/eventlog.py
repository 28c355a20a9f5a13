"""The event log (format 05, SPEC §9): blocks of ten 6-byte events, newest first."""

from __future__ import annotations

import enum
import struct
from datetime import datetime
from typing import Self

import msgspec

from flowsd.emop.errors import EncodeError, PayloadError
from flowsd.emop.records.base import Record, enum_or_int, need, pack
from flowsd.emop.units import from_emop_seconds

EVENTS_PER_BLOCK = 10
EVENT_LOG_BLOCKS = 10
_EVENT = struct.Struct("<IBB")


class EventId(enum.IntEnum):
    BM_OVER_CURRENT = 1
    BM_FAULTY_CONTACTOR = 2
    BM_REVERSE_ENERGY_DETECT = 3
    BM_TERMINAL_COVER_REMOVED = 4
    BM_WATCHDOG_RESET = 5
    BM_NV_WRITE_EXCEEDED = 6
    BM_METROLOGY_ERROR = 7
    BM_MEMORY_ERROR = 8
    BM_MODULE_REMOVED = 9
    BM_MAGNETIC_FRAUD = 10
    BM_NON_LEGAL_TIME = 11
    BM_SPAD_1_WRITE = 15
    BM_SPAD_2_WRITE = 16
    DSP_ERROR = 17
    BM_COMMS_ERROR = 18
    GW_COMMS_ERROR = 19
    PF_TAG_1_ERROR = 20
    PF_TAG_2_ERROR = 21
    SPARE_0020 = 22
    SPARE_0040 = 23
    SPARE_0080 = 24
    NON_LEGAL_TIME = 25
    MEMORY_TYPE = 26
    MEMORY_ERROR = 27
    WATCHDOG_RESET = 28
    SW_IMAGE_WDOG = 29
    SW_IMAGE_HES_PREVIOUS = 30
    SW_IMAGE_APPLIED = 31
    SW_IMAGE_BAD = 32
    EVENT_POWER_UP = 33
    EVENT_POWER_DN = 34
    EVENT_IMAGE_RECEIVED = 35
    EVENT_LOG_RESET_ID = 36
    EVENT_IMAGE_ERROR = 37
    DAILY_LOG_SNAPSHOT = 38
    BILLING_LOG_SNAPSHOT = 39
    DO_BIND_COMMAND = 40
    DO_UNBIND_COMMAND = 41
    NEW_IMAGE_APPLIED = 42
    WATCHDOG_IMAGE_APPLIED = 43
    PREVIOUS_IMAGE_APPLIED = 44
    HES_MSG_PENDING = 61
    SM_COMMS_ERROR = 62
    WAN_COMMS_ERROR = 63
    HAN_COMMS_ERROR_GAS = 64
    HAN_COMMS_ERROR_IHU = 65
    HAN_API_NOT_RESPONDING = 66
    SPARE_0040_2 = 67
    SPARE_0080_2 = 68
    NON_LEGAL_TIME_2 = 69
    MEMORY_TYPE_2 = 70
    MEMORY_ERROR_2 = 71
    WATCHDOG_RESET_2 = 72
    SW_IMAGE_WDOG_2 = 73
    SW_IMAGE_HES_PREVIOUS_2 = 74
    SW_IMAGE_APPLIED_2 = 75
    SW_IMAGE_BAD_2 = 76
    EVENT_IMAGE_RECEIVED_2 = 77
    EVENT_LOG_RESET_ID_2 = 78
    HAN_DEVICE_JOINED = 80
    HAN_DEVICE_LEFT = 81
    INVALID_WAN_MESSAGE = 83
    EVENT_POWER_UP_2 = 84
    EVENT_POWER_DOWN = 85
    LAST_GASP_SENT_TO_HES = 86
    ALARM_SENT_TO_HES = 87
    EVENT_IMAGE_ERROR_2 = 88
    GW_DO_UNBIND_COMMAND = 89
    GW_DO_BIND_COMMAND = 90
    GW_NEW_IMAGE_APPLIED = 91
    GW_WATCHDOG_IMAGE_APPLIED = 92
    GW_PREVIOUS_IMAGE_APPLIED = 93
    GSM_RESET_NO_CONNECTION = 94
    STATUS_WORD_RESET = 95
    ZIGBEE_GET_SW_VER_ERR = 96
    ZIGBEE_SEND_MAC_LINK_ERR = 97
    ZIGBEE_SHUTODWN_ERR = 98  # sic: the name the meters' documentation uses
    ZIGBEE_ACTIVE_IMAGE_ERR = 99
    LISTENING_SOCKET_ABORTED = 104
    AUTO_ROAMING_DISABLE = 105


class Event(msgspec.Struct, frozen=True):
    """One event; an id outside :class:`EventId` stays a plain integer (0 is invalid)."""

    timestamp: int
    event_id: EventId | int
    event_set: int

    @property
    def datetime(self) -> datetime:
        return from_emop_seconds(self.timestamp)


class EventLog(Record, frozen=True):
    """An event-log response body: echoed object id, the byte after it, the events.

    ``read_write`` is the byte after the object id; the request puts the block index there
    and the reference decodes it as a read/write flag, so 0 and 1 show as read and write.
    """

    object_id: bytes
    read_write: int
    events: tuple[Event, ...]

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        need(payload, 4, "event log")
        body = payload[4:]
        if len(body) % _EVENT.size:
            raise PayloadError(f"event log: {len(body)} bytes is not a whole number of events")
        events = tuple(
            Event(ts, enum_or_int(EventId, eid), event_set)
            for ts, eid, event_set in _EVENT.iter_unpack(body)
        )
        return cls(bytes(payload[:3]), payload[3], events)

    def encode(self) -> bytes:
        if len(self.object_id) != 3 or not 0 <= self.read_write <= 0xFF:
            raise EncodeError("event log: object id is 3 bytes and the flag one byte")
        out = bytearray(self.object_id)
        out.append(self.read_write)
        for e in self.events:
            out += pack(_EVENT, "event", e.timestamp, int(e.event_id), e.event_set)
        return bytes(out)
