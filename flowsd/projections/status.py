"""What a projector reports: :class:`ProjectorStatus` for ``/readyz`` and ``flowsd status``,
:class:`ProjectorStatistics` for ``/metrics`` (:mod:`flowsd.projections.metrics`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProjectorStatus:
    name: str
    checkpoint: int
    known_head: int
    lag_events: int
    running: bool
    healthy: bool
    last_error: str | None
    role: str = "active"  # "standby": another daemon runs it (leadership); "stopped"


@dataclass(frozen=True)
class ProjectorStatistics:
    """One projection's state and what its task did since it was created (this process).

    Before the task has read its checkpoint, ``checkpoint`` is 0 and ``healthy`` false.
    """

    name: str
    checkpoint: int  # last log position applied
    lag_events: int  # known head minus the checkpoint
    lag_seconds: float  # age of the last event applied while behind; 0 once caught up
    healthy: bool  # running, and caught up or advancing
    events: int  # events the checkpoint moved over, of every type
    log_reads: int  # pages read from the log to catch up
    parked: int  # events parked in committed transactions
    conflicts: int  # batches not applied because the checkpoint had moved
    errors: int  # database errors of the task's steps (each retried)
    role: str = "active"  # or "standby" (checkpoint: as last read), or "stopped"
