-- Migration 40: what the projectors (flowsd.projections) need beyond migrations 1-3.
--
--  1. the dead-letter table of events a projector could not apply (parked per meter);
--  2. meter_shadows.updated_at written by projectors is the observation time: the stamp
--     trigger leaves it alone inside a projector's transaction (flowsd.projector = on);
--  3. an index to find a meter's registers (every register-mapped row looks one up);
--  4. grants: the daemon parks and retries events, and replays truncate projection tables.

-- 1. Parked events ------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS flowsd.projection_parked_event (
    projection text NOT NULL,
    position bigint NOT NULL,
    meter_id uuid NOT NULL,
    event_type integer NOT NULL,
    error text NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, position)
);
CREATE INDEX IF NOT EXISTS projection_parked_event_meter_idx
    ON flowsd.projection_parked_event (projection, meter_id);
COMMENT ON TABLE flowsd.projection_parked_event IS
    'Events a projector could not apply. Once one event of a meter is parked, every later '
    'event of that meter is parked too (per-meter order is kept) until '
    '`flowsd projections retry-parked` applies them; other meters are not held up.';

-- 2. meter_shadows.updated_at -------------------------------------------------------------------

CREATE OR REPLACE FUNCTION flowsd.stamp_shadow_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('flowsd.projector', true), '') <> 'on' THEN
        NEW.updated_at := statement_timestamp();
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS meter_shadows_set_updated_at ON flows.meter_shadows;
CREATE TRIGGER meter_shadows_set_updated_at BEFORE UPDATE ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flowsd.stamp_shadow_updated_at();

-- 3. Registers by meter -------------------------------------------------------------------------

CREATE INDEX IF NOT EXISTS meter_registers_meter_id_idx ON flows.meter_registers (meter_id);

-- 4. Grants -------------------------------------------------------------------------------------

GRANT SELECT, INSERT, DELETE ON flowsd.projection_parked_event TO flowsd_writer;
GRANT SELECT ON flowsd.projection_parked_event TO flowsd_reader;
GRANT TRUNCATE ON flows.meter_prepay_balance, flows.register_import, flows.register_export,
    flows.register_interval_hh, flows.meter_voltage, flows.meter_3p_voltage, flows.meter_csq,
    flows.meter_health_history TO flowsd_writer;
GRANT CREATE ON SCHEMA flowsd TO flowsd_writer;
