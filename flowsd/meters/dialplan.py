"""Which active rows of ``flows.meter_registry`` flowsd dials, and why it does not dial others.

Addresses are compared as hosts: the registry's ``inet`` may carry a netmask (``/24``), which
means nothing for a meter and is dropped, and an IPv4-mapped IPv6 address is its IPv4 address.
An active row is **not dialled**, with a reason, when it has no address, an address of the
wrong family (flowsd dials meters over IPv4), the unspecified address (``0.0.0.0``, which the
kernel turns into this host) or one that is not a unicast address, when this host has no
route to its network, or when an older active row already has its address or its serial
(compared without case and surrounding blanks): one device is never polled under two ids.
Of two rows sharing an address or serial the oldest (``created_at``, then id) is dialled.

:func:`dial_plan` is pure; the route check (:func:`route_problem`) asks the kernel's routing
table through an unconnected UDP socket's ``connect()``, which sends nothing.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Literal, get_args
from uuid import UUID

import msgspec

NotDialledKind = Literal[
    "no_address",
    "wrong_family",
    "unspecified_address",
    "not_unicast",
    "unreachable_network",
    "duplicate_address",
    "duplicate_serial",
]
NOT_DIALLED_KINDS: tuple[NotDialledKind, ...] = get_args(NotDialledKind)

_UNROUTABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL})
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


class RegistryRow(msgspec.Struct, frozen=True):
    """One active row as stored (``address``: ``host(ip_address)``, None when NULL)."""

    meter_id: UUID
    serial: str | None
    address: str | None
    hardware: str | None


class RegistryMeter(msgspec.Struct, frozen=True):
    """One meter flowsd dials (``ip_address``: a normalised IPv4 host address)."""

    meter_id: UUID
    serial: str | None
    ip_address: str
    hardware: str | None


class NotDialled(msgspec.Struct, frozen=True):
    """One active meter flowsd does not dial; ``reason`` is for people, ``kind`` for metrics."""

    meter_id: UUID
    serial: str | None
    kind: NotDialledKind
    reason: str


class DialPlan(msgspec.Struct, frozen=True):
    dialled: list[RegistryMeter]
    not_dialled: list[NotDialled]


def normalise(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The host address (mask dropped, IPv4-mapped IPv6 as IPv4); None if not an address."""
    try:
        parsed = ipaddress.ip_interface(address.strip()).ip
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def address_problem(address: str | None) -> tuple[NotDialledKind, str] | None:
    """Why ``address`` cannot be a meter's, without asking the network; None if it can."""
    if address is None or not address.strip():
        return "no_address", "no ip_address in meter_registry"
    host = normalise(address)
    if host is None:
        return "wrong_family", f"{address!r} is not an IP address"
    if isinstance(host, ipaddress.IPv6Address):
        return "wrong_family", f"IPv6 address {host}: flowsd dials meters over IPv4 only"
    if host.is_unspecified or host in _THIS_NETWORK:
        return "unspecified_address", f"{host} is not a meter's address (it means this host)"
    if host.is_multicast or host.is_reserved or host == ipaddress.IPv4Address("255.255.255.255"):
        return "not_unicast", f"{host} is not a unicast address"
    return None


def route_problem(address: str) -> str | None:
    """Why this host cannot reach ``address`` (no route to its network), or None."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((address, 9))
    except OSError as exc:
        if exc.errno in _UNROUTABLE:
            return f"no route to {address} from this host: {exc.strerror}"
        return None
    finally:
        probe.close()
    return None


def dial_plan(
    rows: Sequence[RegistryRow], *, unroutable: Callable[[str], str | None] = lambda _: None
) -> DialPlan:
    """Split active ``rows`` (oldest first) into the dialled and the not dialled, with why.

    ``unroutable`` answers :func:`route_problem` for a normalised address (the caller may
    cache it); the default asks nothing.
    """
    dialled: list[RegistryMeter] = []
    skipped: list[NotDialled] = []
    by_address: dict[str, RegistryMeter] = {}
    by_serial: dict[str, RegistryMeter] = {}
    for row in rows:
        problem = address_problem(row.address)
        if problem is not None:
            skipped.append(NotDialled(row.meter_id, row.serial, *problem))
            continue
        assert row.address is not None
        # One string per address: normally the row's own (the registry stores host addresses).
        host = sys.intern(str(normalise(row.address)))
        serial_key = row.serial.strip().upper() if row.serial and row.serial.strip() else None
        first = by_address.get(host)
        if first is not None:
            reason = f"address {host} is also meter {_name(first)}'s, which is dialled"
            skipped.append(NotDialled(row.meter_id, row.serial, "duplicate_address", reason))
            continue
        first = by_serial.get(serial_key) if serial_key else None
        if first is not None:
            reason = f"serial {serial_key} is also meter {first.meter_id}'s, which is dialled"
            skipped.append(NotDialled(row.meter_id, row.serial, "duplicate_serial", reason))
            continue
        route = unroutable(host)
        if route is not None:
            skipped.append(NotDialled(row.meter_id, row.serial, "unreachable_network", route))
            continue
        meter = RegistryMeter(row.meter_id, row.serial, host, row.hardware)
        dialled.append(meter)
        by_address[host] = meter
        if serial_key:
            by_serial[serial_key] = meter
    return DialPlan(dialled, skipped)


def _name(meter: RegistryMeter) -> str:
    return f"{meter.serial} ({meter.meter_id})" if meter.serial else str(meter.meter_id)
