"""Acting on meters: the one path from a caller to a meter's session.

* :mod:`flowsd.control.dispatch` — serial to meter, queue a command, wait for it;
* :mod:`flowsd.control.table` — commands from ``flowsd.meter_command`` (apps on PostgREST,
  ``flowsd meter``): claimed by the daemon that polls the meter, run once, outcome on the row;
* the gRPC side is :mod:`flowsd.mediator`.

The commands themselves (what is sent, what is read back, how it is recorded) are
:mod:`flowsd.meters.command`.
"""
