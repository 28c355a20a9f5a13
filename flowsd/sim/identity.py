"""Who each simulated meter is: serial, hardware, address, registers and their habits.

Everything here is drawn once from ``(seed, index)``; an identity is cheap to rebuild, so
the fleet keeps only a small cache of them instead of one object per meter.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from flowsd.emop.hardware import Hardware as MeterHardware
from flowsd.sim.rand import Stream, between, integer, uniform

SECONDS_PER_DAY = 86_400
# Meters are commissioned up to ~2 years before this day (2025-06-01 in EMOP days).
_LATEST_COMMISSION_DAY = 9_283


class Hardware(enum.StrEnum):
    """The hardware kinds the simulator builds, named as the reference names them."""

    C1W = "C1.w"
    EMA1W = "EMA1.w"
    B1W = "B1.w"
    P1AX = "P1.ax"
    P1CX = "P1.cx"

    @property
    def three_phase(self) -> bool:
        return MeterHardware.named(self.value).three_phase

    @property
    def twin_element(self) -> bool:
        return MeterHardware.named(self.value).twin_element

    @property
    def counts_per_kwh(self) -> int:
        return MeterHardware.named(self.value).counts_per_kwh

    @property
    def version_string(self) -> str:
        """The ``hardware_version`` payload a single-phase meter of this kind returns."""
        return _VERSION_STRINGS[self]


_VERSION_STRINGS = {
    Hardware.C1W: "6Cw ",
    Hardware.EMA1W: "3Aw ",
    Hardware.B1W: "6Bw ",
    Hardware.P1AX: "",
    Hardware.P1CX: "",
}

# Cumulative shares of the default hardware mix.
_MIX = (
    (0.35, Hardware.C1W),
    (0.55, Hardware.EMA1W),
    (0.75, Hardware.B1W),
    (0.88, Hardware.P1AX),
    (1.00, Hardware.P1CX),
)


class Shape(enum.Enum):
    """The daily load shape a register follows."""

    POWER = "power"
    HEAT = "heat"
    SOLAR = "solar"
    COMMERCIAL = "commercial"
    NONE = "none"


class ChannelId(enum.IntEnum):
    """The simulated cumulative active-energy registers of a meter."""

    IMPORT_A = 1
    IMPORT_B = 2
    EXPORT_A = 3
    EXPORT_B = 4


@dataclass(frozen=True, slots=True)
class Channel:
    """One cumulative register's habits (energies in Wh)."""

    id: ChannelId
    shape: Shape
    base_wh: int
    mean_wh_per_day: float
    seasonal_amplitude: float
    peak_day_of_year: float
    day_noise: float


@dataclass(frozen=True, slots=True)
class MeterIdentity:
    """The fixed facts of one simulated meter."""

    seed: int
    index: int
    serial: str
    hardware: Hardware
    ip_address: str
    meter_address: int
    commission_day: int
    solar: bool
    hardware_version_naks: bool
    channels: tuple[Channel, ...]
    reactive_ratio: float
    firmware: bytes
    drift_ppm: float
    initial_clock_offset: float
    csq_base: int
    network_operator: int
    opening_balance: int
    opening_debt: int
    prepay_enabled: bool
    dst_enabled: bool

    @property
    def commissioned_at(self) -> int:
        return self.commission_day * SECONDS_PER_DAY

    def channel(self, channel_id: ChannelId) -> Channel:
        return self.channels[channel_id - 1]


def pick_hardware(seed: int, index: int) -> Hardware:
    """The default mix: mostly single-phase, about a quarter three-phase."""
    u = uniform(seed, index, Stream.HARDWARE)
    for share, hardware in _MIX:
        if u < share:
            return hardware
    return Hardware.P1CX


FIRST_SERIAL = 2_137_580_826  # the documentation's example meter, EML2137580826


def serial_for(index: int) -> str:
    """A 13-character serial unique within the fleet (a bijection of the index), counting from
    the documentation's example serial: meter 0 of every fleet is EML2137580826, as the
    documented queries expect. Fleets of different seeds therefore share serials (a database
    holds one simulated fleet)."""
    return f"EML{FIRST_SERIAL + index * 7_919 % 100_000_000:010d}"


def ip_for(base_address: str, index: int) -> str:
    """Consecutive loopback addresses from ``base_address``; must stay inside 127.0.0.0/8."""
    address = ipaddress.IPv4Address(base_address) + index
    if address not in ipaddress.IPv4Network("127.0.0.0/8"):
        raise ValueError(f"meter {index} would get {address}, outside 127.0.0.0/8")
    return str(address)


def _channel(
    seed: int, index: int, channel_id: ChannelId, shape: Shape, mean_range: tuple[float, float]
) -> Channel:
    keys = (seed, index, Stream.CHANNEL, channel_id)
    if shape is Shape.NONE:
        return Channel(channel_id, shape, integer(0, 50_000, *keys, 1), 0.0, 0.0, 0.0, 0.0)
    # Amplitudes keep every day's total positive: 1 - amplitude - 2 × noise > 0.
    amplitude, peak, noise = {
        Shape.POWER: (0.2, 15.0, 0.15),
        Shape.HEAT: (0.5, 15.0, 0.1),
        Shape.SOLAR: (0.7, 172.0, 0.1),
        Shape.COMMERCIAL: (0.15, 15.0, 0.15),
    }[shape]
    return Channel(
        id=channel_id,
        shape=shape,
        base_wh=integer(100_000, 20_000_000, *keys, 1),
        mean_wh_per_day=between(*mean_range, *keys, 2),
        seasonal_amplitude=amplitude,
        peak_day_of_year=peak,
        day_noise=noise,
    )


def build_identity(
    seed: int, index: int, base_address: str, hardware: Hardware | None = None
) -> MeterIdentity:
    """The identity of meter ``index`` (hardware from the default mix unless given)."""
    kind = hardware if hardware is not None else pick_hardware(seed, index)
    solar = uniform(seed, index, Stream.IDENTITY, 1) < (0.3 if not kind.three_phase else 0.15)
    if kind.three_phase:
        import_a = _channel(seed, index, ChannelId.IMPORT_A, Shape.COMMERCIAL, (30e3, 150e3))
        import_b = _channel(seed, index, ChannelId.IMPORT_B, Shape.NONE, (0, 0))
    else:
        import_a = _channel(seed, index, ChannelId.IMPORT_A, Shape.POWER, (4e3, 12e3))
        if kind.twin_element:
            import_b = _channel(seed, index, ChannelId.IMPORT_B, Shape.HEAT, (6e3, 25e3))
        else:
            import_b = Channel(ChannelId.IMPORT_B, Shape.NONE, 0, 0.0, 0.0, 0.0, 0.0)
    export_shape = Shape.SOLAR if solar else Shape.NONE
    export_a = _channel(seed, index, ChannelId.EXPORT_A, export_shape, (3e3, 14e3))
    export_b = _channel(seed, index, ChannelId.EXPORT_B, Shape.NONE, (0, 0))
    if not kind.twin_element:
        export_b = Channel(ChannelId.EXPORT_B, Shape.NONE, 0, 0.0, 0.0, 0.0, 0.0)
    keys = (seed, index, Stream.IDENTITY)
    drifty = uniform(*keys, 2) < 0.1
    has_debt = uniform(*keys, 3) < 0.15
    return MeterIdentity(
        seed=seed,
        index=index,
        serial=serial_for(index),
        hardware=kind,
        ip_address=ip_for(base_address, index),
        meter_address=0x010000 + index,
        commission_day=_LATEST_COMMISSION_DAY - integer(0, 700, *keys, 4),
        solar=solar,
        hardware_version_naks=kind.three_phase and uniform(*keys, 5) < 0.5,
        channels=(import_a, import_b, export_a, export_b),
        reactive_ratio=between(0.04, 0.2, *keys, 6),
        firmware=b"\x01\x07" if kind.three_phase else (b"3032", b"3020", b"3041")[index % 3],
        drift_ppm=between(15.0, 30.0, *keys, 7) if drifty else between(-4.0, 12.0, *keys, 7),
        initial_clock_offset=between(-5.0, 5.0, *keys, 8),
        csq_base=integer(8, 27, *keys, 9),
        network_operator=1 + integer(0, 1, *keys, 10),
        opening_balance=integer(5, 60, *keys, 11) * 100_000,
        opening_debt=integer(20, 300, *keys, 12) * 100_000 if has_debt else 0,
        prepay_enabled=uniform(*keys, 13) < 0.3,
        dst_enabled=uniform(*keys, 14) < 0.7,
    )
