-- Migration 1: the production ("MGF") shape of schema `flows`, as described in
-- /work/shared/flows/SCHEMA-NOTES.md sections 2-3.
--
-- Every object is created only if it is missing, so this migration is a no-op on a database
-- that already has the production schema, and builds the same shape on an empty one. The
-- differences flowsd needs are applied by migration 2, which therefore runs on both paths.
-- The shape is production's as of flows-db migration 0006 (regions, escos.region); a
-- database dumped before 0004 or 0006 gets those columns here (not 0006's rows or row-level
-- security: data and policies are the operator's). Where production already has an index
-- under another name, no second copy is built. Plain SQL that PostgreSQL 15-18 all accept.
--
-- Deliberately omitted: the AFTER UPDATE triggers that copy meter_shadows columns into the
-- history tables (flowsd's projectors write history from events instead; migration 2 drops
-- them where they exist), TimescaleDB objects (migration 3), and row-level security on escos.

CREATE SCHEMA IF NOT EXISTS flows;

-- Enums (CREATE TYPE has no IF NOT EXISTS).
DO $$
DECLARE
    spec text[];
    enums text[][] := ARRAY[
        ['meter_mode_enum', $v$'active', 'passive'$v$],
        ['health_check_status', $v$'healthy', 'unhealthy'$v$],
        ['meter_register_element', $v$'A', 'B', 'SINGLE'$v$],
        ['meter_register_status_enum', $v$'enabled', 'replaced'$v$],
        ['register_nature_enum', $v$'heat', 'power', 'solar'$v$],
        ['circuit_type_enum', $v$'heat', 'power', 'solar'$v$],
        ['emnify_device_connectivity_status_enum',
            $v$'online', 'offline', 'attached', 'blocked'$v$],
        ['emnify_device_installation_status_enum', $v$'enabled', 'disabled', 'deleted'$v$],
        ['meter_metric_run_frequency_enum', $v$'hourly', 'daily', '12hourly'$v$]
    ];
BEGIN
    FOREACH spec SLICE 1 IN ARRAY enums LOOP
        IF NOT EXISTS (
            SELECT FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE n.nspname = 'flows' AND t.typname = spec[1]
        ) THEN
            EXECUTE format('CREATE TYPE flows.%I AS ENUM (%s)', spec[1], spec[2]);
        END IF;
    END LOOP;
END
$$;

-- Topology ---------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS flows.regions (
    code text PRIMARY KEY,
    name text
);

CREATE TABLE IF NOT EXISTS flows.escos (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    name text,
    code text UNIQUE,
    app_url text,
    region text REFERENCES flows.regions (code)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED
);
-- flows-db 0006 added escos.region (a database dumped before it lacks the column).
ALTER TABLE flows.escos ADD COLUMN IF NOT EXISTS region text;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint c
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
                   WHERE c.conrelid = 'flows.escos'::regclass AND c.contype = 'f'
                     AND a.attname = 'region') THEN
        ALTER TABLE flows.escos ADD CONSTRAINT esco_region_fkey
            FOREIGN KEY (region) REFERENCES flows.regions (code)
            ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS escos_region_idx ON flows.escos (region);

CREATE TABLE IF NOT EXISTS flows.sites_new (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    code text UNIQUE,
    esco uuid NOT NULL REFERENCES flows.escos (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE flows.sites_new IS
    'A site groups the meters behind one boundary settlement meter; an ESCO has one or more.';

CREATE TABLE IF NOT EXISTS flows.feeder_registry (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE,
    esco uuid NOT NULL REFERENCES flows.escos (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS flows.service_head_registry (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE,
    feeder uuid REFERENCES flows.feeder_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL DEFAULT now(),
    phase integer CHECK (phase IN (1, 2, 3)),
    fuse_rating smallint,
    type text CHECK (type IS NULL OR type IN ('customer_owned', 'network_owned'))
);

CREATE TABLE IF NOT EXISTS flows.properties (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    plot text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS flows.properties_service_head (
    property uuid NOT NULL REFERENCES flows.properties (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    service_head uuid NOT NULL REFERENCES flows.service_head_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (property, service_head)
);

-- Meters ------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS flows.meter_registry (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    serial text UNIQUE,
    emnify_id integer UNIQUE,
    ip_address inet UNIQUE,
    name text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    installation_status flows.emnify_device_installation_status_enum,
    commissioned_iso_week_date text,
    hardware text,
    prepay_enabled boolean,
    iccid text UNIQUE,
    site uuid,
    mode flows.meter_mode_enum DEFAULT 'active',
    firmware_version text,
    esco uuid REFERENCES flows.escos (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    daylight_savings_correction_enabled boolean,
    single_meter_app boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS flows.service_head_meter (
    service_head uuid NOT NULL REFERENCES flows.service_head_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    meter uuid NOT NULL REFERENCES flows.meter_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_head, meter)
);

CREATE TABLE IF NOT EXISTS flows.meter_shadows (
    id uuid PRIMARY KEY REFERENCES flows.meter_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    balance numeric,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    clock_time_diff_seconds integer,
    clock_time_diff_synced_at timestamptz,
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
    load_switch text
);
-- flows-db 0004 added it (after the production dump was taken).
ALTER TABLE flows.meter_shadows ADD COLUMN IF NOT EXISTS clock_time_diff_synced_at timestamptz;

CREATE TABLE IF NOT EXISTS flows.meter_registers (
    register_id uuid PRIMARY KEY,
    meter_id uuid NOT NULL REFERENCES flows.meter_registry (id),
    nature flows.register_nature_enum,
    created_at timestamptz NOT NULL DEFAULT now(),
    status flows.meter_register_status_enum DEFAULT 'enabled',
    element flows.meter_register_element,
    start_time timestamptz,
    end_time timestamptz,
    notes text,
    UNIQUE (register_id, meter_id),
    CHECK (end_time IS NULL OR start_time IS NULL OR end_time > start_time)
);

CREATE TABLE IF NOT EXISTS flows.meter_tophat_registry (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    meter uuid REFERENCES flows.meter_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    emnify_id integer UNIQUE,
    ip_address inet UNIQUE,
    iccid text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS flows.ev_chargers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    esco uuid REFERENCES flows.escos (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    serial varchar(8),
    pin varchar(4),
    position text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS flows.meter_metrics (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text,
    notes text,
    enabled boolean,
    run_frequency flows.meter_metric_run_frequency_enum
);

-- History ----------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS flows.register_import (
    register_id uuid NOT NULL REFERENCES flows.meter_registers (register_id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    "timestamp" timestamptz NOT NULL,
    read real,
    UNIQUE (register_id, "timestamp")
);

CREATE TABLE IF NOT EXISTS flows.register_export (
    register_id uuid NOT NULL REFERENCES flows.meter_registers (register_id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    "timestamp" timestamptz NOT NULL,
    read real,
    UNIQUE (register_id, "timestamp")
);

CREATE TABLE IF NOT EXISTS flows.register_interval_hh (
    register_id uuid NOT NULL
        CONSTRAINT meter_interval_register_id_fkey REFERENCES flows.meter_registers (register_id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    "timestamp" timestamptz NOT NULL,
    kwh numeric NOT NULL,
    UNIQUE (register_id, "timestamp")
);
CREATE INDEX IF NOT EXISTS register_interval_hh_timestamp_idx
    ON flows.register_interval_hh ("timestamp" DESC);

CREATE TABLE IF NOT EXISTS flows.meter_prepay_balance (
    meter_id uuid NOT NULL REFERENCES flows.meter_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT,
    "timestamp" timestamptz NOT NULL,
    balance numeric
);
CREATE INDEX IF NOT EXISTS meter_prepay_balance_timestamp_idx
    ON flows.meter_prepay_balance ("timestamp" DESC);

CREATE TABLE IF NOT EXISTS flows.meter_voltage (
    meter_id uuid NOT NULL REFERENCES flows.meter_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    "timestamp" timestamptz NOT NULL,
    voltage real
);
CREATE INDEX IF NOT EXISTS meter_voltage_timestamp_idx ON flows.meter_voltage ("timestamp" DESC);

CREATE TABLE IF NOT EXISTS flows.meter_3p_voltage (
    meter_id uuid NOT NULL REFERENCES flows.meter_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    "timestamp" timestamptz NOT NULL,
    voltage_l1 real,
    voltage_l2 real,
    voltage_l3 real
);
CREATE INDEX IF NOT EXISTS meter_3p_voltage_timestamp_idx
    ON flows.meter_3p_voltage ("timestamp" DESC);

CREATE TABLE IF NOT EXISTS flows.meter_csq (
    meter_id uuid NOT NULL REFERENCES flows.meter_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT,
    "timestamp" timestamptz NOT NULL,
    csq integer
);
CREATE INDEX IF NOT EXISTS meter_csq_timestamp_idx ON flows.meter_csq ("timestamp" DESC);

CREATE TABLE IF NOT EXISTS flows.meter_health_history (
    meter_id uuid NOT NULL REFERENCES flows.meter_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    "timestamp" timestamptz NOT NULL,
    health flows.health_check_status NOT NULL
);
CREATE INDEX IF NOT EXISTS meter_health_history_timestamp_idx
    ON flows.meter_health_history ("timestamp" DESC);

-- The unique (meter_id, "timestamp") keys of the two history tables that have one in
-- production (named meter_*_meter_time_idx there): built only where no such index exists.
DO $$
DECLARE
    history_table text;
BEGIN
    FOREACH history_table IN ARRAY ARRAY['meter_prepay_balance', 'meter_csq'] LOOP
        IF NOT EXISTS (
            SELECT FROM pg_index i
            WHERE i.indrelid = format('flows.%I', history_table)::regclass AND i.indisunique
              AND i.indpred IS NULL AND i.indexprs IS NULL
              AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                   FROM pg_attribute a
                   WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))
                  = ARRAY['meter_id', 'timestamp']
              AND i.indnatts = 2
        ) THEN
            EXECUTE format('CREATE UNIQUE INDEX %I ON flows.%I (meter_id, "timestamp")',
                           history_table || '_meter_id_timestamp_idx', history_table);
        END IF;
    END LOOP;
END
$$;

-- Meter-native event log (widened into flowsd's event store by migration 2).

CREATE TABLE IF NOT EXISTS flows.meter_event_log_type (
    id integer PRIMARY KEY,
    name text UNIQUE
);

CREATE TABLE IF NOT EXISTS flows.meter_event_log (
    meter_id uuid NOT NULL REFERENCES flows.meter_registry (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    "timestamp" timestamptz NOT NULL,
    event_type integer NOT NULL,
    event_set integer NOT NULL,
    PRIMARY KEY (meter_id, "timestamp", event_type)
);

-- Circuits -----------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS flows.circuits (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    type flows.circuit_type_enum NOT NULL,
    name text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS flows.circuit_register (
    circuit uuid NOT NULL DEFAULT gen_random_uuid() REFERENCES flows.circuits (id),
    register uuid NOT NULL DEFAULT gen_random_uuid()
        REFERENCES flows.meter_registers (register_id),
    start_time timestamptz NOT NULL,
    end_time timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    notes text,
    PRIMARY KEY (circuit, register, start_time),
    CHECK (end_time IS NULL OR end_time > start_time)
);

-- Registry triggers that are not history copies: keep updated_at current, create the shadow.

CREATE OR REPLACE FUNCTION flows.set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := statement_timestamp();
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION flows.create_meter_shadow() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO flows.meter_shadows (id) VALUES (NEW.id) ON CONFLICT (id) DO NOTHING;
    RETURN NULL;
END
$$;

-- Production has its own versions of these two triggers (names not public): add ours only
-- where the table has no trigger of that kind (tgtype bits: 2 BEFORE, 4 INSERT, 16 UPDATE).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'flows.meter_registry'::regclass
                   AND NOT tgisinternal AND tgtype & 2 = 2 AND tgtype & 16 = 16) THEN
        CREATE TRIGGER meter_registry_set_updated_at BEFORE UPDATE ON flows.meter_registry
            FOR EACH ROW EXECUTE FUNCTION flows.set_updated_at();
    END IF;
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'flows.meter_registry'::regclass
                   AND NOT tgisinternal AND tgtype & 2 = 0 AND tgtype & 4 = 4) THEN
        CREATE TRIGGER meter_registry_create_shadow AFTER INSERT ON flows.meter_registry
            FOR EACH ROW EXECUTE FUNCTION flows.create_meter_shadow();
    END IF;
END
$$;
