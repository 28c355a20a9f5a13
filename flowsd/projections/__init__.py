"""Projections: the read tables derived from ``flows.meter_event_log``.

* one module per kind of projection (:mod:`~flowsd.projections.shadows`,
  :mod:`~flowsd.projections.registry`, :mod:`~flowsd.projections.register_reads`,
  :mod:`~flowsd.projections.interval_hh`, :mod:`~flowsd.projections.health_history`, and
  :mod:`~flowsd.projections.series` for the four per-meter time series), each a pure
  function of events plus a set-based apply step and a set-based rebuild; the two kinds of
  tables share :mod:`~flowsd.projections.rows` and :mod:`~flowsd.projections.patches`;
* :mod:`~flowsd.projections.catalogue` — the projections by name;
* :mod:`~flowsd.projections.projector` — one batch + checkpoint compare-and-set, in one
  transaction; :mod:`~flowsd.projections.parking` — parked events and their retry;
* :mod:`~flowsd.projections.runner` — :class:`~flowsd.projections.runner.ProjectorRunner`,
  the tasks the daemon starts;
* :mod:`~flowsd.projections.replay`, :mod:`~flowsd.projections.verify` — the rebuild
  commands' logic (:mod:`~flowsd.projections.rebuild` is shared).
"""
