-- Migration 115: flows.meter_event_log becomes a table partitioned by month of recorded_at
-- (native range partitioning, PostgreSQL 15+, no superuser, with or without TimescaleDB).
--
-- What stays the same: the columns and their order, `details` (VIRTUAL or STORED as before),
-- position order = commit order (the append lock and the identity sequence
-- flows.meter_event_log_position_seq are unchanged), every trigger, and the idempotency
-- guarantee. A unique index on a partitioned table must contain the partition key, so the
-- log can no longer carry one on idempotency_key alone; instead every key is claimed in
-- flowsd.event_key (its primary key) by a statement trigger on the log, in the same
-- statement as the rows: a key already stored fails the insert with unique_violation, as the
-- log's own index did. The log's primary key becomes (position, recorded_at).
--
-- Partitions live in schema flowsd (named meter_event_log_YYYY_MM, UTC months; the rows
-- recorded before this migration's month in meter_event_log_before_YYYY_MM; a default
-- partition catches rows outside every range, e.g. a recorded_at given by hand).
-- flowsd.ensure_event_log_partitions() creates months ahead; flowsd.begin_event_append()
-- calls it when fewer than 25 days are covered ahead, so no append waits for housekeeping.
-- Retention: flowsd.detach_event_log_partitions(before) (see flowsd/events/README.md).
--
-- An existing log is copied into the new table (every row, every position); the copy fills
-- flowsd.event_key through the trigger.

CREATE TABLE IF NOT EXISTS flowsd.event_key (
    idempotency_key uuid PRIMARY KEY
);
COMMENT ON TABLE flowsd.event_key IS
    'The idempotency key of every event appended to flows.meter_event_log (claimed by a '
    'statement trigger on the log, in the same statement): uniqueness across its partitions. '
    'Keys of detached partitions stay unless forgotten on purpose.';

CREATE TABLE IF NOT EXISTS flowsd.event_log_partition (
    name text PRIMARY KEY,
    lower_bound timestamptz,  -- NULL: MINVALUE
    upper_bound timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    detached_at timestamptz
);
COMMENT ON TABLE flowsd.event_log_partition IS
    'The range partitions of flows.meter_event_log (tables in schema flowsd), attached or '
    'detached by flowsd.detach_event_log_partitions(); recorded_at in [lower_bound, '
    'upper_bound).';

CREATE OR REPLACE FUNCTION flowsd.claim_event_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO flowsd.event_key (idempotency_key) SELECT idempotency_key FROM appended;
    RETURN NULL;
END
$$;

-- The months from `lower_bound`'s through the one containing `through`, each created as a
-- table and then attached (which locks the log SHARE UPDATE EXCLUSIVE only: readers and
-- appenders go on). Rows of the new range already in the default partition are moved into
-- the new partition first. Owner's rights, so that an appender that is no owner can call it.
-- Returns the partitions created.
CREATE OR REPLACE FUNCTION flowsd.ensure_event_log_partitions(
    through timestamptz DEFAULT now() + interval '32 days'
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    low timestamptz;
    high timestamptz;
    partition_name text;
    columns text;
    made integer := 0;
BEGIN
    SELECT max(upper_bound) INTO low FROM flowsd.event_log_partition WHERE detached_at IS NULL;
    IF low IS NULL THEN
        low := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    END IF;
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
    FROM pg_attribute
    WHERE attrelid = 'flows.meter_event_log'::regclass AND attnum > 0 AND NOT attisdropped
      AND attgenerated = '';
    WHILE low <= through LOOP
        high := (date_trunc('month', low AT TIME ZONE 'UTC') + interval '1 month')
                AT TIME ZONE 'UTC';
        partition_name := 'meter_event_log_' || to_char(low AT TIME ZONE 'UTC', 'YYYY_MM');
        EXECUTE format('CREATE TABLE flowsd.%I (LIKE flows.meter_event_log '
                       'INCLUDING DEFAULTS INCLUDING GENERATED)', partition_name);
        IF to_regclass('flowsd.meter_event_log_default') IS NOT NULL THEN
            EXECUTE format(
                'WITH moved AS (DELETE FROM flowsd.meter_event_log_default '
                'WHERE recorded_at >= $1 AND recorded_at < $2 RETURNING *) '
                'INSERT INTO flowsd.%I (%s) SELECT %s FROM moved',
                partition_name, columns, columns)
                USING low, high;
        END IF;
        EXECUTE format('ALTER TABLE flows.meter_event_log ATTACH PARTITION flowsd.%I '
                       'FOR VALUES FROM (%L) TO (%L)', partition_name, low, high);
        INSERT INTO flowsd.event_log_partition (name, lower_bound, upper_bound)
        VALUES (partition_name, low, high);
        made := made + 1;
        low := high;
    END LOOP;
    RETURN made;
END
$$;

-- The conversion -----------------------------------------------------------------------------

DO $$
DECLARE
    head bigint;
    month_start timestamptz := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    dependents text;
    columns text;
    identity_sequence text;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'flows.meter_event_log'::regclass) = 'p' THEN
        RETURN;
    END IF;
    SELECT string_agg(DISTINCT r.ev_class::regclass::text, ', ') INTO dependents
    FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = 'flows.meter_event_log'::regclass
      AND d.classid = 'pg_rewrite'::regclass AND r.ev_class <> 'flows.meter_event_log'::regclass;
    IF dependents IS NOT NULL THEN
        RAISE EXCEPTION 'flows.meter_event_log is about to be partitioned, and views depend on it: %',
                        dependents
            USING HINT = 'drop them, migrate, and create them again';
    END IF;
    SELECT last_value - CASE WHEN is_called THEN 0 ELSE 1 END INTO head
    FROM flows.meter_event_log_position_seq;

    ALTER TABLE flows.meter_event_log RENAME TO meter_event_log_unpartitioned;
    ALTER SEQUENCE flows.meter_event_log_position_seq
        RENAME TO meter_event_log_unpartitioned_position_seq;
    CREATE TABLE flows.meter_event_log (
        LIKE flows.meter_event_log_unpartitioned
        INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING IDENTITY INCLUDING COMMENTS
    ) PARTITION BY RANGE (recorded_at);
    identity_sequence := pg_get_serial_sequence('flows.meter_event_log', 'position');
    IF identity_sequence <> 'flows.meter_event_log_position_seq' THEN
        EXECUTE format('ALTER SEQUENCE %s RENAME TO meter_event_log_position_seq',
                       identity_sequence);
    END IF;
    PERFORM setval('flows.meter_event_log_position_seq', greatest(head, 1), head > 0);
    COMMENT ON TABLE flows.meter_event_log IS
        'Append-only log of every meter event: the meter''s own event-log entries (event_type = '
        'Emlite id 1-255, timestamp = meter time, event_set as the meter reports it) and '
        'flowsd''s readings and state changes (event_type 1001+, payload JSONB, see '
        'meter_event_log_type). Read in position order; position order is commit order. '
        'Partitioned by month of recorded_at (flowsd.event_log_partition).';

    -- Partitions: the rows before this month in one, this month and the next.
    EXECUTE format('CREATE TABLE flowsd.%I PARTITION OF flows.meter_event_log '
                   'FOR VALUES FROM (MINVALUE) TO (%L)',
                   'meter_event_log_before_' || to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM'),
                   month_start);
    INSERT INTO flowsd.event_log_partition (name, lower_bound, upper_bound)
    VALUES ('meter_event_log_before_' || to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM'),
            NULL, month_start);
    CREATE TABLE flowsd.meter_event_log_default PARTITION OF flows.meter_event_log DEFAULT;
    PERFORM flowsd.ensure_event_log_partitions();

    -- The triggers of migrations 2 and 100, and the key claim.
    CREATE TRIGGER meter_event_log_serialize_appends
        BEFORE INSERT ON flows.meter_event_log
        FOR EACH STATEMENT EXECUTE FUNCTION flowsd.serialize_event_log_append();
    CREATE TRIGGER meter_event_log_fill_idempotency_key
        BEFORE INSERT ON flows.meter_event_log
        FOR EACH ROW WHEN (NEW.idempotency_key IS NULL)
        EXECUTE FUNCTION flowsd.fill_event_idempotency_key();
    CREATE TRIGGER meter_event_log_append_only
        BEFORE UPDATE OR DELETE OR TRUNCATE ON flows.meter_event_log
        FOR EACH STATEMENT EXECUTE FUNCTION flowsd.reject_event_log_change();
    CREATE TRIGGER meter_event_log_note_meters
        AFTER INSERT ON flows.meter_event_log
        REFERENCING NEW TABLE AS appended
        FOR EACH STATEMENT EXECUTE FUNCTION flowsd.note_event_log_meters();
    CREATE TRIGGER meter_event_log_claim_keys
        AFTER INSERT ON flows.meter_event_log
        REFERENCING NEW TABLE AS appended
        FOR EACH STATEMENT EXECUTE FUNCTION flowsd.claim_event_keys();

    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
    FROM pg_attribute
    WHERE attrelid = 'flows.meter_event_log'::regclass AND attnum > 0 AND NOT attisdropped
      AND attgenerated = '';
    EXECUTE format('INSERT INTO flows.meter_event_log (%s) OVERRIDING SYSTEM VALUE '
                   'SELECT %s FROM flows.meter_event_log_unpartitioned ORDER BY position',
                   columns, columns);
    DROP TABLE flows.meter_event_log_unpartitioned;

    -- The indexes of migrations 2 and 100, per partition.
    ALTER TABLE flows.meter_event_log
        ADD CONSTRAINT meter_event_log_pkey PRIMARY KEY (position, recorded_at);
    CREATE INDEX meter_event_log_meter_lookup_idx
        ON flows.meter_event_log (meter_id, event_type, "timestamp")
        WHERE event_type NOT BETWEEN 1001 AND 1013;
    CREATE INDEX meter_event_log_recorded_at_brin
        ON flows.meter_event_log USING brin (recorded_at);
END
$$;

COMMENT ON COLUMN flows.meter_event_log.idempotency_key IS
    'Observed time (ms) then an md5 of meter, type, observed time (epoch microseconds) and a '
    'per-type discriminator (event_set for meter events), see flowsd.event_idempotency_key: '
    'the same observation appended twice is stored once (flowsd.event_key holds every key).';

-- The appender's first statement, as in migration 2, and months ahead when few are left.
CREATE OR REPLACE FUNCTION flowsd.begin_event_append() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    head bigint;
    timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM pg_advisory_xact_lock(7380396448181125121);
    IF (SELECT max(upper_bound) FROM flowsd.event_log_partition WHERE detached_at IS NULL)
       < now() + interval '25 days' THEN
        BEGIN
            -- A long reader of the default partition must not hold appends up: try again
            -- with the next batch (25 days remain; the default partition takes what is late).
            PERFORM set_config('lock_timeout', '200ms', true);
            PERFORM flowsd.ensure_event_log_partitions();
            PERFORM set_config('lock_timeout', timeout, true);
        EXCEPTION WHEN lock_not_available THEN
            PERFORM set_config('lock_timeout', timeout, true);
        END;
    END IF;
    SELECT last_value - CASE WHEN is_called THEN 0 ELSE 1 END INTO head
    FROM flows.meter_event_log_position_seq;
    RETURN head;
END
$$;

-- Retention, as in migration 2, now also forgetting the removed events' keys.
CREATE OR REPLACE FUNCTION flowsd.purge_event_log(cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    removed bigint;
BEGIN
    PERFORM set_config('flowsd.event_log_maintenance', 'on', true);
    WITH gone AS (
        DELETE FROM flows.meter_event_log
        WHERE recorded_at < cutoff AND event_type BETWEEN 1001 AND 1099
        RETURNING idempotency_key
    ), forgotten AS (
        DELETE FROM flowsd.event_key k USING gone WHERE k.idempotency_key = gone.idempotency_key
        RETURNING 1
    )
    SELECT count(*) INTO removed FROM gone;
    PERFORM set_config('flowsd.event_log_maintenance', 'off', true);
    RETURN removed;
END
$$;

-- Retention by partition: every attached partition wholly before `before` is detached (its
-- table stays in schema flowsd, to be archived and dropped by the operator). Its events'
-- keys stay in flowsd.event_key (an old observation re-read is still a duplicate) unless
-- `forget_keys`. Returns the detached tables. Owner only (no grant).
CREATE OR REPLACE FUNCTION flowsd.detach_event_log_partitions(
    before timestamptz, forget_keys boolean DEFAULT false
) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part record;
BEGIN
    FOR part IN SELECT name FROM flowsd.event_log_partition
                WHERE detached_at IS NULL AND upper_bound <= before
                ORDER BY upper_bound
    LOOP
        EXECUTE format('ALTER TABLE flows.meter_event_log DETACH PARTITION flowsd.%I',
                       part.name);
        IF forget_keys THEN
            EXECUTE format('DELETE FROM flowsd.event_key k USING flowsd.%I p '
                           'WHERE k.idempotency_key = p.idempotency_key', part.name);
        END IF;
        UPDATE flowsd.event_log_partition SET detached_at = now() WHERE name = part.name;
        RETURN NEXT 'flowsd.' || part.name;
    END LOOP;
END
$$;

REVOKE EXECUTE ON FUNCTION flowsd.detach_event_log_partitions(timestamptz, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION flowsd.ensure_event_log_partitions(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flowsd.ensure_event_log_partitions(timestamptz) TO flowsd_writer;
GRANT SELECT ON flowsd.event_key, flowsd.event_log_partition TO flowsd_reader, flowsd_writer;
GRANT INSERT ON flowsd.event_key TO flowsd_writer;
