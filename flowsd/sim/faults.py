"""Fault injection: the ``--faults`` syntax, and deterministic per-connection fault draws.

Syntax: comma-separated rules ``KIND[@TARGET]=PROBABILITY[:PARAMETER]``.

* ``TARGET``: a meter index (``3``), an index range (``3-7``) or a serial
  (``EML2137580826``); without a target the rule applies to every meter, and a targeted
  rule replaces the fleet-wide rule of the same kind for its meters.
* ``PROBABILITY``: 0..1, drawn per connection (per meter and hour for ``offline``).
* Durations: ``8s``, ``250ms``, ``10m``, ``1h`` or plain seconds.

Kinds (what a client sees):

====================  =================================================================
``refuse``            the connection is reset (RST) as soon as it is accepted
``toosoon[:GAP]``     like refuse, but only when it arrives less than GAP (2s) after the
                      meter's previous exchange ended (a real meter's minimum gap)
``blackhole``         the request is read and ignored; no answer, the socket stays open
``slow[:DELAY]``      the answer comes after DELAY (8s)
``badcrc``            the answer's CRC is wrong
``truncate``          only the first part of the answer is sent, then the socket closes
``garbage``           random bytes (not starting with 7e) instead of an answer
``split[:PARTS]``     the answer in PARTS (3) writes, 50 ms apart
``trickle[:EVERY]``   the answer one byte at a time, EVERY (0.1s) apart
``nak[:CODE]``        a NAK with CODE (5, object not recognised) instead of the answer
``offline[:FOR]``     per meter and simulated hour, with the probability: the meter's
                      listener is closed for FOR (10m) of that hour -> connection refused
====================  =================================================================

Except for ``blackhole``, a faulty exchange still performs the request (a write is
applied even when its answer is mangled), as a meter would.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from flowsd.sim.rand import Stream, uniform


class FaultKind(enum.Enum):
    """Fault kinds in the order they are drawn for a connection (the first hit wins)."""

    REFUSE = "refuse"
    TOOSOON = "toosoon"
    BLACKHOLE = "blackhole"
    SLOW = "slow"
    BADCRC = "badcrc"
    TRUNCATE = "truncate"
    GARBAGE = "garbage"
    SPLIT = "split"
    TRICKLE = "trickle"
    NAK = "nak"
    OFFLINE = "offline"


_DEFAULT_PARAMETER: dict[FaultKind, float] = {
    FaultKind.TOOSOON: 2.0,
    FaultKind.SLOW: 8.0,
    FaultKind.SPLIT: 3,
    FaultKind.TRICKLE: 0.1,
    FaultKind.NAK: 5,
    FaultKind.OFFLINE: 600.0,
}
_DURATION_KINDS = {FaultKind.TOOSOON, FaultKind.SLOW, FaultKind.TRICKLE, FaultKind.OFFLINE}
PER_CONNECTION = tuple(k for k in FaultKind if k not in (FaultKind.OFFLINE, FaultKind.TOOSOON))
_RULE = re.compile(r"(?P<kind>[a-z]+)(?:@(?P<target>[^=]+))?=(?P<p>[^:]+)(?::(?P<param>.+))?")
_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
HOUR = 3600.0


class FaultSpecError(ValueError):
    """The ``--faults`` text cannot be parsed."""


Target = int | tuple[int, int] | str | None


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One parsed rule."""

    kind: FaultKind
    probability: float
    parameter: float
    target: Target = None

    def covers(self, index: int, serial: str) -> bool:
        target = self.target
        if target is None:
            return True
        if isinstance(target, int):
            return target == index
        if isinstance(target, tuple):
            return target[0] <= index <= target[1]
        return target == serial


@dataclass(frozen=True, slots=True)
class Fault:
    """The fault drawn for one connection."""

    kind: FaultKind
    parameter: float


def _duration(text: str, rule: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise FaultSpecError(f"{rule!r}: {text!r} is not a duration (e.g. 8s, 250ms, 10m)")
    return float(match["n"]) * _UNIT_SECONDS[match["unit"]]


def _target(text: str | None, rule: str) -> Target:
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    if re.fullmatch(r"\d+-\d+", text):
        low, high = (int(p) for p in text.split("-"))
        if low > high:
            raise FaultSpecError(f"{rule!r}: empty meter range {text}")
        return (low, high)
    if re.fullmatch(r"[A-Za-z0-9]+", text):
        return text
    raise FaultSpecError(f"{rule!r}: target must be a meter index, a range a-b or a serial")


def parse_rule(text: str) -> FaultRule:
    """One ``KIND[@TARGET]=PROBABILITY[:PARAMETER]`` rule."""
    match = _RULE.fullmatch(text.strip())
    if not match:
        raise FaultSpecError(f"{text!r}: expected KIND[@TARGET]=PROBABILITY[:PARAMETER]")
    try:
        kind = FaultKind(match["kind"])
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise FaultSpecError(f"{text!r}: unknown fault kind (known: {known})") from None
    try:
        probability = float(match["p"])
    except ValueError:
        raise FaultSpecError(f"{text!r}: probability {match['p']!r} is not a number") from None
    if not 0.0 <= probability <= 1.0:
        raise FaultSpecError(f"{text!r}: probability must be between 0 and 1")
    raw = match["param"]
    if raw is None:
        parameter = float(_DEFAULT_PARAMETER.get(kind, 0.0))
    elif kind in _DURATION_KINDS:
        parameter = _duration(raw, text)
    elif kind in (FaultKind.SPLIT, FaultKind.NAK):
        if not raw.isdigit():
            raise FaultSpecError(f"{text!r}: {kind.value} takes a whole number")
        parameter = float(raw)
        if kind is FaultKind.NAK and not 1 <= parameter <= 31:
            raise FaultSpecError(f"{text!r}: a NAK code is 1..31")
        if kind is FaultKind.SPLIT and parameter < 2:
            raise FaultSpecError(f"{text!r}: split needs at least 2 parts")
    else:
        raise FaultSpecError(f"{text!r}: {kind.value} takes no parameter")
    return FaultRule(kind, probability, parameter, _target(match["target"], text))


class FaultPlan:
    """The rules of a fleet, answering 'which fault for this connection / hour'."""

    def __init__(self, rules: Iterable[FaultRule] = ()) -> None:
        self.rules = tuple(rules)
        self._global = {r.kind: r for r in self.rules if r.target is None}
        self._targeted = [r for r in self.rules if r.target is not None]

    @classmethod
    def parse(cls, spec: str | None) -> FaultPlan:
        """Parse a ``--faults`` value (empty or None: no faults)."""
        if not spec or not spec.strip():
            return cls()
        return cls(parse_rule(part) for part in spec.split(",") if part.strip())

    def __bool__(self) -> bool:
        return bool(self.rules)

    def rule_for(self, kind: FaultKind, index: int, serial: str) -> FaultRule | None:
        """The rule of ``kind`` governing meter ``index`` (targeted rules win)."""
        for rule in reversed(self._targeted):
            if rule.kind is kind and rule.covers(index, serial):
                return rule
        return self._global.get(kind)

    def has(self, kind: FaultKind) -> bool:
        return any(r.kind is kind for r in self.rules)

    def draw(self, seed: int, index: int, serial: str, connection: int) -> Fault | None:
        """The fault for the ``connection``-th connection to meter ``index``, if any."""
        for number, kind in enumerate(PER_CONNECTION):
            rule = self.rule_for(kind, index, serial)
            if rule is None or rule.probability <= 0:
                continue
            if uniform(seed, index, Stream.FAULT, connection, number) < rule.probability:
                return Fault(kind, rule.parameter)
        return None

    def offline_window(
        self, seed: int, index: int, serial: str, t: float
    ) -> tuple[float, float] | None:
        """The meter's offline window in the simulated hour containing ``t``, if any."""
        rule = self.rule_for(FaultKind.OFFLINE, index, serial)
        if rule is None or rule.probability <= 0:
            return None
        hour = int(t // HOUR)
        if uniform(seed, index, Stream.OFFLINE, hour) >= rule.probability:
            return None
        length = min(rule.parameter, HOUR)
        start = hour * HOUR + (HOUR - length) * uniform(seed, index, Stream.OFFLINE, hour, 1)
        return start, start + length

    def offline(self, seed: int, index: int, serial: str, t: float) -> bool:
        window = self.offline_window(seed, index, serial, t)
        return window is not None and window[0] <= t < window[1]
