-- Migration 3: TimescaleDB objects, only where the extension is installed (as in production).
-- Without it (the tested path) this migration only records itself: the history tables stay
-- plain tables and the circuit views stay the plain views of migration 2.
--
-- With it: the six history tables become hypertables on "timestamp" (their unique keys all
-- include it), and the circuit views become views over hierarchical continuous aggregates
-- (real-time, so always current) whose days and months are Europe/London settlement days.
-- Production's UTC-bucketed aggregates are dropped and rebuilt from register_interval_hh.
-- NOTE: this branch has not been run in this repository's tests (no TimescaleDB here).

DO $migration$
DECLARE
    history_table text;
    circuit_view text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') THEN
        RAISE NOTICE 'TimescaleDB not installed: plain tables and views are kept';
        RETURN;
    END IF;

    FOREACH history_table IN ARRAY ARRAY['register_interval_hh', 'meter_csq',
            'meter_health_history', 'meter_voltage', 'meter_3p_voltage', 'meter_prepay_balance']
    LOOP
        PERFORM create_hypertable(format('flows.%I', history_table)::regclass, 'timestamp',
                                  if_not_exists => true, migrate_data => true);
    END LOOP;

    FOREACH circuit_view IN ARRAY ARRAY['circuit_interval_monthly', 'circuit_interval_daily',
                                        'circuit_interval_hh']
    LOOP
        IF EXISTS (SELECT FROM _timescaledb_catalog.continuous_agg
                   WHERE user_view_schema = 'flows' AND user_view_name = circuit_view) THEN
            EXECUTE format('DROP MATERIALIZED VIEW flows.%I', circuit_view);
        ELSE
            EXECUTE format('DROP VIEW IF EXISTS flows.%I', circuit_view);
        END IF;
    END LOOP;

    EXECUTE $sql$
        CREATE MATERIALIZED VIEW flows.circuit_interval_hh_agg
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT cr.circuit AS circuit_id,
               time_bucket('30 minutes', rih."timestamp") AS "timestamp",
               sum(rih.kwh) AS kwh,
               sum(rih.export_kwh) AS total_export_kwh
        FROM flows.register_interval_hh rih
        JOIN flows.circuit_register cr ON cr.register = rih.register_id
        WHERE rih."timestamp" >= cr.start_time
          AND (cr.end_time IS NULL OR rih."timestamp" < cr.end_time)
        GROUP BY cr.circuit, time_bucket('30 minutes', rih."timestamp")
        WITH NO DATA $sql$;
    EXECUTE $sql$
        CREATE MATERIALIZED VIEW flows.circuit_interval_daily_agg
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT circuit_id,
               time_bucket('1 day', "timestamp", 'Europe/London') AS day,
               sum(kwh) AS kwh,
               sum(total_export_kwh) AS total_export_kwh
        FROM flows.circuit_interval_hh_agg
        GROUP BY circuit_id, time_bucket('1 day', "timestamp", 'Europe/London')
        WITH NO DATA $sql$;
    EXECUTE $sql$
        CREATE MATERIALIZED VIEW flows.circuit_interval_monthly_agg
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT circuit_id,
               time_bucket('1 month', day, 'Europe/London') AS month,
               sum(kwh) AS kwh,
               sum(total_export_kwh) AS total_export_kwh
        FROM flows.circuit_interval_daily_agg
        GROUP BY circuit_id, time_bucket('1 month', day, 'Europe/London')
        WITH NO DATA $sql$;

    CREATE VIEW flows.circuit_interval_hh AS
    SELECT circuit_id, "timestamp", kwh, kwh AS total_import_kwh, total_export_kwh
    FROM flows.circuit_interval_hh_agg;
    CREATE VIEW flows.circuit_interval_daily AS
    SELECT circuit_id, day, kwh, kwh AS total_import_kwh, total_export_kwh
    FROM flows.circuit_interval_daily_agg;
    CREATE VIEW flows.circuit_interval_monthly AS
    SELECT circuit_id, month, kwh, kwh AS total_import_kwh, total_export_kwh,
           extract(day FROM (month AT TIME ZONE 'Europe/London'
                             + interval '1 month - 1 day'))::integer AS days_in_month
    FROM flows.circuit_interval_monthly_agg;

    PERFORM add_continuous_aggregate_policy('flows.circuit_interval_hh_agg',
        start_offset => interval '7 days', end_offset => interval '30 minutes',
        schedule_interval => interval '30 minutes');
    PERFORM add_continuous_aggregate_policy('flows.circuit_interval_daily_agg',
        start_offset => interval '35 days', end_offset => interval '1 day',
        schedule_interval => interval '1 hour');
    PERFORM add_continuous_aggregate_policy('flows.circuit_interval_monthly_agg',
        start_offset => interval '400 days', end_offset => interval '1 month',
        schedule_interval => interval '1 day');
END
$migration$;

CALL flowsd.apply_grants();
