-- Migration 117: the history that pre-dates the event log, kept for replays.
--
-- An upgraded production database has years of rows in the history tables, written by
-- production's triggers, and a log that holds only the meters' own event-log entries. A whole
-- `flowsd replay` rebuilds each table from the log, so without this it would replace those
-- rows with nothing. Here, before any projector has run (no checkpoint for the table yet),
-- every row a history table already holds is copied into flowsd.baseline_<table>; whole
-- replays and verifies, and snapshots built from position 0, start from that copy as from a
-- snapshot at position 0 (events in the log then override rows with the same key). A fresh
-- database has empty tables and gets no baseline.

DO $$
DECLARE
    history text;
    present boolean;
BEGIN
    FOREACH history IN ARRAY ARRAY['meter_prepay_balance', 'register_import', 'register_export',
                                    'register_interval_hh', 'meter_voltage', 'meter_3p_voltage',
                                    'meter_csq', 'meter_health_history']
    LOOP
        CONTINUE WHEN to_regclass(format('flowsd.baseline_%s', history)) IS NOT NULL;
        CONTINUE WHEN EXISTS (SELECT FROM flowsd.projector_checkpoint WHERE name = history);
        EXECUTE format('SELECT EXISTS (SELECT FROM flows.%I)', history) INTO STRICT present;
        CONTINUE WHEN NOT present;
        EXECUTE format('CREATE TABLE flowsd.%I AS SELECT * FROM flows.%I',
                       'baseline_' || history, history);
        EXECUTE format('COMMENT ON TABLE flowsd.%I IS %L', 'baseline_' || history,
                       format('The rows of flows.%s before flowsd projected into it (migration '
                              '117): where whole replays of it start.', history));
    END LOOP;
END
$$;
