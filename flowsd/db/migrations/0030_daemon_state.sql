-- Migration 30: what the daemon keeps for operators, and live reloads of the meter list.
--
--  1. flowsd.meter_session_state: one compact row per meter (online, last poll, last error),
--     upserted by the daemon in batches every few seconds; `flowsd status` reads it;
--  2. flowsd.daemon_heartbeat: one row per daemon instance (last beat, queue depth, counts);
--  3. an index to find a meter's latest event of a type (start-up seeding and resume points);
--  4. NOTIFY flowsd_meter_registry after any change to flows.meter_registry, so a running
--     daemon picks up added, removed, re-addressed or passive meters without a restart.

-- 1. Per-meter session state ---------------------------------------------------------------

CREATE TABLE IF NOT EXISTS flowsd.meter_session_state (
    meter_id uuid PRIMARY KEY,
    serial text,
    online boolean NOT NULL,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_poll_at timestamptz,
    last_poll_seconds real,
    last_success_at timestamptz,
    last_failure_at timestamptz,
    last_error text,
    offline_since timestamptz,
    polls bigint NOT NULL DEFAULT 0,
    failed_polls bigint NOT NULL DEFAULT 0,
    instance text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE flowsd.meter_session_state IS
    'The polling daemon''s view of each meter (not history: one row per meter, overwritten). '
    'No foreign key: a meter removed from meter_registry keeps its last row until purged.';
CREATE INDEX IF NOT EXISTS meter_session_state_offline_idx
    ON flowsd.meter_session_state (offline_since) WHERE NOT online;

-- 2. Daemon heartbeat ----------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS flowsd.daemon_heartbeat (
    instance text PRIMARY KEY,
    pid integer NOT NULL,
    version text NOT NULL,
    started_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at timestamptz,
    meters integer NOT NULL DEFAULT 0,
    online integer NOT NULL DEFAULT 0,
    offline integer NOT NULL DEFAULT 0,
    queue_depth integer NOT NULL DEFAULT 0,
    spilled_events bigint NOT NULL DEFAULT 0,
    events_appended bigint NOT NULL DEFAULT 0,
    database_up boolean NOT NULL DEFAULT true,
    status text NOT NULL DEFAULT ''
);
COMMENT ON TABLE flowsd.daemon_heartbeat IS
    'One row per flowsd daemon (instance = host name unless configured), rewritten every few '
    'seconds; stopped_at is set by a clean shutdown. A stale heartbeat_at means a dead daemon.';

-- 3. A meter's latest event of a type --------------------------------------------------------

CREATE INDEX IF NOT EXISTS meter_event_log_meter_id_event_type_timestamp_idx
    ON flows.meter_event_log (meter_id, event_type, "timestamp");

-- 4. Meter-list changes are announced --------------------------------------------------------

CREATE OR REPLACE FUNCTION flowsd.announce_meter_registry_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flowsd_meter_registry', TG_OP);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS meter_registry_announce_change ON flows.meter_registry;
CREATE TRIGGER meter_registry_announce_change
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON flows.meter_registry
    FOR EACH STATEMENT EXECUTE FUNCTION flowsd.announce_meter_registry_change();

-- Grants (the roles come from migration 2) ---------------------------------------------------

GRANT SELECT ON flowsd.meter_session_state, flowsd.daemon_heartbeat
    TO flowsd_reader, flowsd_writer;
GRANT INSERT, UPDATE ON flowsd.meter_session_state, flowsd.daemon_heartbeat TO flowsd_writer;
