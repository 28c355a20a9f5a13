-- Migration 70: settlement days and months are dates.
--
-- flows.circuit_interval_daily.day becomes the Europe/London settlement date (type date) and
-- flows.circuit_interval_monthly.month the first day of its settlement month (type date).
-- Migrations 2 and 3 labelled them with the timestamptz of London midnight. A date compared
-- with a timestamptz is cast to midnight of the *session's* time zone, so the documented
-- filter `ci.day = CURRENT_DATE - 1` matched only while the session's offset equalled
-- London's: a UTC session (hosted databases, PostgREST) found nothing from the last Sunday of
-- March to the last Sunday of October. Comparing a date with a date involves no time zone.
-- The days themselves are unchanged: local midnight to local midnight, so the spring clock
-- change has 46 half hours and the autumn one 50; months are the sum of their days.
--
-- What a consumer that relied on the old timestamptz sees:
--  * values are dates: JSON (PostgREST) gives "2026-07-15" instead of
--    "2026-07-14T23:00:00+00:00"; asyncpg/psycopg give a date, not a datetime; a Grafana time
--    column needs `day::timestamp AT TIME ZONE 'Europe/London'`, which is exactly the old value;
--  * filters with a date (`day = CURRENT_DATE - 1`, `month = '2026-07-01'`) now work in every
--    session time zone and season;
--  * comparisons with a timestamptz (`day >= now() - interval '7 days'`, `day = '...+00'`) now
--    cast the date at midnight of the session's time zone: in a UTC session a BST day starts an
--    hour later than before; compare with dates, or convert as above;
--  * arithmetic: `day + 1` is the next date; `day + interval '1 day'` is a timestamp without
--    time zone;
--  * a copy into a timestamptz column (myenergy.monthly_usage.month, filled from
--    circuit_interval_monthly) stores midnight of the writing session's time zone instead of
--    London midnight; such a writer should convert as above, or store dates.
--
-- Views that depend on the two views are dropped and recreated from their stored definitions
-- (deepest last), with their options, comments, column comments, indexes (materialized
-- views), triggers, owner and grants; the two views keep their owner and grants too. A
-- dependent whose definition no longer holds with a date fails this migration naming itself,
-- and any other kind of dependent object (a function using the row type, say) makes the DROP
-- fail naming it: nothing is dropped silently.
--
-- TimescaleDB: migration 3 keeps the energy in continuous aggregates
-- (circuit_interval_daily_agg, circuit_interval_monthly_agg, bucketed by London days and
-- months as timestamptz) under plain views of these names. An aggregate cannot be altered like
-- a view, and need not be: only the views over them change, converting the bucket with
-- `AT TIME ZONE 'Europe/London'`, which gives the same columns and values as the plain path.
-- That branch is chosen by the aggregates' existence and built by dynamic SQL; this repository
-- has no TimescaleDB, so it is tested only against plain views standing in for the aggregates
-- (tests/db/test_settlement_dates.py), not against TimescaleDB itself.
-- Without the views as plain views (a materialized view or table left by an older
-- deployment, see migration 2), nothing is changed and a NOTICE says so.

DO $migration$
DECLARE
    daily_sql text;
    monthly_sql text;
    target_oids oid[];
    aggregates bigint := 0;
    saved record;
    detail record;
BEGIN
    SELECT array_agg(c.oid) INTO target_oids
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'flows' AND c.relname IN ('circuit_interval_daily', 'circuit_interval_monthly')
      AND c.relkind = 'v';
    IF coalesce(array_length(target_oids, 1), 0) <> 2 THEN
        RAISE NOTICE 'flows.circuit_interval_daily/monthly are not both plain views; left unchanged';
        RETURN;
    END IF;
    IF to_regclass('_timescaledb_catalog.continuous_agg') IS NOT NULL THEN
        EXECUTE 'SELECT count(*) FROM _timescaledb_catalog.continuous_agg
                 WHERE user_view_schema = ''flows''
                   AND user_view_name IN (''circuit_interval_daily'', ''circuit_interval_monthly'')'
            INTO aggregates;
        IF aggregates > 0 THEN
            RAISE NOTICE 'flows.circuit_interval_daily/monthly are continuous aggregates; left unchanged';
            RETURN;
        END IF;
    END IF;

    IF to_regclass('flows.circuit_interval_daily_agg') IS NOT NULL
       AND to_regclass('flows.circuit_interval_monthly_agg') IS NOT NULL THEN
        daily_sql := $v$
SELECT circuit_id,
       (day AT TIME ZONE 'Europe/London')::date AS day,
       kwh,
       kwh AS total_import_kwh,
       total_export_kwh
FROM flows.circuit_interval_daily_agg $v$;
        monthly_sql := $v$
SELECT circuit_id,
       (month AT TIME ZONE 'Europe/London')::date AS month,
       kwh,
       kwh AS total_import_kwh,
       total_export_kwh,
       extract(day FROM (month AT TIME ZONE 'Europe/London')::date
                        + interval '1 month - 1 day')::integer AS days_in_month
FROM flows.circuit_interval_monthly_agg $v$;
    ELSE
        daily_sql := $v$
SELECT hh.circuit_id,
       (hh."timestamp" AT TIME ZONE 'Europe/London')::date AS day,
       sum(hh.kwh) AS kwh,
       sum(hh.total_import_kwh) AS total_import_kwh,
       sum(hh.total_export_kwh) AS total_export_kwh
FROM flows.circuit_interval_hh hh
GROUP BY 1, 2 $v$;
        monthly_sql := $v$
SELECT d.circuit_id,
       date_trunc('month', d.day::timestamp)::date AS month,
       sum(d.kwh) AS kwh,
       sum(d.total_import_kwh) AS total_import_kwh,
       sum(d.total_export_kwh) AS total_export_kwh,
       extract(day FROM date_trunc('month', d.day::timestamp)::date
                        + interval '1 month - 1 day')::integer AS days_in_month
FROM flows.circuit_interval_daily d
GROUP BY 1, 2 $v$;
    END IF;

    -- The two views and every view or materialized view built on them, with what a DROP loses.
    CREATE TEMPORARY TABLE flowsd_saved_relation ON COMMIT DROP AS
    WITH RECURSIVE dependent(oid, depth) AS (
        SELECT t.oid, 0 FROM unnest(target_oids) AS t(oid)
        UNION
        SELECT r.ev_class, dependent.depth + 1
        FROM dependent
        JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = dependent.oid
                        AND d.classid = 'pg_rewrite'::regclass
        JOIN pg_rewrite r ON r.oid = d.objid
        WHERE r.ev_class <> dependent.oid AND r.ev_class <> ALL (target_oids)
    )
    SELECT c.oid, dep.depth, c.oid = ANY (target_oids) AS target, c.relkind,
           format('%I.%I', n.nspname, c.relname) AS name, pg_get_viewdef(c.oid) AS definition,
           c.relacl, pg_get_userbyid(c.relowner) AS owner, c.reloptions,
           obj_description(c.oid, 'pg_class') AS comment,
           ARRAY(SELECT format('COMMENT ON COLUMN %I.%I.%I IS %L', n.nspname, c.relname,
                               a.attname, ds.description)
                 FROM pg_description ds
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ds.objsubid
                 WHERE ds.objoid = c.oid AND ds.classoid = 'pg_class'::regclass
                   AND ds.objsubid > 0) AS column_comments,
           ARRAY(SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
                 WHERE i.indrelid = c.oid) AS indexes,
           ARRAY(SELECT pg_get_triggerdef(tg.oid) FROM pg_trigger tg
                 WHERE tg.tgrelid = c.oid AND NOT tg.tgisinternal) AS triggers
    FROM (SELECT oid, max(depth) AS depth FROM dependent GROUP BY oid) AS dep
    JOIN pg_class c ON c.oid = dep.oid
    JOIN pg_namespace n ON n.oid = c.relnamespace;

    FOR saved IN SELECT * FROM flowsd_saved_relation WHERE NOT target ORDER BY depth DESC LOOP
        RAISE NOTICE 'recreating %, which depends on the circuit views', saved.name;
        EXECUTE format('DROP %s %s',
                       CASE saved.relkind WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'VIEW' END,
                       saved.name);
    END LOOP;
    DROP VIEW flows.circuit_interval_monthly;
    DROP VIEW flows.circuit_interval_daily;

    EXECUTE 'CREATE VIEW flows.circuit_interval_daily AS ' || daily_sql;
    EXECUTE 'CREATE VIEW flows.circuit_interval_monthly AS ' || monthly_sql;
    UPDATE flowsd_saved_relation SET comment = CASE name
        WHEN 'flows.circuit_interval_daily' THEN
            'Circuit energy (kWh) per Europe/London settlement day; day is the local date '
            '(46 half hours on the spring clock change, 50 on the autumn one).'
        ELSE 'Circuit energy (kWh) per Europe/London settlement month; month is its first day.'
        END
    WHERE target;

    FOR saved IN SELECT * FROM flowsd_saved_relation ORDER BY depth LOOP
        IF NOT saved.target THEN
            EXECUTE format('CREATE %s %s%s AS %s',
                           CASE saved.relkind WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'VIEW' END,
                           saved.name,
                           CASE WHEN saved.reloptions IS NULL THEN ''
                                ELSE format(' WITH (%s)', array_to_string(saved.reloptions, ', '))
                           END,
                           rtrim(saved.definition, ';'));
        END IF;
        IF saved.comment IS NOT NULL THEN
            EXECUTE format('COMMENT ON %s %s IS %L',
                           CASE saved.relkind WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'VIEW' END,
                           saved.name, saved.comment);
        END IF;
        FOR detail IN SELECT unnest(saved.column_comments || saved.indexes || saved.triggers)
                      AS statement
        LOOP
            EXECUTE detail.statement;
        END LOOP;
        FOR detail IN SELECT grantee, privilege_type, is_grantable
                      FROM aclexplode(saved.relacl)
                      WHERE grantee <> (SELECT oid FROM pg_roles WHERE rolname = saved.owner)
        LOOP
            EXECUTE format('GRANT %s ON %s TO %s%s', detail.privilege_type, saved.name,
                           CASE detail.grantee WHEN 0 THEN 'PUBLIC'
                                ELSE quote_ident(pg_get_userbyid(detail.grantee)) END,
                           CASE WHEN detail.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
        IF saved.owner <> current_user THEN
            EXECUTE format('ALTER %s %s OWNER TO %I',
                           CASE saved.relkind WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'VIEW' END,
                           saved.name, saved.owner);
        END IF;
    END LOOP;
    COMMENT ON COLUMN flows.circuit_interval_daily.day IS
        'Europe/London settlement date (local midnight to local midnight).';
    COMMENT ON COLUMN flows.circuit_interval_monthly.month IS
        'First day of the Europe/London settlement month.';
END
$migration$;
