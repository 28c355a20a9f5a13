-- Migration 110: several daemons share the fleet through lease rows (flowsd.meters.ownership).
--
--  1. flowsd.daemon: one row per daemon name (host, pid, start, heartbeat, lease period). A
--     daemon is live while stopped_at is null and its heartbeat is younger than its lease
--     period; the live daemons divide the active meters among themselves by rendezvous hashing.
--  2. flowsd.meter_lease: who polls each meter, until when, under which epoch. Every change of
--     hands (taking a meter, handing it back) draws a new epoch from one sequence, so an epoch
--     names one holding of one meter and is never reused. Changes of hands take the event
--     log's append lock, so they are ordered with every append.
--  3. flowsd.begin_fenced_event_append(meters, epochs): flowsd.begin_event_append() plus the
--     fence: of the (meter, epoch) pairs an appender claims to hold, the meters whose lease
--     has moved on since. It runs under the append lock, after it is taken, so no change of
--     hands can commit between this check and the append's commit; the caller leaves those
--     meters' events out of the batch (they are the new holder's to read again).

-- 1. Daemons -----------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS flowsd.daemon (
    name text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    lease_seconds real NOT NULL CHECK (lease_seconds > 0),
    stopped_at timestamptz
);
COMMENT ON TABLE flowsd.daemon IS
    'The flowsd daemons sharing the fleet (name = [daemon] instance, the host name by default). '
    'Live: stopped_at is null and heartbeat_at is younger than lease_seconds.';

-- 2. Leases ------------------------------------------------------------------------------------

CREATE SEQUENCE IF NOT EXISTS flowsd.meter_lease_epoch_seq AS bigint;

CREATE TABLE IF NOT EXISTS flowsd.meter_lease (
    meter_id uuid PRIMARY KEY,
    daemon text,
    epoch bigint NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
COMMENT ON TABLE flowsd.meter_lease IS
    'Which daemon polls each meter (null: nobody, free to take) until expires_at, renewed in '
    'batches. epoch changes with every change of hands; appends carrying an older epoch are '
    'refused. Rows are never deleted by flowsd (a meter that comes back gets a new epoch).';
CREATE INDEX IF NOT EXISTS meter_lease_daemon_idx ON flowsd.meter_lease (daemon);

-- 3. The fenced append -------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION flowsd.begin_fenced_event_append(
    meters uuid[], epochs bigint[], OUT head bigint, OUT fenced uuid[]
)
LANGUAGE plpgsql AS $$
BEGIN
    head := flowsd.begin_event_append();
    -- A new snapshot (volatile function, read committed): every change of hands committed
    -- before the lock was granted is seen.
    SELECT coalesce(array_agg(held.meter_id), '{}') INTO fenced
    FROM unnest(meters, epochs) AS held(meter_id, epoch)
    LEFT JOIN flowsd.meter_lease lease USING (meter_id)
    WHERE lease.epoch IS DISTINCT FROM held.epoch;
END
$$;

-- Grants (the roles come from migration 2) -----------------------------------------------------

GRANT SELECT ON flowsd.daemon, flowsd.meter_lease TO flowsd_reader, flowsd_writer;
GRANT INSERT, UPDATE ON flowsd.daemon, flowsd.meter_lease TO flowsd_writer;
GRANT USAGE ON SEQUENCE flowsd.meter_lease_epoch_seq TO flowsd_writer;
