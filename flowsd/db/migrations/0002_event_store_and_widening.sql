-- Migration 2: flowsd's changes to the production shape. Runs on a fresh database (after the
-- baseline) and on an upgraded production one; nothing here deletes a row except exact
-- duplicate rows of the history tables that gain a unique key (step 2).
--
--  1. columns the platform's public documentation describes and production lacks;
--  2. a unique key on every history table, so writing an observation twice is a no-op;
--  3. meter_event_log widened into the event store (global position, payload, recorded_at,
--     read_at, idempotency key), append-only, appends serialised;
--  4. the event type catalogue (Emlite ids and flowsd's reserved 1001+ range);
--  5. production's meter_shadows -> history triggers dropped (projectors replace them);
--  6. flowsd's own bookkeeping tables (schema flowsd);
--  7. the views, with Europe/London settlement days for daily and monthly buckets;
--  8. roles and grants.

-- 1. Documented columns -----------------------------------------------------------------------

ALTER TABLE flows.meter_shadows
    ADD COLUMN IF NOT EXISTS balance_updated_at timestamptz,
    ADD COLUMN IF NOT EXISTS emergency_credit numeric;
ALTER TABLE flows.meter_prepay_balance ADD COLUMN IF NOT EXISTS emergency_credit numeric;
ALTER TABLE flows.meter_registers
    ADD COLUMN IF NOT EXISTS direction_reversed boolean NOT NULL DEFAULT false;
ALTER TABLE flows.sites_new
    ADD COLUMN IF NOT EXISTS location text,
    ADD COLUMN IF NOT EXISTS capacity_kw numeric;
ALTER TABLE flows.properties
    ADD COLUMN IF NOT EXISTS site uuid REFERENCES flows.sites_new (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    ADD COLUMN IF NOT EXISTS address text,
    ADD COLUMN IF NOT EXISTS type text;
ALTER TABLE flows.circuits
    ADD COLUMN IF NOT EXISTS site uuid REFERENCES flows.sites_new (id)
        ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED,
    ADD COLUMN IF NOT EXISTS rating_amps numeric;
ALTER TABLE flows.feeder_registry
    ADD COLUMN IF NOT EXISTS substation text,
    ADD COLUMN IF NOT EXISTS rating_amps numeric;
ALTER TABLE flows.meter_health_history ADD COLUMN IF NOT EXISTS reason text;
-- The docs' names for the cumulative read, plus the interval since the previous read (kWh).
ALTER TABLE flows.register_import
    ADD COLUMN IF NOT EXISTS import_cumulative real GENERATED ALWAYS AS (read) STORED,
    ADD COLUMN IF NOT EXISTS import_interval numeric;
ALTER TABLE flows.register_export
    ADD COLUMN IF NOT EXISTS export_cumulative real GENERATED ALWAYS AS (read) STORED,
    ADD COLUMN IF NOT EXISTS export_interval numeric;
-- kwh stays the half-hour import delta; export comes from profile log 2.
ALTER TABLE flows.register_interval_hh
    ADD COLUMN IF NOT EXISTS import_kwh numeric GENERATED ALWAYS AS (kwh) STORED,
    ADD COLUMN IF NOT EXISTS export_kwh numeric;

-- 2. Unique keys on history tables -------------------------------------------------------------
-- Production's triggers stamp rows with the statement time, so two rows share a key only when
-- one statement wrote the same value twice; those exact copies are removed. Rows that share a
-- key with different values make the index creation fail, naming the key: resolve by hand.

DELETE FROM flows.meter_voltage a USING flows.meter_voltage b
WHERE a.ctid > b.ctid AND a.meter_id = b.meter_id AND a."timestamp" = b."timestamp"
  AND a.voltage IS NOT DISTINCT FROM b.voltage;
CREATE UNIQUE INDEX IF NOT EXISTS meter_voltage_meter_id_timestamp_key
    ON flows.meter_voltage (meter_id, "timestamp");

DELETE FROM flows.meter_3p_voltage a USING flows.meter_3p_voltage b
WHERE a.ctid > b.ctid AND a.meter_id = b.meter_id AND a."timestamp" = b."timestamp"
  AND (a.voltage_l1, a.voltage_l2, a.voltage_l3)
      IS NOT DISTINCT FROM (b.voltage_l1, b.voltage_l2, b.voltage_l3);
CREATE UNIQUE INDEX IF NOT EXISTS meter_3p_voltage_meter_id_timestamp_key
    ON flows.meter_3p_voltage (meter_id, "timestamp");

DELETE FROM flows.meter_health_history a USING flows.meter_health_history b
WHERE a.ctid > b.ctid AND a.meter_id = b.meter_id AND a."timestamp" = b."timestamp"
  AND a.health = b.health AND a.reason IS NOT DISTINCT FROM b.reason;
CREATE UNIQUE INDEX IF NOT EXISTS meter_health_history_meter_id_timestamp_key
    ON flows.meter_health_history (meter_id, "timestamp");

-- 3. The event store ---------------------------------------------------------------------------

-- Shared with flowsd.events.types.idempotency_key (Python): 6 bytes of observed time in
-- milliseconds (floor), then bytes 7-16 of md5('<meter>|<type>|<epoch µs>|<discriminator>').
CREATE OR REPLACE FUNCTION flowsd.event_idempotency_key(
    meter_id uuid, event_type integer, observed_at timestamptz, discriminator text
) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (lpad(to_hex((((epoch_us - ((epoch_us % 1000) + 1000) % 1000) / 1000))
                        & 281474976710655), 12, '0')
            || substr(md5(meter_id::text || '|' || event_type::text || '|' || epoch_us::text
                          || '|' || discriminator), 13))::uuid
    FROM (SELECT (extract(epoch FROM observed_at) * 1000000)::bigint AS epoch_us) AS t
$$;

DO $$
DECLARE
    primary_key name;
BEGIN
    IF EXISTS (SELECT FROM pg_attribute
               WHERE attrelid = 'flows.meter_event_log'::regclass AND attname = 'position'
                 AND NOT attisdropped) THEN
        RETURN;
    END IF;
    -- Production's key (meter_id, timestamp, event_type) collapses distinct meter events that
    -- share a second and a type; the idempotency key (which includes event_set) replaces it.
    SELECT conname INTO primary_key FROM pg_constraint
    WHERE conrelid = 'flows.meter_event_log'::regclass AND contype = 'p';
    IF primary_key IS NOT NULL THEN
        EXECUTE format('ALTER TABLE flows.meter_event_log DROP CONSTRAINT %I', primary_key);
    END IF;
    ALTER TABLE flows.meter_event_log
        ALTER COLUMN event_set DROP NOT NULL,
        ADD COLUMN position bigint,
        -- Existing rows get the migration time: when they entered flowsd's log.
        ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT now(),
        ADD COLUMN read_at timestamptz,
        ADD COLUMN payload jsonb,
        ADD COLUMN idempotency_key uuid;
    -- Existing rows are numbered in meter-time order.
    UPDATE flows.meter_event_log AS e
    SET position = numbered.n,
        idempotency_key = flowsd.event_idempotency_key(
            e.meter_id, e.event_type, e."timestamp", coalesce(e.event_set::text, ''))
    FROM (SELECT ctid, row_number() OVER (ORDER BY "timestamp", meter_id, event_type) AS n
          FROM flows.meter_event_log) AS numbered
    WHERE e.ctid = numbered.ctid;
    ALTER TABLE flows.meter_event_log
        ALTER COLUMN position SET NOT NULL,
        ALTER COLUMN position ADD GENERATED ALWAYS AS IDENTITY
            (SEQUENCE NAME flows.meter_event_log_position_seq),
        ALTER COLUMN idempotency_key SET NOT NULL,
        ADD CONSTRAINT meter_event_log_pkey PRIMARY KEY (position);
    PERFORM setval('flows.meter_event_log_position_seq',
                   greatest(max(position), 1), max(position) IS NOT NULL)
    FROM flows.meter_event_log;
END
$$;

CREATE UNIQUE INDEX IF NOT EXISTS meter_event_log_idempotency_key_key
    ON flows.meter_event_log (idempotency_key);
-- No (meter_id, "timestamp") index replaces production's key: each secondary index on the log
-- costs about a fifth of append throughput, and per-meter lookups are served by the
-- (meter_id, event_type, "timestamp") index of migration 30.
-- Maps a time to a position for replays (`flowsd replay --since`).
CREATE INDEX IF NOT EXISTS meter_event_log_recorded_at_brin
    ON flows.meter_event_log USING brin (recorded_at);

-- The docs query meter_event_log.details: the payload under that name, on every version.
-- PostgreSQL 18+ computes it on read (VIRTUAL: nothing stored, nothing written). 15-17 have
-- only STORED generated columns, which write the payload a second time. Measured with
-- `make bench BENCH_ARGS="--only details"` (3 x 100k events of the reading mix, batches of
-- 1000, medians): on 15, 383 -> 518 bytes per event (+135, heap 246 -> 381) and append
-- 56.0k -> 47.8k events/s (-15 %, runs overlap); on 18, VIRTUAL 383 bytes and 54.8k/s,
-- the same as no column. A plain column filled by the appender would cost the same as
-- STORED and miss rows written by other writers, so STORED it is. The keyword is
-- version-specific syntax, so the statement is built at run time (PL/pgSQL parses every
-- static statement of a block, also in a branch never taken).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute
                   WHERE attrelid = 'flows.meter_event_log'::regclass
                     AND attname = 'details' AND NOT attisdropped) THEN
        EXECUTE format(
            'ALTER TABLE flows.meter_event_log ADD COLUMN details jsonb '
            'GENERATED ALWAYS AS (payload) %s',
            CASE WHEN current_setting('server_version_num')::int >= 180000
                 THEN 'VIRTUAL' ELSE 'STORED' END);
    END IF;
END
$$;

COMMENT ON COLUMN flows.meter_event_log.details IS
    'The payload under the documentation''s name: computed on read on PostgreSQL 18+, a '
    'stored copy of it on 15-17.';

COMMENT ON TABLE flows.meter_event_log IS
    'Append-only log of every meter event: the meter''s own event-log entries (event_type = '
    'Emlite id 1-255, timestamp = meter time, event_set as the meter reports it) and flowsd''s '
    'readings and state changes (event_type 1001+, payload JSONB, see meter_event_log_type). '
    'Read in position order; position order is commit order.';
COMMENT ON COLUMN flows.meter_event_log.position IS
    'Global order. Appends are serialised, so a reader that saw position N has seen every '
    'committed event below N. Gaps (rolled-back appends) are permanent and harmless.';
COMMENT ON COLUMN flows.meter_event_log.idempotency_key IS
    'Observed time (ms) then an md5 of meter, type, observed time (epoch microseconds) and a '
    'per-type discriminator (event_set for meter events), see flowsd.event_idempotency_key: '
    'the same observation appended twice is stored once.';

-- Appends are serialised by a transaction-scoped advisory lock taken before any row (and so
-- any position) exists, for every writer: INSERT, COPY, psql. Position order = commit order.
CREATE OR REPLACE FUNCTION flowsd.serialize_event_log_append() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7380396448181125121);
    RETURN NULL;
END
$$;

-- The appender's first statement: take the lock, return the last position allocated so far.
CREATE OR REPLACE FUNCTION flowsd.begin_event_append() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    head bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7380396448181125121);
    SELECT last_value - CASE WHEN is_called THEN 0 ELSE 1 END INTO head
    FROM flows.meter_event_log_position_seq;
    RETURN head;
END
$$;

-- The appender's last statement: the new head, announced to other processes at commit.
CREATE OR REPLACE FUNCTION flowsd.finish_event_append(announce boolean) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    head bigint;
BEGIN
    SELECT last_value - CASE WHEN is_called THEN 0 ELSE 1 END INTO head
    FROM flows.meter_event_log_position_seq;
    IF announce THEN
        PERFORM pg_notify('flowsd_events', head::text);
    END IF;
    RETURN head;
END
$$;

-- Writers that do not know about idempotency keys (psql, production's old syncer) get the
-- meter-event formula.
CREATE OR REPLACE FUNCTION flowsd.fill_event_idempotency_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.idempotency_key := flowsd.event_idempotency_key(
        NEW.meter_id, NEW.event_type, NEW."timestamp", coalesce(NEW.event_set::text, ''));
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION flowsd.reject_event_log_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('flowsd.event_log_maintenance', true), '') <> 'on' THEN
        RAISE EXCEPTION 'flows.meter_event_log is append-only (% refused)', TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Retention is an explicit operation: flowsd.purge_event_log().';
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS meter_event_log_serialize_appends ON flows.meter_event_log;
CREATE TRIGGER meter_event_log_serialize_appends
    BEFORE INSERT ON flows.meter_event_log
    FOR EACH STATEMENT EXECUTE FUNCTION flowsd.serialize_event_log_append();
DROP TRIGGER IF EXISTS meter_event_log_fill_idempotency_key ON flows.meter_event_log;
CREATE TRIGGER meter_event_log_fill_idempotency_key
    BEFORE INSERT ON flows.meter_event_log
    FOR EACH ROW WHEN (NEW.idempotency_key IS NULL)
    EXECUTE FUNCTION flowsd.fill_event_idempotency_key();
DROP TRIGGER IF EXISTS meter_event_log_append_only ON flows.meter_event_log;
CREATE TRIGGER meter_event_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON flows.meter_event_log
    FOR EACH STATEMENT EXECUTE FUNCTION flowsd.reject_event_log_change();

-- Retention, the only way rows leave the log: flowsd's readings recorded before `cutoff`.
-- Meter-native entries and state changes are kept. Owner only (no grant).
CREATE OR REPLACE FUNCTION flowsd.purge_event_log(cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    removed bigint;
BEGIN
    PERFORM set_config('flowsd.event_log_maintenance', 'on', true);
    DELETE FROM flows.meter_event_log
    WHERE recorded_at < cutoff AND event_type BETWEEN 1001 AND 1099;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('flowsd.event_log_maintenance', 'off', true);
    RETURN removed;
END
$$;

-- 4. Event types ----------------------------------------------------------------------------

INSERT INTO flows.meter_event_log_type (id, name) VALUES
    (1, 'BM_OVER_CURRENT'), (2, 'BM_FAULTY_CONTACTOR'), (3, 'BM_REVERSE_ENERGY_DETECT'),
    (4, 'BM_TERMINAL_COVER_REMOVED'), (5, 'BM_WATCHDOG_RESET'), (6, 'BM_NV_WRITE_EXCEEDED'),
    (7, 'BM_METROLOGY_ERROR'), (8, 'BM_MEMORY_ERROR'), (9, 'BM_MODULE_REMOVED'),
    (10, 'BM_MAGNETIC_FRAUD'), (11, 'BM_NON_LEGAL_TIME'), (15, 'BM_SPAD_1_WRITE'),
    (16, 'BM_SPAD_2_WRITE'), (17, 'DSP_ERROR'), (18, 'BM_COMMS_ERROR'), (19, 'GW_COMMS_ERROR'),
    (20, 'PF_TAG_1_ERROR'), (21, 'PF_TAG_2_ERROR'), (22, 'SPARE_0020'), (23, 'SPARE_0040'),
    (24, 'SPARE_0080'), (25, 'NON_LEGAL_TIME'), (26, 'MEMORY_TYPE'), (27, 'MEMORY_ERROR'),
    (28, 'WATCHDOG_RESET'), (29, 'SW_IMAGE_WDOG'), (30, 'SW_IMAGE_HES_PREVIOUS'),
    (31, 'SW_IMAGE_APPLIED'), (32, 'SW_IMAGE_BAD'), (33, 'EVENT_POWER_UP'),
    (34, 'EVENT_POWER_DN'), (35, 'EVENT_IMAGE_RECEIVED'), (36, 'EVENT_LOG_RESET_ID'),
    (37, 'EVENT_IMAGE_ERROR'), (38, 'DAILY_LOG_SNAPSHOT'), (39, 'BILLING_LOG_SNAPSHOT'),
    (40, 'DO_BIND_COMMAND'), (41, 'DO_UNBIND_COMMAND'), (42, 'NEW_IMAGE_APPLIED'),
    (43, 'WATCHDOG_IMAGE_APPLIED'), (44, 'PREVIOUS_IMAGE_APPLIED'),
    -- Not in the vendor enum; named by operators from its correlation with top-ups.
    (48, 'CREDIT_TOKEN_APPLIED'),
    (61, 'HES_MSG_PENDING'), (62, 'SM_COMMS_ERROR'), (63, 'WAN_COMMS_ERROR'),
    (64, 'HAN_COMMS_ERROR_GAS'), (65, 'HAN_COMMS_ERROR_IHU'), (66, 'HAN_API_NOT_RESPONDING'),
    (67, 'SPARE_0040_2'), (68, 'SPARE_0080_2'), (69, 'NON_LEGAL_TIME_2'),
    (70, 'MEMORY_TYPE_2'), (71, 'MEMORY_ERROR_2'), (72, 'WATCHDOG_RESET_2'),
    (73, 'SW_IMAGE_WDOG_2'), (74, 'SW_IMAGE_HES_PREVIOUS_2'), (75, 'SW_IMAGE_APPLIED_2'),
    (76, 'SW_IMAGE_BAD_2'), (77, 'EVENT_IMAGE_RECEIVED_2'), (78, 'EVENT_LOG_RESET_ID_2'),
    (80, 'HAN_DEVICE_JOINED'), (81, 'HAN_DEVICE_LEFT'), (83, 'INVALID_WAN_MESSAGE'),
    (84, 'EVENT_POWER_UP_2'), (85, 'EVENT_POWER_DOWN'), (86, 'LAST_GASP_SENT_TO_HES'),
    (87, 'ALARM_SENT_TO_HES'), (88, 'EVENT_IMAGE_ERROR_2'), (89, 'GW_DO_UNBIND_COMMAND'),
    (90, 'GW_DO_BIND_COMMAND'), (91, 'GW_NEW_IMAGE_APPLIED'), (92, 'GW_WATCHDOG_IMAGE_APPLIED'),
    (93, 'GW_PREVIOUS_IMAGE_APPLIED'), (94, 'GSM_RESET_NO_CONNECTION'),
    (95, 'STATUS_WORD_RESET'), (96, 'ZIGBEE_GET_SW_VER_ERR'), (97, 'ZIGBEE_SEND_MAC_LINK_ERR'),
    (98, 'ZIGBEE_SHUTODWN_ERR'), (99, 'ZIGBEE_ACTIVE_IMAGE_ERR'),
    (104, 'LISTENING_SOCKET_ABORTED'), (105, 'AUTO_ROAMING_DISABLE'),
    -- flowsd readings (flowsd.events.types; a test keeps the two in step)
    (1001, 'BALANCE_READ'), (1002, 'SIGNAL_QUALITY_READ'), (1003, 'VOLTAGE_READ'),
    (1004, 'THREE_PHASE_VOLTAGE_READ'), (1005, 'CLOCK_READ'), (1006, 'REGISTER_READ'),
    (1007, 'THREE_PHASE_REGISTER_READ'), (1008, 'ACTIVE_TARIFF_READ'),
    (1009, 'FUTURE_TARIFF_READ'), (1010, 'IDENTITY_READ'), (1011, 'FLAGS_READ'),
    (1012, 'BACKLIGHT_READ'), (1013, 'LOAD_SWITCH_READ'), (1014, 'PROFILE_LOG_1_RECORD'),
    (1015, 'PROFILE_LOG_2_RECORD'), (1016, 'THREE_PHASE_INTERVAL_RECORD'),
    -- flowsd state changes
    (1101, 'BALANCE_CHANGED'), (1102, 'FUTURE_TARIFF_CHANGED'), (1103, 'TARIFF_ACTIVATED'),
    (1104, 'METER_WENT_OFFLINE'), (1105, 'METER_CAME_ONLINE'), (1106, 'HEALTH_CHANGED'),
    (1107, 'FIRMWARE_CHANGED'), (1108, 'HARDWARE_CHANGED'), (1109, 'SERIAL_CHANGED'),
    (1110, 'PREPAY_MODE_CHANGED'), (1111, 'CLOCK_DRIFT_THRESHOLD_CROSSED'),
    (1112, 'DAYLIGHT_SAVINGS_CORRECTION_CHANGED')
ON CONFLICT DO NOTHING;

COMMENT ON TABLE flows.meter_event_log_type IS
    'Names of meter_event_log.event_type: 1-255 Emlite meter events, 1001-1099 flowsd '
    'readings, 1101-1199 flowsd state changes, 1201-1299 reserved for commands.';

-- 5. No shadow -> history triggers -------------------------------------------------------------
-- Production copies meter_shadows columns into the history tables with AFTER UPDATE triggers,
-- stamping rows with database time. flowsd's projectors write history from events with the
-- observation time instead, so every user trigger on meter_shadows is dropped here (their
-- functions are left in place, unused) and only the updated_at stamp is recreated.

DO $$
DECLARE
    trigger_name name;
BEGIN
    FOR trigger_name IN
        SELECT tgname FROM pg_trigger
        WHERE tgrelid = 'flows.meter_shadows'::regclass AND NOT tgisinternal
    LOOP
        EXECUTE format('DROP TRIGGER %I ON flows.meter_shadows', trigger_name);
    END LOOP;
END
$$;
CREATE TRIGGER meter_shadows_set_updated_at BEFORE UPDATE ON flows.meter_shadows
    FOR EACH ROW EXECUTE FUNCTION flows.set_updated_at();

-- 6. flowsd bookkeeping ------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS flowsd.projector_checkpoint (
    name text PRIMARY KEY,
    position bigint NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE flowsd.projector_checkpoint IS
    'Last meter_event_log position each projector has applied; moved in the same transaction '
    'as the projector''s rows, compare-and-set on the previous value.';

CREATE TABLE IF NOT EXISTS flowsd.rejected_event (
    idempotency_key uuid PRIMARY KEY,
    meter_id uuid NOT NULL,
    event_type integer NOT NULL,
    event jsonb NOT NULL,
    error text NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE flowsd.rejected_event IS
    'Events the database refused on their own merits (e.g. a meter_id not in meter_registry); '
    'kept whole so an operator can fix the cause and append them again.';

-- 7. Views -------------------------------------------------------------------------------------
-- Columns in production's order: CREATE OR REPLACE VIEW can add columns at the end but cannot
-- rename or reorder the ones a production view already has.

CREATE OR REPLACE VIEW flows.meter_shadows_tariffs AS
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
FROM flows.meter_shadows ms
JOIN flows.meter_registry mr ON mr.id = ms.id
WHERE mr.hardware <> 'P1.ax';

CREATE OR REPLACE VIEW flows.meters_low_balance AS
SELECT mr.id, mr.serial, mr.name, ms.balance
FROM flows.meter_shadows ms
JOIN flows.meter_registry mr ON mr.id = ms.id
WHERE ms.balance < 15.00;

CREATE OR REPLACE VIEW flows.meters_offline_recently AS
SELECT last_seen.last_online, mr.serial, mr.name
FROM (SELECT meter_id, max("timestamp") AS last_online
      FROM flows.meter_csq WHERE csq IS NOT NULL GROUP BY meter_id) AS last_seen
JOIN flows.meter_registry mr ON mr.id = last_seen.meter_id
WHERE last_seen.last_online < now() - interval '3 hours'
  AND last_seen.last_online > now() - interval '24 hours'
ORDER BY last_seen.last_online;

CREATE OR REPLACE VIEW flows.meters_offline_all AS
SELECT last_seen.last_online, mr.serial, mr.name
FROM (SELECT meter_id, max("timestamp") AS last_online
      FROM flows.meter_csq WHERE csq IS NOT NULL GROUP BY meter_id) AS last_seen
JOIN flows.meter_registry mr ON mr.id = last_seen.meter_id
WHERE last_seen.last_online < now() - interval '3 hours'
ORDER BY last_seen.last_online;

CREATE OR REPLACE VIEW flows.meters_clock_drift AS
SELECT ms.clock_time_diff_seconds, mr.serial, mr.name
FROM flows.meter_shadows ms
JOIN flows.meter_registry mr ON mr.id = ms.id
WHERE ms.clock_time_diff_seconds >= 60
ORDER BY ms.clock_time_diff_seconds DESC;

-- Circuit energy. With TimescaleDB, migration 3 makes these continuous aggregates; here they
-- are plain views (always current, computed on read). Half hours are 30-minute buckets of
-- register_interval_hh; days and months are Europe/London settlement days (local midnight to
-- local midnight: 46 or 50 half hours on clock-change days), labelled by the UTC instant of
-- that local midnight. Production buckets in UTC. kwh = total_import_kwh, the sum of the
-- registers' half-hour import; total_export_kwh sums register_interval_hh.export_kwh. A
-- register counts for a circuit only inside its circuit_register [start_time, end_time).
-- A previous continuous aggregate or materialized view is left to migration 3.
DO $$
DECLARE
    existing "char";
    is_continuous_aggregate boolean;
    definitions text[][] := ARRAY[
        ['circuit_interval_hh', $v$
SELECT cr.circuit AS circuit_id,
       date_bin('30 minutes', rih."timestamp", timestamptz '2000-01-01 00:00:00+00')
           AS "timestamp",
       sum(rih.kwh) AS kwh,
       sum(rih.kwh) AS total_import_kwh,
       sum(rih.export_kwh) AS total_export_kwh
FROM flows.register_interval_hh rih
JOIN flows.circuit_register cr
  ON cr.register = rih.register_id
 AND rih."timestamp" >= cr.start_time
 AND (cr.end_time IS NULL OR rih."timestamp" < cr.end_time)
GROUP BY 1, 2 $v$],
        ['circuit_interval_daily', $v$
SELECT hh.circuit_id,
       date_trunc('day', hh."timestamp", 'Europe/London') AS day,
       sum(hh.kwh) AS kwh,
       sum(hh.total_import_kwh) AS total_import_kwh,
       sum(hh.total_export_kwh) AS total_export_kwh
FROM flows.circuit_interval_hh hh
GROUP BY 1, 2 $v$],
        ['circuit_interval_monthly', $v$
SELECT d.circuit_id,
       date_trunc('month', d.day, 'Europe/London') AS month,
       sum(d.kwh) AS kwh,
       sum(d.total_import_kwh) AS total_import_kwh,
       sum(d.total_export_kwh) AS total_export_kwh,
       extract(day FROM (date_trunc('month', d.day, 'Europe/London') AT TIME ZONE 'Europe/London'
                         + interval '1 month - 1 day'))::integer AS days_in_month
FROM flows.circuit_interval_daily d
GROUP BY 1, 2 $v$]
    ];
    spec text[];
BEGIN
    FOREACH spec SLICE 1 IN ARRAY definitions LOOP
        SELECT c.relkind INTO existing FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'flows' AND c.relname = spec[1];
        IF existing = 'v' AND to_regclass('_timescaledb_catalog.continuous_agg') IS NOT NULL THEN
            EXECUTE 'SELECT count(*) > 0 FROM _timescaledb_catalog.continuous_agg
                     WHERE user_view_schema = $1 AND user_view_name = $2'
                INTO is_continuous_aggregate USING 'flows', spec[1];
            IF is_continuous_aggregate THEN
                existing := 'c';  -- replaced by migration 3
            END IF;
        END IF;
        IF existing IS NULL OR existing = 'v' THEN
            EXECUTE format('CREATE OR REPLACE VIEW flows.%I AS %s', spec[1], spec[2]);
            EXECUTE format(
                'COMMENT ON VIEW flows.%I IS %L', spec[1],
                'Circuit energy (kWh); daily/monthly buckets are Europe/London settlement days.');
        ELSE
            RAISE NOTICE 'flows.% is not a plain view (kind %); left unchanged', spec[1], existing;
        END IF;
        existing := NULL;
    END LOOP;
END
$$;

-- Completeness: per register and UTC day of the past year, rows found against the expectation
-- (1 cumulative read per day, 48 half hours), in production's columns (`date` is the day's
-- UTC midnight). Refreshed by the operator's schedule.
CREATE MATERIALIZED VIEW IF NOT EXISTS flows.register_import_missing AS
SELECT r.register_id, d.date, count(ri."timestamp") AS record_count,
       greatest(1 - count(ri."timestamp"), 0) AS missing_count
FROM flows.meter_registers r
CROSS JOIN (SELECT day AT TIME ZONE 'UTC' AS date
            FROM generate_series((current_date - 365)::timestamp,
                                 (current_date - 1)::timestamp, interval '1 day') AS day) AS d
LEFT JOIN flows.register_import ri
  ON ri.register_id = r.register_id
 AND ri."timestamp" >= d.date AND ri."timestamp" < d.date + interval '1 day'
GROUP BY r.register_id, d.date;

CREATE MATERIALIZED VIEW IF NOT EXISTS flows.register_export_missing AS
SELECT r.register_id, d.date, count(re."timestamp") AS record_count,
       greatest(1 - count(re."timestamp"), 0) AS missing_count
FROM flows.meter_registers r
CROSS JOIN (SELECT day AT TIME ZONE 'UTC' AS date
            FROM generate_series((current_date - 365)::timestamp,
                                 (current_date - 1)::timestamp, interval '1 day') AS day) AS d
LEFT JOIN flows.register_export re
  ON re.register_id = r.register_id
 AND re."timestamp" >= d.date AND re."timestamp" < d.date + interval '1 day'
GROUP BY r.register_id, d.date;

CREATE MATERIALIZED VIEW IF NOT EXISTS flows.register_interval_hh_missing AS
SELECT r.register_id, d.date, count(hh."timestamp") AS record_count,
       greatest(48 - count(hh."timestamp"), 0) AS missing_count
FROM flows.meter_registers r
CROSS JOIN (SELECT day AT TIME ZONE 'UTC' AS date
            FROM generate_series((current_date - 365)::timestamp,
                                 (current_date - 1)::timestamp, interval '1 day') AS day) AS d
LEFT JOIN flows.register_interval_hh hh
  ON hh.register_id = r.register_id
 AND hh."timestamp" >= d.date AND hh."timestamp" < d.date + interval '1 day'
GROUP BY r.register_id, d.date;

-- 8. Roles ---------------------------------------------------------------------------------
-- Roles are cluster-wide and several databases on one server may migrate at once (the test
-- suite does): creation tolerates the role existing or appearing concurrently. Creating one
-- needs CREATEROLE (hosted admin roles have it); a migrating role without it needs the two
-- roles created beforehand, and is told so.
-- flowsd_writer: the daemon (append to the event log, never change it; maintain projections).
-- flowsd_reader: consumers (SELECT only). Both NOLOGIN: grant them to login roles.

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['flowsd_writer', 'flowsd_reader'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN
                    NULL;  -- created by a concurrent migration of another database
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'role % does not exist and % may not create roles',
                                    role_name, current_user
                        USING ERRCODE = 'insufficient_privilege',
                              HINT = 'as an administrator, once: CREATE ROLE flowsd_writer '
                                     'NOLOGIN; CREATE ROLE flowsd_reader NOLOGIN; then migrate '
                                     'again';
            END;
        END IF;
    END LOOP;
END
$$;

-- Re-run at the end of every `flowsd migrate`, so tables added later get the same grants.
CREATE OR REPLACE PROCEDURE flowsd.apply_grants()
LANGUAGE plpgsql AS $$
BEGIN
    GRANT USAGE ON SCHEMA flows, flowsd TO flowsd_writer, flowsd_reader;
    GRANT SELECT ON ALL TABLES IN SCHEMA flows TO flowsd_reader, flowsd_writer;
    GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA flows TO flowsd_writer;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA flows TO flowsd_writer;
    REVOKE UPDATE, DELETE, TRUNCATE ON flows.meter_event_log FROM flowsd_writer, PUBLIC;
    GRANT SELECT ON ALL TABLES IN SCHEMA flowsd TO flowsd_reader, flowsd_writer;
    GRANT INSERT, UPDATE ON flowsd.projector_checkpoint TO flowsd_writer;
    GRANT INSERT ON flowsd.rejected_event TO flowsd_writer;
    REVOKE EXECUTE ON FUNCTION flowsd.purge_event_log(timestamptz) FROM PUBLIC;
END
$$;

CALL flowsd.apply_grants();
