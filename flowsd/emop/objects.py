"""The object-id catalogue: all 213 objects of the SPEC appendix, by name and by id.

The 136 tariff price registers follow one numbering rule and are generated; the other
objects are listed as the appendix lists them.

Each :class:`ObjectInfo` says how the object's payload is laid out (:class:`Layout`, which
picks the record type in :mod:`flowsd.emop.codec`) and, for plain u32 values, what quantity
the number is (:class:`Quantity`: money in 1e-5 GBP, a timestamp, an energy register).
Ids are 24-bit integers; :func:`parse_object_ref` also accepts ``"ffc802"``, ``"255.200.2"``
and names, as an operator would type them.
"""

from __future__ import annotations

import enum
import re

import msgspec

from flowsd.emop.errors import UnknownObjectError


class Layout(enum.Enum):
    """How a default-format payload is laid out (one record type per layout)."""

    SERIAL = "ascii serial"
    HARDWARE = "ascii hardware version"
    FIRMWARE = "bytes (all)"
    HARDWARE_CONFIG = "bitfield u8 + 3 bytes"
    CLOCK = "7 x u8"
    CSQ = "u8 bitfield (operator, csq)"
    VOLTAGE = "u16le voltage"
    POWER = "u16le power"
    BALANCE = "s32le balance"
    FLAG = "u8 enabled_flag"
    BACKLIGHT = "u8 enum (backlight)"
    LOAD_SWITCH = "u8 enum (load switch)"
    REGISTERS = "4 x u32le"
    U32 = "u32le value"
    U8 = "u8 value"
    THRESHOLD_MASK = "u8 bitfield (rate mask)"
    THRESHOLD_VALUES = "7 x u16le"
    TRANSACTION_COUNT = "u16le count"
    TRANSACTION_DETAILS = "8 bytes + u32le + s32le"
    TIME_SWITCHES = "80 bytes"
    TOKEN = "ASCII token"
    RAW = "raw bytes (undecoded)"


class Quantity(enum.Enum):
    """What a plain number means, for the operator view."""

    NONE = "none"
    MONEY = "GBP (wire unit 1e-5 GBP)"
    TIMESTAMP = "seconds since 2000-01-01 UTC"
    ENERGY = "Wh (0.1 Wh on P1.cx)"


class ObjectInfo(msgspec.Struct, frozen=True):
    """One catalogue entry."""

    name: str
    id: int
    layout: Layout
    quantity: Quantity = Quantity.NONE

    @property
    def hex(self) -> str:
        return f"{self.id:06x}"

    @property
    def triplet(self) -> str:
        return f"{self.id >> 16}.{(self.id >> 8) & 0xFF}.{self.id & 0xFF}"


def _entry(name: str, oid: int, layout: Layout, quantity: Quantity = Quantity.NONE) -> ObjectInfo:
    return ObjectInfo(name, oid, layout, quantity)


def _price_banks() -> list[ObjectInfo]:
    """The u32 price registers (SPEC §6.12): for the active and the future tariff, 8 blocks
    of 8 rates at ``base + 8 x (block - 1) + rate`` and element B's 4 time-of-use rates."""
    entries = []
    for tariff, blocks, element_b in (
        ("active", 0xFFF900, 0xFFF700),
        ("future", 0xFFF800, 0xFFF600),
    ):
        for block in range(1, 9):
            for rate in range(1, 9):
                name = f"tariff_{tariff}_block_{block}_rate_{rate}"
                entries.append(
                    ObjectInfo(name, blocks + 8 * (block - 1) + rate, Layout.U32, Quantity.MONEY)
                )
        for rate in range(1, 5):
            name = f"tariff_{tariff}_element_b_tou_rate_{rate}"
            entries.append(ObjectInfo(name, element_b + rate, Layout.U32, Quantity.MONEY))
    return entries


L = Layout
Q = Quantity

_NAMED: tuple[ObjectInfo, ...] = (
    _entry("firmware_version", 0x000201, L.FIRMWARE),
    _entry("three_phase_hardware_configuration", 0x000503, L.HARDWARE_CONFIG),
    _entry("instantaneous_active_power", 0x010700, L.POWER),
    _entry("three_phase_total_active_import", 0x010800, L.U32, Q.ENERGY),
    _entry("three_phase_total_active_export", 0x020800, L.U32, Q.ENERGY),
    _entry("instantaneous_reactive_power", 0x030700, L.RAW),
    _entry("three_phase_total_reactive_import", 0x030800, L.U32, Q.ENERGY),
    _entry("three_phase_total_reactive_export", 0x040800, L.U32, Q.ENERGY),
    _entry("three_phase_total_apparent_import", 0x090800, L.U32, Q.ENERGY),
    _entry("instantaneous_current", 0x0B0700, L.RAW),
    _entry("average_current", 0x0B1800, L.RAW),
    _entry("instantaneous_voltage", 0x0C0700, L.VOLTAGE),
    _entry("average_voltage", 0x0C1800, L.RAW),
    _entry("tariff_time_switch_element_a_or_single", 0x0D0000, L.TIME_SWITCHES),
    _entry("tariff_time_switch_element_b", 0x0D00FF, L.TIME_SWITCHES),
    _entry("instantaneous_power_factor", 0x0D0700, L.RAW),
    _entry("instantaneous_frequency", 0x0E0700, L.RAW),
    _entry("average_frequency", 0x0E1800, L.RAW),
    _entry("three_phase_total_apparent_export", 0x100800, L.U32, Q.ENERGY),
    _entry("element_a_instantaneous_active_power_import", 0x150700, L.POWER),
    _entry("three_phase_instantaneous_voltage_l1", 0x200700, L.VOLTAGE),
    _entry("element_b_instantaneous_active_power_import", 0x290700, L.POWER),
    _entry("three_phase_instantaneous_voltage_l2", 0x340700, L.VOLTAGE),
    _entry("three_phase_instantaneous_voltage_l3", 0x480700, L.VOLTAGE),
    _entry("serial", 0x600100, L.SERIAL),
    _entry("hardware_version", 0x608000, L.HARDWARE),
    _entry("time", 0x800800, L.CLOCK),
    _entry("three_phase_read", 0xD7060A, L.RAW),
    _entry("three_phase_initiate_read", 0xD70A0C, L.RAW),
    _entry("active_import_demand", 0xD79600, L.RAW),
    _entry("active_export_demand", 0xD79601, L.RAW),
    _entry("reactive_import_demand", 0xD79602, L.RAW),
    _entry("reactive_export_demand", 0xD79603, L.RAW),
    _entry("reactive_energy_quadrant_1_demand", 0xD79604, L.RAW),
    _entry("reactive_energy_quadrant_2_demand", 0xD79605, L.RAW),
    _entry("reactive_energy_quadrant_3_demand", 0xD79606, L.RAW),
    _entry("reactive_energy_quadrant_4_demand", 0xD79607, L.RAW),
    _entry("three_phase_serial", 0xD7FF10, L.SERIAL),
    _entry("prepay_balance", 0xFFC802, L.BALANCE),
    _entry("prepay_token_send", 0xFFC803, L.TOKEN),
    _entry("tariff_active_prepayment_emergency_credit", 0xFFC805, L.U32, Q.MONEY),
    _entry("tariff_active_prepayment_ecredit_availability", 0xFFC806, L.U32, Q.MONEY),
    _entry("tariff_active_prepayment_debt_recovery_rate", 0xFFC807, L.U32, Q.MONEY),
    _entry("tariff_future_prepayment_emergency_credit", 0xFFC808, L.U32, Q.MONEY),
    _entry("tariff_future_prepayment_ecredit_availability", 0xFFC809, L.U32, Q.MONEY),
    _entry("tariff_future_prepayment_debt_recovery_rate", 0xFFC80A, L.U32, Q.MONEY),
    _entry("monetary_info_transaction_count", 0xFFC83E, L.TRANSACTION_COUNT),
    _entry("monetary_info_transaction_details", 0xFFC840, L.TRANSACTION_DETAILS),
    _entry("tariff_active_gas", 0xFFC964, L.U32, Q.MONEY),
    _entry("tariff_future_gas", 0xFFC965, L.U32, Q.MONEY),
    _entry("csq_net_op", 0xFFFD1D, L.CSQ),
    _entry("daylight_savings_correction_flag", 0xFFFF0B, L.FLAG),
    _entry("decimal_places_displayed_in_energy_registers", 0xFFFF0C, L.RAW),
    _entry("prepay_enabled_flag", 0xFFFF0D, L.FLAG),
    _entry("prepay_no_debt_recovery_when_emergency_credit_flag", 0xFFFF0E, L.FLAG),
    _entry("prepay_no_standing_charge_when_power_fail_flag", 0xFFFF0F, L.FLAG),
    _entry("backlight", 0xFFFF10, L.BACKLIGHT),
    _entry("load_switch", 0xFFFF11, L.LOAD_SWITCH),
    _entry("tariff_active_threshold_values", 0xFFFF1E, L.THRESHOLD_VALUES),
    _entry("tariff_future_threshold_values", 0xFFFF1F, L.THRESHOLD_VALUES),
    _entry("tariff_active_threshold_mask", 0xFFFF20, L.THRESHOLD_MASK),
    _entry("tariff_future_threshold_mask", 0xFFFF21, L.THRESHOLD_MASK),
    _entry("tariff_active_standing_charge", 0xFFFF22, L.U32, Q.MONEY),
    _entry("tariff_future_standing_charge", 0xFFFF23, L.U32, Q.MONEY),
    _entry("tariff_future_activation_datetime", 0xFFFF24, L.U32, Q.TIMESTAMP),
    _entry("tariff_active_tou_rate", 0xFFFF2B, L.U8),
    _entry("tariff_active_block_rate", 0xFFFF2C, L.U8),
    _entry("tariff_active_price_index_current", 0xFFFF2D, L.U8),
    _entry("tariff_active_price", 0xFFFF2E, L.U32, Q.MONEY),
    _entry("event_log", 0xFFFF49, L.RAW),
    _entry("tariff_active_element_b_tou_rate", 0xFFFF4B, L.U8),
    _entry("tariff_active_element_b_price_index_current", 0xFFFF4C, L.U8),
    _entry("tariff_active_element_b_price", 0xFFFF4D, L.U32, Q.MONEY),
    _entry("tariff_active_tou_flag", 0xFFFF4E, L.RAW),
    _entry("tariff_future_tou_flag", 0xFFFF4F, L.U8),
    _entry("read_element_b", 0xFFFFF8, L.REGISTERS),
    _entry("read_element_a", 0xFFFFFC, L.REGISTERS),
)

del L, Q

OBJECTS: tuple[ObjectInfo, ...] = tuple(sorted((*_NAMED, *_price_banks()), key=lambda o: o.id))
"""Every object, in id order."""

FLAG_OBJECT_IDS = frozenset(o.id for o in OBJECTS if o.layout is Layout.FLAG)
"""The one-byte on/off settings (prepay mode, daylight-saving correction, ...)."""

THREE_PHASE_VOLTAGE_OBJECTS = (
    "three_phase_instantaneous_voltage_l1",
    "three_phase_instantaneous_voltage_l2",
    "three_phase_instantaneous_voltage_l3",
)
"""A three-phase meter's voltages, one object a phase."""

THREE_PHASE_REGISTER_OBJECTS = (
    "three_phase_total_active_import",
    "three_phase_total_active_export",
    "three_phase_total_reactive_import",
    "three_phase_total_reactive_export",
    "three_phase_total_apparent_import",
    "three_phase_total_apparent_export",
)
"""A three-phase meter's cumulative registers, one object a register."""

_BY_NAME: dict[str, ObjectInfo] = {o.name: o for o in OBJECTS}
_BY_ID: dict[int, ObjectInfo] = {o.id: o for o in OBJECTS}

# The object id that event-log requests and responses (format 05) carry.
EVENT_LOG_OBJECT_ID = 0xFFFF49


def by_name(name: str) -> ObjectInfo:
    """The entry called ``name`` (raises :class:`UnknownObjectError`)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownObjectError(f"unknown object name {name!r}") from None


def by_id(object_id: int) -> ObjectInfo | None:
    """The entry with this 24-bit id, or None for an id outside the catalogue."""
    return _BY_ID.get(object_id)


def object_id(name: str) -> int:
    """The 24-bit id of the object called ``name``."""
    return by_name(name).id


_HEX = re.compile(r"(?:0x)?([0-9a-fA-F]{6})")
_TRIPLET = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})")


def parse_object_ref(text: str) -> int:
    """An object id from a name, 6 hex digits (``ffc802``/``0xffc802``) or ``a.b.c``."""
    if text in _BY_NAME:
        return _BY_NAME[text].id
    if match := _HEX.fullmatch(text):
        return int(match.group(1), 16)
    if match := _TRIPLET.fullmatch(text):
        parts = [int(p) for p in match.groups()]
        if all(p <= 255 for p in parts):
            return (parts[0] << 16) | (parts[1] << 8) | parts[2]
    raise UnknownObjectError(f"not an object name, 6-digit hex id or a.b.c triplet: {text!r}")
