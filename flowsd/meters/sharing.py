"""One object per value for what the daemon keeps per meter and reads again from the database.

Every row read brings new objects: a UUID per meter id, a string per serial, address,
hardware or firmware name. Kept as they come, a fleet holds several copies of each per meter
(the meter list, the leases, the change detector's seed, the session rows), and again after
every restart or list change. These helpers hand back the object already held instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from uuid import UUID


def held_id_objects(*held: Iterable[UUID]) -> Callable[[UUID], UUID]:
    """``same(meter_id)``: the equal id object among ``held``, else ``meter_id`` itself
    (a UUID is 72 bytes)."""
    known: dict[UUID, UUID] = {}
    for ids in held:
        known.update((m, m) for m in ids)
    return lambda meter_id: known.get(meter_id, meter_id)


def shared_text(text: str | None) -> str | None:
    """``text`` as the one string object of its value (``sys.intern``)."""
    return None if text is None else sys.intern(text)
