"""flowsd: the meter-data daemon of the Flows platform.

Polls Emlite prepayment meters over EMOP, appends every reading and state change to
``flows.meter_event_log`` and projects the log into the read tables operators use.
"""

__version__ = "0.1.0"
