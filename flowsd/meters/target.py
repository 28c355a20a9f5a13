"""What the daemon tells the engine about each meter: address, hardware and where to resume.

:class:`MeterResume` is read from the database by the caller when a meter is first handed
to the engine (``FleetSupervisor.apply``); afterwards the engine keeps its own cursors in
memory, so a later ``apply`` with the same meter does not rewind them.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from flowsd.meters.observations import EventLogCursor


class MeterResume(msgspec.Struct, frozen=True, kw_only=True):
    """Per-meter state stored by the daemon, so a restart neither re-reads nor skips.

    ``profile_log_1_last`` / ``profile_log_2_last``: timestamp of the newest half-hour
    record stored for each log (None: none stored; read back ``backfill_horizon_hours``);
    ``three_phase_interval_last`` the same for a three-phase meter's interval profile (the
    start of the newest half hour stored).
    ``event_log``: the newest stored meter event second and the entries at it (None: read
    whatever the meter holds). ``offline_since``: the meter was offline when the daemon
    stopped (it is probed instead of polled, and no second "went offline" is reported).
    ``answered``: the log shows the meter answered at least once (it came online); unless it
    is offline it starts online, otherwise it awaits its first answer before it counts online.
    """

    profile_log_1_last: datetime | None = None
    profile_log_2_last: datetime | None = None
    three_phase_interval_last: datetime | None = None
    event_log: EventLogCursor | None = None
    offline_since: datetime | None = None
    answered: bool = False


# The resume point of every meter the daemon has stored nothing for (shared: it is frozen).
NO_RESUME = MeterResume()


class MeterTarget(msgspec.Struct, frozen=True, kw_only=True):
    """One meter to poll. ``port`` None means ``[meters] port``.

    ``hardware`` is the registry's hardware string (``C1.w``, ``B1.w``, ``EMA1.w``,
    ``P1.ax``, ``P1.cx``, ...); None makes the engine read ``hardware_version`` first.
    """

    meter_id: UUID
    serial: str | None
    ip_address: str
    port: int | None = None
    hardware: str | None = None
    resume: MeterResume = NO_RESUME

    def same_identity(self, other: MeterTarget) -> bool:
        """Same meter, address and hardware: an apply() with it changes nothing."""
        return (
            self.meter_id == other.meter_id
            and self.serial == other.serial
            and self.ip_address == other.ip_address
            and self.port == other.port
            and self.hardware == other.hardware
        )
