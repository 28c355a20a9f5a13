"""The event store: flowsd's append-only log in ``flows.meter_event_log``.

* :mod:`flowsd.events.types` — the event catalogue (msgspec structs, type ids, idempotency keys);
* :mod:`flowsd.events.store` — one batch appended in one serialised transaction;
* :mod:`flowsd.events.appender` — the group-committing appender task with its spill journal;
* :mod:`flowsd.events.reader` — events after a position, in order, for projectors;
* :mod:`flowsd.events.checkpoints` — projector checkpoints, compare-and-set.

See ``README.md`` in this directory for the design and the catalogue table.
"""
