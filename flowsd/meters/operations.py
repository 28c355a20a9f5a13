"""What a command does to a meter: the operations, their writes and their read-backs.

* :class:`ReadObject` — one object read (gRPC ``readElement``, ``flowsd meter S read``);
* :class:`Exchange` — one request as the caller built it (gRPC ``sendRawMessage``);
* :class:`Writes` — writes in order, then a read-back of what they changed; built by
  :func:`write_element` (gRPC ``writeElement``), :func:`top_up`, :func:`set_clock`,
  :func:`future_tariff` (the 11 writes of SPEC §7) and :func:`prepay`.

:func:`readback_of` says what a write of one object changes, :func:`payload_digest` how a
payload is recorded without being stored in clear.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import msgspec

from flowsd.emop import Record, Request, WriteRequest, by_id, object_id
from flowsd.emop.objects import FLAG_OBJECT_IDS
from flowsd.emop.records import PrepayBalance
from flowsd.emop.view import operator_value
from flowsd.meters.plan import TARIFFS_FUTURE

TOKEN_OBJECT_ID = object_id("prepay_token_send")
_TIME = object_id("time")
_FUTURE_TARIFF_IDS = frozenset(
    [object_id(n) for n in TARIFFS_FUTURE]
    + [object_id(n) for n in ("tariff_future_tou_flag", "tariff_future_gas")]
    + list(range(0xFFF801, 0xFFF841))  # future block prices
    + list(range(0xFFF601, 0xFFF605))  # future element-B TOU prices
)
_READ_BACK_ITSELF = FLAG_OBJECT_IDS | {object_id("backlight"), object_id("load_switch")}
PREPAY_MINIMUM_BALANCE = Decimal("10.00")


def readback_of(oid: int) -> tuple[tuple[str, ...], bool]:
    """What to read after a write of ``oid``, and whether to wait for a sequence to end.

    A token changes the balance, a clock set the clock, a flag or setting itself; a future
    tariff is read whole (9 reads), once the caller's sequence of writes has settled.
    """
    if oid == TOKEN_OBJECT_ID:
        return ("prepay_balance",), False
    if oid == _TIME:
        return ("time",), False
    if oid in _READ_BACK_ITSELF:
        info = by_id(oid)
        assert info is not None
        return (info.name,), False
    if oid in _FUTURE_TARIFF_IDS:
        return TARIFFS_FUTURE, True
    return (), False


def payload_digest(meter_id: UUID, payloads: Sequence[bytes]) -> str:
    """``sha256(meter id | payload 1 | payload 2 ...)`` in hex: the same write to the same
    meter gives the same digest (a token used twice is recognisable), while the meter id
    salts it so a digest cannot be looked up across meters. Mirrored by the command table's
    trigger for top-up tokens (migration 80)."""
    digest = hashlib.sha256(f"{meter_id}".encode())
    for payload in payloads:
        digest.update(b"|")
        digest.update(payload)
    return digest.hexdigest()


def object_name(oid: int) -> str:
    info = by_id(oid)
    return info.name if info is not None else f"{oid:06x}"


def value_text(oid: int, record: Record) -> str:
    value, _unit = operator_value(by_id(oid), record)
    if value is None:
        return msgspec.json.encode(msgspec.to_builtins(record)).decode()
    return str(value)


# --------------------------------------------------------------------- operations


class ReadObject(msgspec.Struct, frozen=True):
    """Read one object; the reading becomes an event like a poll's."""

    object_id: int

    @property
    def name(self) -> str:
        return object_name(self.object_id)


class Exchange(msgspec.Struct, frozen=True):
    """One request as the caller built it (a raw data field)."""

    request: Request


WriteBuilder = Callable[[datetime], list[WriteRequest]]


@dataclass(frozen=True)
class Writes:
    """Writes in order, then a read-back of ``readback``.

    ``build`` makes the writes when the command starts (a clock set sends the time of
    sending, not of asking). ``before`` are objects read first (the balance before a
    top-up), ``precondition`` may refuse the command from what they show. ``secret``:
    the payload (a token) never appears in clear in events or logs. ``readback_later``:
    the read-back waits until the caller's writes have settled (raw future-tariff writes
    arrive one request at a time).
    """

    operation: str
    objects: tuple[str, ...]
    build: WriteBuilder
    readback: tuple[str, ...] = ()
    readback_later: bool = False
    before: tuple[str, ...] = ()
    precondition: Callable[[dict[str, Record]], str | None] | None = None
    secret: bool = False
    arguments: dict[str, str] = field(default_factory=dict)


Operation = ReadObject | Exchange | Writes


def write_element(oid: int, payload: bytes) -> Writes:
    """One write of ``payload`` to ``oid`` (gRPC ``writeElement``), read back by its kind."""
    readback, later = readback_of(oid)
    name = object_name(oid)
    return Writes(
        operation="write_element",
        objects=(name,),
        build=lambda _now: [WriteRequest(oid, payload)],
        readback=readback,
        readback_later=later,
        secret=oid == TOKEN_OBJECT_ID,
        arguments={} if oid == TOKEN_OBJECT_ID else {"object": name, "payload_hex": payload.hex()},
    )


def top_up(token: str) -> Writes:
    from flowsd.emop import writes  # noqa: PLC0415 - keeps the import graph of meters small

    request = writes.top_up(token)
    return Writes(
        operation="top_up",
        objects=("prepay_token_send",),
        build=lambda _now: [request],
        readback=("prepay_balance",),
        before=("prepay_balance",),
        secret=True,
    )


def set_clock() -> Writes:
    from flowsd.emop import writes  # noqa: PLC0415

    return Writes(
        operation="set_clock",
        objects=("time",),
        build=lambda now: [writes.set_clock(now)],
        readback=("time",),
        arguments={"to": "utc_now_when_sent"},
    )


def future_tariff(
    *,
    activation: datetime,
    unit_rate: Decimal,
    standing_charge: Decimal,
    emergency_credit: Decimal,
    ecredit_availability: Decimal,
    debt_recovery_rate: Decimal,
) -> Writes:
    """The 11 writes of SPEC §7 (validated now: a bad amount is refused before queueing)."""
    from flowsd.emop import writes  # noqa: PLC0415

    requests = writes.future_tariff_writes(
        unit_rate=unit_rate,
        standing_charge=standing_charge,
        activation=activation,
        emergency_credit=emergency_credit,
        ecredit_availability=ecredit_availability,
        debt_recovery_rate=debt_recovery_rate,
    )
    return Writes(
        operation="future_tariff",
        objects=tuple(object_name(r.object_id) for r in requests),
        build=lambda _now: list(requests),
        readback=TARIFFS_FUTURE,
        arguments={
            "activation": activation.isoformat(),
            "unit_rate": str(unit_rate),
            "standing_charge": str(standing_charge),
            "emergency_credit": str(emergency_credit),
            "ecredit_availability": str(ecredit_availability),
            "debt_recovery_rate": str(debt_recovery_rate),
        },
    )


def _enough_credit(before: dict[str, Record]) -> str | None:
    balance = before.get("prepay_balance")
    if not isinstance(balance, PrepayBalance):
        return "the balance could not be read"
    if balance.gbp < PREPAY_MINIMUM_BALANCE:
        return f"balance £{balance.gbp} is below £{PREPAY_MINIMUM_BALANCE}"
    return None


def prepay(enabled: bool) -> Writes:
    """Prepay mode on or off; like the reference, enabling needs a balance of £10 or more."""
    from flowsd.emop import writes  # noqa: PLC0415

    request = writes.set_flag("prepay_enabled_flag", enabled)
    return Writes(
        operation="prepay_on" if enabled else "prepay_off",
        objects=("prepay_enabled_flag",),
        build=lambda _now: [request],
        readback=("prepay_enabled_flag",),
        before=("prepay_balance",) if enabled else (),
        precondition=_enough_credit if enabled else None,
        arguments={"enabled": str(enabled).lower()},
    )
