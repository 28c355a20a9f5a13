"""Command observations to command events (``COMMAND_REQUESTED`` / ``_SUCCEEDED`` / ``_FAILED``).

A command's outcome is a success only when the meter acknowledged every write; a sequence
that the meter refused or that broke off part-way is a failure that says how far it got
(``writes_acknowledged`` of ``writes_total``, ``interrupted``). What the command changed is
in the reading events of its read-back, which precede the outcome in the log.
"""

from __future__ import annotations

from flowsd.events import types
from flowsd.meters import observations as obs


def requested_body(requested: obs.CommandRequested) -> types.CommandRequested:
    return types.CommandRequested(
        command_id=requested.command_id,
        source=requested.source,
        client=requested.client,
        operation=requested.operation,
        objects=requested.objects,
        payload_sha256=requested.payload_sha256,
        arguments=requested.arguments,
    )


def outcome_body(outcome: obs.CommandOutcome) -> types.CommandSucceeded | types.CommandFailed:
    if outcome.ok:
        return types.CommandSucceeded(
            command_id=outcome.command_id,
            operation=outcome.operation,
            writes=outcome.writes_acknowledged,
            readback=outcome.readback,
            duration_seconds=round(outcome.duration_seconds, 3),
        )
    return types.CommandFailed(
        command_id=outcome.command_id,
        operation=outcome.operation,
        reason=outcome.reason or "failed",
        detail=outcome.detail,
        nak=outcome.nak,
        writes_acknowledged=outcome.writes_acknowledged,
        writes_total=outcome.writes_total,
        interrupted=outcome.interrupted,
        readback=outcome.readback,
        duration_seconds=round(outcome.duration_seconds, 3),
    )
