-- A stand-in for production's `flows` schema ("MGF", pg_dump 2026-01-07 plus sqitch 0004 and
-- 0006), written from /work/shared/flows/SCHEMA-NOTES.md independently of flowsd's migrations:
-- other constraint and trigger names, production's shadow -> history triggers, production's
-- UTC circuit views, and no TimescaleDB (not available here). Used by the upgrade test.

CREATE SCHEMA flows;

CREATE TYPE flows.meter_mode_enum AS ENUM ('active', 'passive');
CREATE TYPE flows.health_check_status AS ENUM ('healthy', 'unhealthy');
CREATE TYPE flows.meter_register_element AS ENUM ('A', 'B', 'SINGLE');
CREATE TYPE flows.meter_register_status_enum AS ENUM ('enabled', 'replaced');
CREATE TYPE flows.register_nature_enum AS ENUM ('heat', 'power', 'solar');
CREATE TYPE flows.circuit_type_enum AS ENUM ('heat', 'power', 'solar');
CREATE TYPE flows.emnify_device_connectivity_status_enum
    AS ENUM ('online', 'offline', 'attached', 'blocked');
CREATE TYPE flows.emnify_device_installation_status_enum
    AS ENUM ('enabled', 'disabled', 'deleted');
CREATE TYPE flows.meter_metric_run_frequency_enum AS ENUM ('hourly', 'daily', '12hourly');

CREATE TABLE flows.regions (code text NOT NULL, name text, CONSTRAINT regions_pk PRIMARY KEY (code));
CREATE TABLE flows.escos (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    created_at timestamptz DEFAULT now() NOT NULL,
    name text, code text, app_url text, region text,
    CONSTRAINT escos_pk PRIMARY KEY (id),
    CONSTRAINT escos_code_uq UNIQUE (code),
    CONSTRAINT escos_region_fk FOREIGN KEY (region) REFERENCES flows.regions (code)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE flows.sites_new (
    id uuid DEFAULT gen_random_uuid() NOT NULL PRIMARY KEY, name text NOT NULL,
    code text UNIQUE, esco uuid NOT NULL REFERENCES flows.escos (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz DEFAULT now() NOT NULL
);
CREATE TABLE flows.feeder_registry (
    id uuid DEFAULT gen_random_uuid() NOT NULL PRIMARY KEY, name text NOT NULL UNIQUE,
    esco uuid NOT NULL REFERENCES flows.escos (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz DEFAULT now() NOT NULL
);
CREATE TABLE flows.service_head_registry (
    id uuid DEFAULT gen_random_uuid() NOT NULL PRIMARY KEY, name text NOT NULL UNIQUE,
    feeder uuid REFERENCES flows.feeder_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz DEFAULT now() NOT NULL,
    phase integer CHECK (phase = ANY (ARRAY[1, 2, 3])), fuse_rating smallint,
    type text CHECK (type IS NULL OR type = ANY (ARRAY['customer_owned', 'network_owned']))
);
CREATE TABLE flows.properties (
    id uuid DEFAULT gen_random_uuid() NOT NULL PRIMARY KEY, plot text,
    created_at timestamptz DEFAULT now() NOT NULL
);
CREATE TABLE flows.properties_service_head (
    property uuid NOT NULL REFERENCES flows.properties (id) DEFERRABLE INITIALLY DEFERRED,
    service_head uuid NOT NULL REFERENCES flows.service_head_registry (id)
        DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz DEFAULT now() NOT NULL,
    PRIMARY KEY (property, service_head)
);
CREATE TABLE flows.meter_registry (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    serial text, emnify_id integer, ip_address inet, name text,
    created_at timestamptz DEFAULT now() NOT NULL, updated_at timestamptz DEFAULT now() NOT NULL,
    installation_status flows.emnify_device_installation_status_enum,
    commissioned_iso_week_date text, hardware text, prepay_enabled boolean, iccid text,
    site uuid, mode flows.meter_mode_enum DEFAULT 'active'::flows.meter_mode_enum,
    firmware_version text, esco uuid, daylight_savings_correction_enabled boolean,
    single_meter_app boolean DEFAULT false NOT NULL,
    CONSTRAINT meter_registry_pkey PRIMARY KEY (id),
    CONSTRAINT meter_registry_serial_key UNIQUE (serial),
    CONSTRAINT meter_registry_emnify_id_key UNIQUE (emnify_id),
    CONSTRAINT meter_registry_ip_address_key UNIQUE (ip_address),
    CONSTRAINT meter_registry_iccid_key UNIQUE (iccid),
    CONSTRAINT meter_registry_esco_fk FOREIGN KEY (esco) REFERENCES flows.escos (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE flows.service_head_meter (
    service_head uuid NOT NULL REFERENCES flows.service_head_registry (id)
        DEFERRABLE INITIALLY DEFERRED,
    meter uuid NOT NULL REFERENCES flows.meter_registry (id) DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz DEFAULT now() NOT NULL,
    PRIMARY KEY (service_head, meter)
);
CREATE TABLE flows.meter_shadows (
    id uuid NOT NULL PRIMARY KEY REFERENCES flows.meter_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    balance numeric, created_at timestamptz DEFAULT now() NOT NULL,
    updated_at timestamptz DEFAULT now() NOT NULL, clock_time_diff_seconds integer,
    clock_time_diff_synced_at timestamptz, csq integer,
    emnify_connectivity_status flows.emnify_device_connectivity_status_enum,
    health flows.health_check_status, health_details text, last_healthy_at timestamptz,
    "3p_voltage_l1" real, "3p_voltage_l2" real, "3p_voltage_l3" real, voltage numeric,
    import_a real, export_a real, import_b real, export_b real,
    tariffs_active jsonb, tariffs_future jsonb, backlight text, load_switch text
);
CREATE TABLE flows.meter_registers (
    register_id uuid NOT NULL PRIMARY KEY,
    meter_id uuid NOT NULL REFERENCES flows.meter_registry (id),
    nature flows.register_nature_enum, created_at timestamptz DEFAULT now() NOT NULL,
    status flows.meter_register_status_enum DEFAULT 'enabled',
    element flows.meter_register_element, start_time timestamptz, end_time timestamptz,
    notes text,
    CONSTRAINT meter_registers_register_meter_uq UNIQUE (register_id, meter_id),
    CONSTRAINT meter_registers_time_check CHECK (end_time > start_time)
);
CREATE TABLE flows.meter_tophat_registry (
    id uuid DEFAULT gen_random_uuid() NOT NULL PRIMARY KEY,
    meter uuid REFERENCES flows.meter_registry (id) DEFERRABLE INITIALLY DEFERRED,
    emnify_id integer UNIQUE, ip_address inet UNIQUE, iccid text UNIQUE,
    created_at timestamptz DEFAULT now() NOT NULL, updated_at timestamptz DEFAULT now() NOT NULL
);
CREATE TABLE flows.ev_chargers (
    id uuid DEFAULT gen_random_uuid() NOT NULL PRIMARY KEY,
    esco uuid REFERENCES flows.escos (id) DEFERRABLE INITIALLY DEFERRED,
    serial character varying(8), pin character varying(4), position text,
    created_at timestamptz DEFAULT now() NOT NULL, updated_at timestamptz DEFAULT now() NOT NULL
);
CREATE TABLE flows.meter_metrics (
    id uuid DEFAULT gen_random_uuid() NOT NULL PRIMARY KEY, name text, notes text,
    enabled boolean, run_frequency flows.meter_metric_run_frequency_enum
);
CREATE TABLE flows.register_import (
    register_id uuid NOT NULL REFERENCES flows.meter_registers (register_id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    "timestamp" timestamptz NOT NULL, read real,
    CONSTRAINT register_import_register_timestamp_uq UNIQUE (register_id, "timestamp")
);
CREATE TABLE flows.register_export (
    register_id uuid NOT NULL REFERENCES flows.meter_registers (register_id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    "timestamp" timestamptz NOT NULL, read real,
    CONSTRAINT register_export_register_timestamp_uq UNIQUE (register_id, "timestamp")
);
CREATE TABLE flows.register_interval_hh (
    register_id uuid NOT NULL, "timestamp" timestamptz NOT NULL, kwh numeric NOT NULL,
    CONSTRAINT meter_interval_register_id_fkey FOREIGN KEY (register_id)
        REFERENCES flows.meter_registers (register_id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT register_interval_hh_uq UNIQUE (register_id, "timestamp")
);
CREATE INDEX register_interval_hh_timestamp_idx ON flows.register_interval_hh ("timestamp" DESC);
CREATE INDEX meter_interval_timestamp_idx ON flows.register_interval_hh ("timestamp" DESC);
CREATE TABLE flows.meter_prepay_balance (
    meter_id uuid NOT NULL REFERENCES flows.meter_registry (id), "timestamp" timestamptz NOT NULL,
    balance numeric
);
CREATE UNIQUE INDEX meter_prepay_balance_uq ON flows.meter_prepay_balance (meter_id, "timestamp");
CREATE TABLE flows.meter_voltage (
    meter_id uuid REFERENCES flows.meter_registry (id) DEFERRABLE INITIALLY DEFERRED,
    "timestamp" timestamptz NOT NULL, voltage real
);
CREATE TABLE flows.meter_3p_voltage (
    meter_id uuid REFERENCES flows.meter_registry (id) DEFERRABLE INITIALLY DEFERRED,
    "timestamp" timestamptz NOT NULL, voltage_l1 real, voltage_l2 real, voltage_l3 real
);
CREATE TABLE flows.meter_csq (
    meter_id uuid NOT NULL REFERENCES flows.meter_registry (id), "timestamp" timestamptz NOT NULL,
    csq integer
);
CREATE UNIQUE INDEX meter_csq_uq ON flows.meter_csq (meter_id, "timestamp");
CREATE TABLE flows.meter_health_history (
    meter_id uuid REFERENCES flows.meter_registry (id) DEFERRABLE INITIALLY DEFERRED,
    "timestamp" timestamptz NOT NULL, health flows.health_check_status NOT NULL
);
CREATE TABLE flows.meter_event_log_type (id integer NOT NULL PRIMARY KEY, name text UNIQUE);
CREATE TABLE flows.meter_event_log (
    meter_id uuid NOT NULL, "timestamp" timestamptz NOT NULL, event_type integer NOT NULL,
    event_set integer NOT NULL,
    CONSTRAINT meter_event_log_pk PRIMARY KEY (meter_id, "timestamp", event_type),
    CONSTRAINT meter_event_log_meter_fk FOREIGN KEY (meter_id) REFERENCES flows.meter_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED
);
INSERT INTO flows.meter_event_log_type VALUES (33, 'EVENT_POWER_UP'), (34, 'EVENT_POWER_DN'),
    (38, 'DAILY_LOG_SNAPSHOT');
CREATE TABLE flows.circuits (
    id uuid DEFAULT gen_random_uuid() NOT NULL PRIMARY KEY, type flows.circuit_type_enum NOT NULL,
    name text, created_at timestamptz DEFAULT now() NOT NULL
);
CREATE TABLE flows.circuit_register (
    circuit uuid DEFAULT gen_random_uuid() NOT NULL REFERENCES flows.circuits (id),
    register uuid DEFAULT gen_random_uuid() NOT NULL
        REFERENCES flows.meter_registers (register_id),
    start_time timestamptz NOT NULL, end_time timestamptz,
    created_at timestamptz DEFAULT now() NOT NULL, notes text,
    PRIMARY KEY (circuit, register, start_time), CHECK (end_time > start_time)
);

-- Production's triggers (names and bodies after the dump's description).
CREATE FUNCTION flows.handle_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at = clock_timestamp(); RETURN NEW; END $$;
CREATE FUNCTION flows.meter_registry_insert_shadow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO flows.meter_shadows (id) VALUES (NEW.id); RETURN NEW; END $$;
CREATE TRIGGER handle_updated_at BEFORE UPDATE ON flows.meter_registry
    FOR EACH ROW EXECUTE FUNCTION flows.handle_updated_at();
CREATE TRIGGER meter_registry_insert_shadow AFTER INSERT ON flows.meter_registry
    FOR EACH ROW EXECUTE FUNCTION flows.meter_registry_insert_shadow();
CREATE TRIGGER handle_updated_at BEFORE UPDATE ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.handle_updated_at();

CREATE FUNCTION flows.meter_balance_history() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER AS $$
BEGIN
    INSERT INTO flows.meter_prepay_balance (meter_id, balance, "timestamp")
    VALUES (NEW.id, NEW.balance, NEW.updated_at);
    RETURN NEW;
END $$;
CREATE TRIGGER meter_balance_history AFTER UPDATE OF balance ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.meter_balance_history();
CREATE FUNCTION flows.meter_csq_history() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER AS $$
BEGIN
    INSERT INTO flows.meter_csq (meter_id, csq, "timestamp") VALUES (NEW.id, NEW.csq, NEW.updated_at);
    RETURN NEW;
END $$;
CREATE TRIGGER meter_csq_history AFTER UPDATE OF csq ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.meter_csq_history();
CREATE FUNCTION flows.meter_voltage_history() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER AS $$
BEGIN
    INSERT INTO flows.meter_voltage (meter_id, voltage, "timestamp")
    VALUES (NEW.id, NEW.voltage, NEW.updated_at);
    RETURN NEW;
END $$;
CREATE TRIGGER meter_voltage_history AFTER UPDATE OF voltage ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.meter_voltage_history();
CREATE FUNCTION flows.meter_health_history() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER AS $$
BEGIN
    INSERT INTO flows.meter_health_history (meter_id, health, "timestamp")
    VALUES (NEW.id, NEW.health, NEW.updated_at);
    IF NEW.health = 'healthy' THEN
        UPDATE flows.meter_shadows SET last_healthy_at = NEW.updated_at WHERE id = NEW.id
            AND last_healthy_at IS DISTINCT FROM NEW.updated_at;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER meter_health_history AFTER UPDATE OF health ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.meter_health_history();

-- Production's views (UTC buckets; the circuit ones as plain views, as they dump).
CREATE VIEW flows.meters_low_balance AS
SELECT mr.id, mr.serial, mr.name, ms.balance
FROM flows.meter_shadows ms JOIN flows.meter_registry mr ON mr.id = ms.id
WHERE ms.balance < 15.00;
CREATE VIEW flows.meters_clock_drift AS
SELECT ms.clock_time_diff_seconds, mr.serial, mr.name
FROM flows.meter_shadows ms JOIN flows.meter_registry mr ON mr.id = ms.id
WHERE ms.clock_time_diff_seconds >= 60 ORDER BY ms.clock_time_diff_seconds DESC;
CREATE VIEW flows.circuit_interval_hh AS
SELECT cr.circuit AS circuit_id,
       date_bin('30 minutes', rih."timestamp", timestamptz '2000-01-01 00:00:00+00') AS "timestamp",
       sum(rih.kwh) AS kwh
FROM flows.register_interval_hh rih
JOIN flows.circuit_register cr ON cr.register = rih.register_id
WHERE rih."timestamp" >= cr.start_time AND (cr.end_time IS NULL OR rih."timestamp" < cr.end_time)
GROUP BY 1, 2;
CREATE VIEW flows.circuit_interval_daily AS
SELECT circuit_id, date_trunc('day', "timestamp", 'UTC') AS day, sum(kwh) AS kwh
FROM flows.circuit_interval_hh GROUP BY 1, 2;
CREATE VIEW flows.circuit_interval_monthly AS
SELECT circuit_id, date_trunc('month', day, 'UTC') AS month, sum(kwh) AS kwh
FROM flows.circuit_interval_daily GROUP BY 1, 2;

-- Data, written the production way (shadow updates fan out into history).
INSERT INTO flows.regions VALUES ('south_west', 'South West');
INSERT INTO flows.escos (id, name, code, region)
VALUES ('11111111-1111-1111-1111-111111111111', 'Water Lilies', 'wlce', 'south_west');
INSERT INTO flows.meter_registry (id, serial, name, ip_address, hardware, esco)
SELECT ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid,
       'EML21375808' || lpad(n::text, 2, '0'), 'WLCE.Plot-' || n || '.C',
       ('100.79.0.' || n)::inet, 'C1.w', '11111111-1111-1111-1111-111111111111'
FROM generate_series(1, 20) AS n;
INSERT INTO flows.meter_registers (register_id, meter_id, nature, element)
SELECT gen_random_uuid(), id, 'power', 'A' FROM flows.meter_registry;

DO $$
DECLARE
    step integer;
BEGIN
    FOR step IN 1..5 LOOP
        UPDATE flows.meter_shadows SET balance = 10 + step, csq = 15 + step, voltage = 240 + step,
            health = 'healthy', health_details = '';
    END LOOP;
END $$;

-- 3000 meter events: 20 meters x 150 seconds x types 33/34 sharing seconds.
INSERT INTO flows.meter_event_log (meter_id, "timestamp", event_type, event_set)
SELECT mr.id, timestamptz '2025-12-01 00:00:00+00' + make_interval(secs => s),
       CASE WHEN s % 2 = 0 THEN 33 ELSE 34 END, s % 7
FROM flows.meter_registry mr, generate_series(1, 150) AS s;
INSERT INTO flows.meter_event_log (meter_id, "timestamp", event_type, event_set)
SELECT mr.id, timestamptz '2025-12-01 00:00:00+00' + make_interval(secs => 2), 38, 4
FROM flows.meter_registry mr;
