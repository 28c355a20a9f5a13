"""Who is calling, and what they may do: roles from the client certificate, ESCO scopes.

With mutual TLS every client presents a certificate signed by ``[mediator] tls_client_ca``.
As in the reference mediator, its subject's CN names the client and its OU gives its role
(``writer_units``, ``reader_units``, ``info_units``, else ``default_role``), a CN listed in
``client_roles`` overriding the OU. Roles:

=======  =====================================================================
writer   every method
reader   ``readElement``, ``sendRawMessage`` of a read, ``GetInfo``, ``GetMeters``
info     ``GetInfo``, ``GetMeters``
none     nothing
=======  =====================================================================

A CN listed in ``client_escos`` reaches only meters of those ESCOs (by code); ``GetMeters``
lists only them. Unlike the reference, a raw message is judged by what it does (a read or a
write), and the check uses the method's full path, so no method escapes it. Without TLS
(loopback only) there is no identity: every local client is a writer, as in the reference.
A refusal is ``PERMISSION_DENIED``, a warning in the log and a count in
``flowsd_mediator_refusals_total{reason}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal

import msgspec

from flowsd.config import MediatorConfig, Role

Access = Literal["read", "write", "info"]
_ALLOWED: dict[Role, frozenset[Access]] = {
    "writer": frozenset({"read", "write", "info"}),
    "reader": frozenset({"read", "info"}),
    "info": frozenset({"info"}),
    "none": frozenset(),
}
# One RFC 4514-ish attribute of a subject string as gRPC reports it ("CN=a,OU=b,O=c"),
# honouring backslash escapes.
_ATTRIBUTE = re.compile(r"(?:^|,)\s*([A-Za-z0-9.]+)=((?:\\.|[^,\\])*)")


class Identity(msgspec.Struct, frozen=True):
    """The calling client: its certificate's CN and OU, or the peer without TLS."""

    common_name: str | None
    unit: str | None
    peer: str

    @property
    def authenticated(self) -> bool:
        return self.common_name is not None

    def describe(self) -> str:
        """For events and logs: ``CN=ops,OU=internal`` or ``peer ipv4:127.0.0.1:5123``."""
        if self.common_name is None:
            return f"peer {self.peer} (no TLS)"
        unit = f",OU={self.unit}" if self.unit else ""
        return f"CN={self.common_name}{unit}"


def _first(values: Iterable[bytes] | None) -> str | None:
    raw = next(iter(values or ()), None)
    if raw is None:
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def subject_attribute(subject: str, name: str) -> str | None:
    """The first ``name`` attribute (``OU``, ``CN`` ...) of a subject string."""
    for key, value in _ATTRIBUTE.findall(subject):
        if key.upper() == name:
            return re.sub(r"\\(.)", r"\1", value).strip()
    return None


def identity_of(auth_context: Mapping[str, Iterable[bytes]], peer: str) -> Identity:
    """The client's identity from gRPC's auth context (``x509_common_name``,
    ``x509_subject``), or an anonymous one without a client certificate."""
    common_name = _first(auth_context.get("x509_common_name"))
    subject = _first(auth_context.get("x509_subject")) or ""
    unit = subject_attribute(subject, "OU") if subject else None
    if common_name is None and subject:
        common_name = subject_attribute(subject, "CN")
    return Identity(common_name or None, unit or None, peer)


class Refusal(msgspec.Struct, frozen=True):
    reason: Literal["role", "esco"]
    message: str


class Policy:
    """``[mediator]``'s authorisation rules."""

    def __init__(self, config: MediatorConfig, *, tls: bool) -> None:
        self.tls = tls
        self.config = config
        self._roles: dict[str, Role] = {}
        for units, role in (
            (config.writer_units, "writer"),
            (config.reader_units, "reader"),
            (config.info_units, "info"),
        ):
            for unit in units:
                self._roles.setdefault(unit, role)  # type: ignore[arg-type]

    def role(self, identity: Identity) -> Role:
        if not self.tls or identity.common_name is None:
            return "writer"  # no TLS: loopback only, no identity to judge (as the reference)
        override = self.config.client_roles.get(identity.common_name)
        if override is not None:
            return override
        if identity.unit is not None and identity.unit in self._roles:
            return self._roles[identity.unit]
        return self.config.default_role

    def escos(self, identity: Identity) -> frozenset[str] | None:
        """The ESCO codes the client is limited to (None: every ESCO)."""
        if identity.common_name is None:
            return None
        codes = self.config.client_escos.get(identity.common_name)
        return None if codes is None else frozenset(codes)

    def check(self, identity: Identity, access: Access, method: str) -> Refusal | None:
        role = self.role(identity)
        if access in _ALLOWED[role]:
            return None
        return Refusal("role", f"client {identity.describe()} (role {role}) may not call {method}")

    def check_esco(self, identity: Identity, esco: str | None, serial: str) -> Refusal | None:
        allowed = self.escos(identity)
        if allowed is None or (esco is not None and esco in allowed):
            return None
        return Refusal(
            "esco", f"client {identity.describe()} may not reach meter {serial} (ESCO {esco})"
        )
