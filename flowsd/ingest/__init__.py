"""From what the polling engine observes to the events flowsd appends.

* :mod:`flowsd.ingest.mapping` — pure conversions of one codec record into one event body;
* :mod:`flowsd.ingest.assembly` — readings that make one body only together (a tariff is
  12 objects, identity 3-5, flags 4, three-phase voltages 3) are collected per poll;
* :mod:`flowsd.ingest.detector` — the change detector: last known state per meter, and the
  state-change events a reading or a poll outcome implies;
* :mod:`flowsd.ingest.pipeline` — the engine's observation sink: mapping, assembly and
  detection, then the appender (which waits while its queue is full: back-pressure);
* :mod:`flowsd.ingest.seed` — the detector's state and the engine's resume points, read
  from the database at start;
* :mod:`flowsd.ingest.sessions` — the per-meter session-state table and the heartbeat row
  that ``flowsd status`` reads.

Catalogue decisions (types in :mod:`flowsd.events.types`):

* every reading is one event. ``observed_at`` is the meter's own time where the record is
  stamped by the meter (profile records: the half hour's end; meter log entries: their
  time), otherwise the time the answer arrived; ``read_at`` is always the arrival time;
* a clock read is a ``CLOCK_READ`` with the signed drift; the raw ``time`` reading is not
  stored twice;
* a state change is derived from the reading (or poll outcome) that shows it, with the same
  ``observed_at``, so re-reading never duplicates it. The first value ever seen for a meter
  counts as a change from "unknown" (``previous`` None), except clock drift, which is
  reported only when it is at or above the threshold;
* online/offline follow the engine's breaker (offline after ``offline_after_failures``
  consecutive failures, online at the first answer); health follows each poll: healthy when
  the meter answered anything, unhealthy when it answered nothing.
"""
