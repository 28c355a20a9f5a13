-- Production's schema `flows` as pg_dump showed it on 2026-01-07 (PostgreSQL 17, MGF), before
-- flows-db migrations 0004 (meter_shadows.clock_time_diff_synced_at) and 0006 (regions),
-- written for flowsd's upgrade tests from the dump's description (cepro/simt-flows-db,
-- sql/flows-schema-mgf.sql), not copied from it. Kept as production has it: constraint and
-- index names, nullability, defaults, the shadow -> history triggers (statement time as the
-- history time), the column order of every view, the `date` column of the completeness views,
-- the owner and the grants. Left out: TimescaleDB (absent here), so the six hypertables are
-- plain tables and the three circuit continuous aggregates are plain views over
-- register_interval_hh with the aggregates' columns and UTC buckets.
--
-- Placeholders, replaced by the test with role names of its own: @OWNER@ (the schema owner,
-- production's tsdbadmin: a hosted admin role, not a superuser), @APP@ (production's `flows`,
-- the syncers' role: read and write), @READER@ (grafanareader, tableau, ...: read only).
-- Run as @OWNER@.

CREATE SCHEMA flows;

CREATE TYPE flows.circuit_type_enum AS ENUM ('heat', 'power', 'solar');
CREATE TYPE flows.emnify_device_connectivity_status_enum
    AS ENUM ('online', 'offline', 'attached', 'blocked');
CREATE TYPE flows.emnify_device_installation_status_enum
    AS ENUM ('enabled', 'disabled', 'deleted');
CREATE TYPE flows.health_check_status AS ENUM ('healthy', 'unhealthy');
CREATE TYPE flows.meter_metric_run_frequency_enum AS ENUM ('hourly', 'daily', '12hourly');
CREATE TYPE flows.meter_mode_enum AS ENUM ('active', 'passive');
COMMENT ON TYPE flows.meter_mode_enum IS
    'active: synced from the hardware; passive: a twin synced from another database';
CREATE TYPE flows.meter_register_element AS ENUM ('A', 'B', 'SINGLE');
CREATE TYPE flows.meter_register_status_enum AS ENUM ('enabled', 'replaced');
CREATE TYPE flows.register_nature_enum AS ENUM ('heat', 'power', 'solar');

-- Tables (columns in the dump's order) ------------------------------------------------------

CREATE TABLE flows.escos (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    name text,
    code text,
    app_url text,
    CONSTRAINT escos_pkey PRIMARY KEY (id),
    CONSTRAINT escos_unique_code UNIQUE (code)
);

CREATE TABLE flows.sites_new (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL,
    code text,
    esco uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sites_new_pkey PRIMARY KEY (id),
    CONSTRAINT sites_new_unique_code UNIQUE (code)
);
COMMENT ON TABLE flows.sites_new IS 'Groups the meters behind one boundary settlement meter.';

CREATE TABLE flows.feeder_registry (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL,
    esco uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT feeder_registry_pkey PRIMARY KEY (id),
    CONSTRAINT feeder_registry_name_unique UNIQUE (name)
);

CREATE TABLE flows.service_head_registry (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL,
    feeder uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    phase integer,
    fuse_rating smallint,
    type text,
    CONSTRAINT service_head_registry_pkey PRIMARY KEY (id),
    CONSTRAINT service_head_registry_name_unique UNIQUE (name),
    CONSTRAINT service_head_registry_phase_check CHECK (phase IN (1, 2, 3)),
    CONSTRAINT service_head_registry_type_check
        CHECK (type IS NULL OR type IN ('customer_owned', 'network_owned'))
);

CREATE TABLE flows.properties (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    plot text,
    created_at timestamptz DEFAULT now(),
    CONSTRAINT properties_pkey PRIMARY KEY (id)
);

CREATE TABLE flows.properties_service_head (
    property uuid NOT NULL,
    service_head uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT properties_service_head_pkey PRIMARY KEY (property, service_head)
);

CREATE TABLE flows.meter_registry (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    serial text,
    emnify_id integer,
    ip_address inet,
    name text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    installation_status flows.emnify_device_installation_status_enum,
    commissioned_iso_week_date text,
    hardware text,
    prepay_enabled boolean,
    iccid text,
    site uuid,
    mode flows.meter_mode_enum DEFAULT 'active',
    firmware_version text,
    esco uuid,
    daylight_savings_correction_enabled boolean,
    single_meter_app boolean NOT NULL DEFAULT false,
    CONSTRAINT meters_registry_pkey PRIMARY KEY (id),
    CONSTRAINT meters_registry_serial_unique UNIQUE (serial),
    CONSTRAINT meters_registry_emnify_id_unique UNIQUE (emnify_id),
    CONSTRAINT meters_registry_ip_address_unique UNIQUE (ip_address),
    CONSTRAINT meter_registry_iccid_unique UNIQUE (iccid)
);
COMMENT ON COLUMN flows.meter_registry.mode IS 'see meter_mode_enum';

CREATE TABLE flows.service_head_meter (
    service_head uuid NOT NULL,
    meter uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT service_head_pkey PRIMARY KEY (service_head, meter)
);

CREATE TABLE flows.meter_shadows (
    id uuid NOT NULL,
    balance numeric,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    clock_time_diff_seconds integer,
    csq integer,
    emnify_connectivity_status flows.emnify_device_connectivity_status_enum,
    health flows.health_check_status,
    health_details text,
    last_healthy_at timestamptz,
    "3p_voltage_l1" real,
    "3p_voltage_l2" real,
    "3p_voltage_l3" real,
    voltage numeric,
    import_a real,
    export_a real,
    import_b real,
    export_b real,
    tariffs_active jsonb,
    tariffs_future jsonb,
    backlight text,
    load_switch text,
    CONSTRAINT meter_shadows_pkey PRIMARY KEY (id)
);

CREATE TABLE flows.meter_registers (
    register_id uuid NOT NULL,
    meter_id uuid NOT NULL,
    nature flows.register_nature_enum,
    created_at timestamptz NOT NULL DEFAULT now(),
    status flows.meter_register_status_enum DEFAULT 'enabled',
    element flows.meter_register_element,
    start_time timestamptz,
    end_time timestamptz,
    notes text,
    CONSTRAINT meter_registers_pkey PRIMARY KEY (register_id),
    CONSTRAINT meter_registers_register_id_meter_id_unique UNIQUE (register_id, meter_id),
    CONSTRAINT meter_registers_check_date_range
        CHECK (end_time IS NULL OR start_time IS NULL OR end_time > start_time)
);

CREATE TABLE flows.meter_tophat_registry (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    meter uuid NOT NULL,
    emnify_id integer,
    ip_address inet,
    iccid text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT meter_tophat_registry_pkey PRIMARY KEY (id),
    CONSTRAINT meter_tophat_registry_emnify_id_unique UNIQUE (emnify_id),
    CONSTRAINT meter_tophat_registry_ip_address_unique UNIQUE (ip_address),
    CONSTRAINT meter_tophat_registry_iccid_unique UNIQUE (iccid)
);

CREATE TABLE flows.ev_chargers (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    esco uuid NOT NULL,
    serial text NOT NULL,
    pin text NOT NULL,
    "position" text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chargers_pkey PRIMARY KEY (id),
    CONSTRAINT chargers_pin_check CHECK (length(pin) = 4),
    CONSTRAINT chargers_serial_check CHECK (length(serial) = 8)
);

CREATE TABLE flows.meter_metrics (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL,
    notes text,
    enabled boolean NOT NULL,
    run_frequency flows.meter_metric_run_frequency_enum NOT NULL,
    CONSTRAINT meter_metrics_pkey PRIMARY KEY (id)
);

CREATE TABLE flows.circuits (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    type flows.circuit_type_enum NOT NULL,
    name text,
    created_at timestamptz DEFAULT now(),
    CONSTRAINT circuit_pkey PRIMARY KEY (id)
);

CREATE TABLE flows.circuit_register (
    circuit uuid NOT NULL DEFAULT gen_random_uuid(),
    register uuid NOT NULL DEFAULT gen_random_uuid(),
    start_time timestamptz NOT NULL,
    end_time timestamptz,
    created_at timestamptz DEFAULT now(),
    notes text,
    CONSTRAINT circuit_registers_pkey PRIMARY KEY (circuit, register, start_time),
    CONSTRAINT circuit_register_check_date_range
        CHECK (start_time IS NULL OR end_time IS NULL OR end_time > start_time)
);

-- History. In production the first six are hypertables (plain here).
CREATE TABLE flows.register_interval_hh (
    register_id uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    kwh numeric NOT NULL,
    CONSTRAINT register_interval_hh_unique UNIQUE (register_id, "timestamp")
);
CREATE INDEX register_interval_hh_timestamp_idx ON flows.register_interval_hh ("timestamp" DESC);
CREATE INDEX meter_interval_hh_timestamp_idx ON flows.register_interval_hh ("timestamp" DESC);

CREATE TABLE flows.meter_csq (
    meter_id uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    csq integer
);
CREATE UNIQUE INDEX meter_csq_meter_time_idx ON flows.meter_csq (meter_id, "timestamp");
CREATE INDEX meter_csq_timestamp_idx ON flows.meter_csq ("timestamp" DESC);

CREATE TABLE flows.meter_health_history (
    meter_id uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    health flows.health_check_status NOT NULL
);
CREATE INDEX meter_health_history_timestamp_idx ON flows.meter_health_history ("timestamp" DESC);

CREATE TABLE flows.meter_voltage (
    meter_id uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    voltage real
);
CREATE INDEX meter_voltage_timestamp_idx ON flows.meter_voltage ("timestamp" DESC);

CREATE TABLE flows.meter_3p_voltage (
    meter_id uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    voltage_l1 real,
    voltage_l2 real,
    voltage_l3 real
);
CREATE INDEX meter_3p_voltage_timestamp_idx ON flows.meter_3p_voltage ("timestamp" DESC);

CREATE TABLE flows.meter_prepay_balance (
    meter_id uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    balance numeric
);
CREATE UNIQUE INDEX meter_prepay_balance_meter_time_idx
    ON flows.meter_prepay_balance (meter_id, "timestamp");
CREATE INDEX meter_prepay_balance_timestamp_idx ON flows.meter_prepay_balance ("timestamp" DESC);

CREATE TABLE flows.register_import (
    register_id uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    read real,
    CONSTRAINT register_import_unique UNIQUE (register_id, "timestamp")
);
COMMENT ON TABLE flows.register_import IS 'History of the import reads synced into meter_shadows.';

CREATE TABLE flows.register_export (
    register_id uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    read real,
    CONSTRAINT register_export_unique UNIQUE (register_id, "timestamp")
);
COMMENT ON TABLE flows.register_export IS 'History of the export reads synced into meter_shadows.';

CREATE TABLE flows.meter_event_log (
    meter_id uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    event_type integer NOT NULL,
    event_set integer NOT NULL,
    CONSTRAINT meter_event_type_pkey PRIMARY KEY (meter_id, "timestamp", event_type)
);
COMMENT ON TABLE flows.meter_event_log IS 'Events logged inside each meter.';
COMMENT ON COLUMN flows.meter_event_log.event_type IS
    'meter_event_log_type.id, without a foreign key: unknown types occur';

CREATE TABLE flows.meter_event_log_type (
    id integer NOT NULL,
    name text NOT NULL,
    CONSTRAINT meter_event_log_type_pkey PRIMARY KEY (id),
    CONSTRAINT meter_event_log_type_name_unique UNIQUE (name)
);

-- Foreign keys (the dump's names; which are deferrable follows the dump) ---------------------

ALTER TABLE flows.ev_chargers ADD CONSTRAINT chargers_esco_fkey
    FOREIGN KEY (esco) REFERENCES flows.escos (id);
ALTER TABLE flows.circuit_register ADD CONSTRAINT circuit_registers_circuit_fkey
    FOREIGN KEY (circuit) REFERENCES flows.circuits (id);
ALTER TABLE flows.circuit_register ADD CONSTRAINT circuit_registers_register_fkey
    FOREIGN KEY (register) REFERENCES flows.meter_registers (register_id);
ALTER TABLE flows.feeder_registry ADD CONSTRAINT feeder_registry_esco_fkey
    FOREIGN KEY (esco) REFERENCES flows.escos (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.meter_3p_voltage ADD CONSTRAINT meter_3p_voltage_meter_id_fkey
    FOREIGN KEY (meter_id) REFERENCES flows.meter_registry (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.meter_csq ADD CONSTRAINT meter_csq_meter_id_fkey
    FOREIGN KEY (meter_id) REFERENCES flows.meter_registry (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT;
ALTER TABLE flows.meter_event_log ADD CONSTRAINT meter_event_log_meter_id_fkey
    FOREIGN KEY (meter_id) REFERENCES flows.meter_registry (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.meter_health_history ADD CONSTRAINT meter_health_history_meter_id_fkey
    FOREIGN KEY (meter_id) REFERENCES flows.meter_registry (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.register_interval_hh ADD CONSTRAINT meter_interval_register_id_fkey
    FOREIGN KEY (register_id) REFERENCES flows.meter_registers (register_id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.meter_prepay_balance ADD CONSTRAINT meter_prepay_balance_meter_id_fkey
    FOREIGN KEY (meter_id) REFERENCES flows.meter_registry (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT;
ALTER TABLE flows.meter_registers ADD CONSTRAINT meter_registers_meter_registry_fkey
    FOREIGN KEY (meter_id) REFERENCES flows.meter_registry (id);
ALTER TABLE flows.meter_registry ADD CONSTRAINT meter_registry_esco_fkey
    FOREIGN KEY (esco) REFERENCES flows.escos (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.meter_shadows ADD CONSTRAINT meter_shadows_meters_registry_fkey
    FOREIGN KEY (id) REFERENCES flows.meter_registry (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.meter_tophat_registry ADD CONSTRAINT meter_tophat_registry_meter_fkey
    FOREIGN KEY (meter) REFERENCES flows.meter_registry (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.meter_voltage ADD CONSTRAINT meter_voltage_meter_id_fkey
    FOREIGN KEY (meter_id) REFERENCES flows.meter_registry (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.properties_service_head ADD CONSTRAINT properties_service_head_properties_fkey
    FOREIGN KEY (property) REFERENCES flows.properties (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.properties_service_head
    ADD CONSTRAINT properties_service_head_service_head_fkey
    FOREIGN KEY (service_head) REFERENCES flows.service_head_registry (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.register_export ADD CONSTRAINT register_export_meter_id_fkey
    FOREIGN KEY (register_id) REFERENCES flows.meter_registers (register_id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.register_import ADD CONSTRAINT register_import_meter_id_fkey
    FOREIGN KEY (register_id) REFERENCES flows.meter_registers (register_id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.service_head_meter ADD CONSTRAINT service_head_meter_meter_fkey
    FOREIGN KEY (meter) REFERENCES flows.meter_registry (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.service_head_meter ADD CONSTRAINT service_head_meter_service_head_fkey
    FOREIGN KEY (service_head) REFERENCES flows.service_head_registry (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.service_head_registry ADD CONSTRAINT service_head_registry_feeder_fkey
    FOREIGN KEY (feeder) REFERENCES flows.feeder_registry (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.sites_new ADD CONSTRAINT sites_new_esco_fkey
    FOREIGN KEY (esco) REFERENCES flows.escos (id)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;

-- Functions and triggers (production's behaviour, in this file's words) ----------------------

CREATE FUNCTION flows.updated_at_now() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = statement_timestamp();
    RETURN NEW;
END
$$;

CREATE FUNCTION flows.meter_shadows_insert_new() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path TO '' AS $$
BEGIN
    INSERT INTO flows.meter_shadows (id) VALUES (NEW.id);
    RETURN NEW;
END
$$;

-- One history row per shadow UPDATE naming the column, at the shadow's updated_at.
CREATE FUNCTION flows.meter_csq_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO flows.meter_csq (meter_id, csq, "timestamp")
    VALUES (NEW.id, NEW.csq, NEW.updated_at);
    RETURN NEW;
END
$$;

CREATE FUNCTION flows.meter_voltage_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO flows.meter_voltage (meter_id, voltage, "timestamp")
    VALUES (NEW.id, NEW.voltage, NEW.updated_at);
    RETURN NEW;
END
$$;

CREATE FUNCTION flows.meter_3p_voltage_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO flows.meter_3p_voltage (meter_id, voltage_l1, voltage_l2, voltage_l3, "timestamp")
    VALUES (NEW.id, NEW."3p_voltage_l1", NEW."3p_voltage_l2", NEW."3p_voltage_l3", NEW.updated_at);
    RETURN NEW;
END
$$;

CREATE FUNCTION flows.meter_prepay_balance_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO flows.meter_prepay_balance (meter_id, balance, "timestamp")
    VALUES (NEW.id, NEW.balance, NEW.updated_at);
    RETURN NEW;
END
$$;

CREATE FUNCTION flows.meter_health_history_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO flows.meter_health_history (meter_id, health, "timestamp")
    VALUES (NEW.id, NEW.health, NEW.updated_at);
    IF NEW.health = 'healthy' THEN
        UPDATE flows.meter_shadows SET last_healthy_at = NEW.updated_at WHERE id = NEW.id;
    END IF;
    RETURN NEW;
END
$$;

-- Register reads go to the meter's register of the element; imports skip NULLs and
-- conflicts, exports have neither guard (as in production).
CREATE FUNCTION flows.register_import_a_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    target uuid;
BEGIN
    IF NEW.import_a IS NULL THEN
        RETURN NEW;
    END IF;
    SELECT register_id INTO target FROM flows.meter_registers
    WHERE meter_id = NEW.id AND element = 'A';
    IF target IS NULL THEN
        RAISE WARNING 'no element A register for meter %: import_a not kept', NEW.id;
        RETURN NEW;
    END IF;
    INSERT INTO flows.register_import (register_id, read, "timestamp")
    VALUES (target, NEW.import_a, NEW.updated_at) ON CONFLICT DO NOTHING;
    RETURN NEW;
END
$$;

CREATE FUNCTION flows.register_import_b_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    target uuid;
BEGIN
    IF NEW.import_b IS NULL THEN
        RETURN NEW;
    END IF;
    SELECT register_id INTO target FROM flows.meter_registers
    WHERE meter_id = NEW.id AND element = 'B';
    IF target IS NULL THEN
        RAISE WARNING 'no element B register for meter %: import_b not kept', NEW.id;
        RETURN NEW;
    END IF;
    INSERT INTO flows.register_import (register_id, read, "timestamp")
    VALUES (target, NEW.import_b, NEW.updated_at) ON CONFLICT DO NOTHING;
    RETURN NEW;
END
$$;

CREATE FUNCTION flows.register_export_a_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    target uuid;
BEGIN
    SELECT register_id INTO target FROM flows.meter_registers
    WHERE meter_id = NEW.id AND element = 'A';
    IF target IS NULL THEN
        RAISE WARNING 'no element A register for meter %: export_a not kept', NEW.id;
        RETURN NEW;
    END IF;
    INSERT INTO flows.register_export (register_id, read, "timestamp")
    VALUES (target, NEW.export_a, NEW.updated_at);
    RETURN NEW;
END
$$;

CREATE FUNCTION flows.register_export_b_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    target uuid;
BEGIN
    SELECT register_id INTO target FROM flows.meter_registers
    WHERE meter_id = NEW.id AND element = 'B';
    IF target IS NULL THEN
        RAISE WARNING 'no element B register for meter %: export_b not kept', NEW.id;
        RETURN NEW;
    END IF;
    INSERT INTO flows.register_export (register_id, read, "timestamp")
    VALUES (target, NEW.export_b, NEW.updated_at);
    RETURN NEW;
END
$$;

CREATE TRIGGER chargers_updated_at BEFORE UPDATE ON flows.ev_chargers
    FOR EACH ROW EXECUTE FUNCTION flows.updated_at_now();
CREATE TRIGGER meter_registry_insert_shadow AFTER INSERT ON flows.meter_registry
    FOR EACH ROW EXECUTE FUNCTION flows.meter_shadows_insert_new();
CREATE TRIGGER meter_registry_updated_at BEFORE UPDATE ON flows.meter_registry
    FOR EACH ROW EXECUTE FUNCTION flows.updated_at_now();
CREATE TRIGGER meter_shadows_updated_at BEFORE UPDATE ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.updated_at_now();
CREATE TRIGGER meter_shadows_3p_voltage_update
    AFTER UPDATE OF "3p_voltage_l1", "3p_voltage_l2", "3p_voltage_l3" ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.meter_3p_voltage_insert();
CREATE TRIGGER meter_shadows_csq_update AFTER UPDATE OF csq ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.meter_csq_insert();
CREATE TRIGGER meter_shadows_export_a_update AFTER UPDATE OF export_a ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.register_export_a_insert();
CREATE TRIGGER meter_shadows_export_b_update AFTER UPDATE OF export_b ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.register_export_b_insert();
CREATE TRIGGER meter_shadows_health_update AFTER UPDATE OF health ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.meter_health_history_insert();
CREATE TRIGGER meter_shadows_import_a_update AFTER UPDATE OF import_a ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.register_import_a_insert();
CREATE TRIGGER meter_shadows_import_b_update AFTER UPDATE OF import_b ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.register_import_b_insert();
CREATE TRIGGER meter_shadows_prepay_balance_update AFTER UPDATE OF balance ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.meter_prepay_balance_insert();
CREATE TRIGGER meter_shadows_voltage_update AFTER UPDATE OF voltage ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.meter_voltage_insert();

-- The CLI's meter list (an RPC in production).
CREATE FUNCTION flows.get_meters_for_cli(esco_filter text, feeder_filter text)
RETURNS TABLE (id uuid, ip_address text, serial text, name text, single_meter_app boolean,
               esco text, csq integer, health text, hardware text, feeder text)
LANGUAGE sql STABLE AS $$
    SELECT mr.id, host(mr.ip_address), mr.serial, mr.name, mr.single_meter_app, e.code,
           ms.csq, ms.health::text, mr.hardware, fr.name
    FROM flows.meter_registry mr
    JOIN flows.meter_shadows ms ON ms.id = mr.id
    LEFT JOIN flows.escos e ON e.id = mr.esco
    LEFT JOIN flows.service_head_meter shm ON shm.meter = mr.id
    LEFT JOIN flows.service_head_registry shr ON shr.id = shm.service_head
    LEFT JOIN flows.feeder_registry fr ON fr.id = shr.feeder
    WHERE (esco_filter IS NULL OR e.code = esco_filter)
      AND mr.mode = 'active'
      AND (feeder_filter IS NULL OR fr.name = feeder_filter
           OR (feeder_filter = 'null' AND shr.feeder IS NULL))
$$;

-- Views (the dump's column order) -------------------------------------------------------------

CREATE VIEW flows.circuit_interval_hh AS
SELECT cr.circuit AS circuit_id,
       date_bin('30 minutes', rih."timestamp", timestamptz '2000-01-01 00:00:00+00')
           AS "timestamp",
       sum(rih.kwh) AS kwh
FROM flows.register_interval_hh rih
JOIN flows.circuit_register cr ON cr.register = rih.register_id
WHERE rih."timestamp" >= cr.start_time AND (cr.end_time IS NULL OR rih."timestamp" < cr.end_time)
GROUP BY 1, 2;

CREATE VIEW flows.circuit_interval_daily AS
SELECT circuit_id, date_trunc('day', "timestamp", 'UTC') AS day, sum(kwh) AS kwh
FROM flows.circuit_interval_hh
GROUP BY 1, 2;

CREATE VIEW flows.circuit_interval_monthly AS
SELECT circuit_id, date_trunc('month', day, 'UTC') AS month, sum(kwh) AS kwh
FROM flows.circuit_interval_daily
GROUP BY 1, 2;

CREATE VIEW flows.meter_shadows_tariffs AS
SELECT ms.id,
       mr.serial,
       (ms.tariffs_active ->> 'standing_charge')::numeric AS active_standing_charge,
       (ms.tariffs_active ->> 'unit_rate_element_a')::numeric AS active_unit_rate_a,
       (ms.tariffs_active ->> 'unit_rate_element_b')::numeric AS active_unit_rate_b,
       (ms.tariffs_active ->> 'prepayment_ecredit_availability')::numeric
           AS active_ecredit_availability,
       (ms.tariffs_active ->> 'prepayment_debt_recovery_rate')::numeric
           AS active_debt_recovery_rate,
       (ms.tariffs_active ->> 'prepayment_emergency_credit')::numeric
           AS active_emergency_credit,
       (ms.tariffs_future ->> 'standing_charge')::numeric AS future_standing_charge,
       (ms.tariffs_future ->> 'unit_rate_element_a')::numeric AS future_unit_rate_a,
       (ms.tariffs_future ->> 'unit_rate_element_b')::numeric AS future_unit_rate_b,
       (ms.tariffs_future ->> 'activation_datetime')::timestamp AS future_activation_datetime,
       (ms.tariffs_future ->> 'prepayment_ecredit_availability')::numeric
           AS future_ecredit_availability,
       (ms.tariffs_future ->> 'prepayment_debt_recovery_rate')::numeric
           AS future_debt_recovery_rate,
       (ms.tariffs_future ->> 'prepayment_emergency_credit')::numeric
           AS future_emergency_credit
FROM flows.meter_shadows ms, flows.meter_registry mr
WHERE ms.id = mr.id AND mr.hardware <> 'P1.ax';

CREATE VIEW flows.meters_clock_drift AS
SELECT ms.clock_time_diff_seconds, mr.serial, mr.name
FROM flows.meter_shadows ms, flows.meter_registry mr
WHERE ms.clock_time_diff_seconds >= 60 AND ms.id = mr.id
ORDER BY ms.clock_time_diff_seconds DESC;

CREATE VIEW flows.meters_low_balance AS
SELECT mr.id, mr.serial, mr.name, ms.balance
FROM flows.meter_shadows ms, flows.meter_registry mr
WHERE ms.id = mr.id AND ms.balance < 15.0;

CREATE VIEW flows.meters_offline_all AS
SELECT max(mc."timestamp") AS last_online, mr.serial, mr.name
FROM flows.meter_csq mc, flows.meter_registry mr
WHERE mc.csq IS NOT NULL AND mc.meter_id = mr.id
GROUP BY mr.serial, mr.name
HAVING max(mc."timestamp") < now() - interval '3 hours'
ORDER BY max(mc."timestamp");

CREATE VIEW flows.meters_offline_recently AS
SELECT max(mc."timestamp") AS last_online, mr.serial, mr.name
FROM flows.meter_csq mc, flows.meter_registry mr
WHERE mc.csq IS NOT NULL AND mc.meter_id = mr.id
GROUP BY mr.serial, mr.name
HAVING max(mc."timestamp") < now() - interval '3 hours'
   AND max(mc."timestamp") > now() - interval '24 hours'
ORDER BY max(mc."timestamp");

-- Completeness per register and day of the past year (refreshed daily in production).
CREATE MATERIALIZED VIEW flows.register_import_missing AS
WITH days AS (
    SELECT generate_series(date_trunc('day', current_date - interval '1 year')::timestamptz,
                           date_trunc('day', current_date::timestamptz), interval '1 day') AS day
), found AS (
    SELECT register_id, date_trunc('day', "timestamp") AS date, count(*) AS actual
    FROM flows.register_import
    WHERE "timestamp" >= current_date - interval '1 year' AND "timestamp" < current_date
    GROUP BY 1, 2
)
SELECT r.register_id, date_trunc('day', d.day) AS date,
       coalesce(f.actual, 0) AS record_count,
       greatest(0::bigint, 1 - coalesce(f.actual, 0)) AS missing_count
FROM flows.meter_registers r CROSS JOIN days d
LEFT JOIN found f ON f.register_id = r.register_id AND f.date = date_trunc('day', d.day)
ORDER BY r.register_id, date
WITH NO DATA;

CREATE MATERIALIZED VIEW flows.register_export_missing AS
WITH days AS (
    SELECT generate_series(date_trunc('day', current_date - interval '1 year')::timestamptz,
                           date_trunc('day', current_date::timestamptz), interval '1 day') AS day
), found AS (
    SELECT register_id, date_trunc('day', "timestamp") AS date, count(*) AS actual
    FROM flows.register_export
    WHERE "timestamp" >= current_date - interval '1 year' AND "timestamp" < current_date
    GROUP BY 1, 2
)
SELECT r.register_id, date_trunc('day', d.day) AS date,
       coalesce(f.actual, 0) AS record_count,
       greatest(0::bigint, 1 - coalesce(f.actual, 0)) AS missing_count
FROM flows.meter_registers r CROSS JOIN days d
LEFT JOIN found f ON f.register_id = r.register_id AND f.date = date_trunc('day', d.day)
ORDER BY r.register_id, date
WITH NO DATA;

CREATE MATERIALIZED VIEW flows.register_interval_hh_missing AS
WITH days AS (
    SELECT generate_series(date_trunc('day', current_date - interval '1 year')::timestamptz,
                           date_trunc('day', current_date::timestamptz), interval '1 day') AS day
), found AS (
    SELECT register_id, date_trunc('day', "timestamp") AS date, count(*) AS actual
    FROM flows.register_interval_hh
    WHERE "timestamp" >= current_date - interval '1 year' AND "timestamp" < current_date
    GROUP BY 1, 2
)
SELECT r.register_id, date_trunc('day', d.day) AS date,
       coalesce(f.actual, 0) AS record_count,
       48 - coalesce(f.actual, 0) AS missing_count
FROM flows.meter_registers r CROSS JOIN days d
LEFT JOIN found f ON f.register_id = r.register_id AND f.date = date_trunc('day', d.day)
ORDER BY r.register_id, date
WITH NO DATA;

CREATE FUNCTION flows.refresh_register_import_missing(job_id integer DEFAULT NULL,
                                                      config jsonb DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$ REFRESH MATERIALIZED VIEW flows.register_import_missing $$;
CREATE FUNCTION flows.refresh_register_export_missing(job_id integer DEFAULT NULL,
                                                      config jsonb DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$ REFRESH MATERIALIZED VIEW flows.register_export_missing $$;
CREATE FUNCTION flows.refresh_register_interval_hh_missing(job_id integer DEFAULT NULL,
                                                           config jsonb DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$ REFRESH MATERIALIZED VIEW flows.register_interval_hh_missing $$;

-- Grants (production: the syncers' role writes everything, readers read) --------------------

GRANT USAGE ON SCHEMA flows TO @APP@, @READER@;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA flows TO @APP@;
GRANT SELECT ON ALL TABLES IN SCHEMA flows TO @READER@;
