-- Rows for schema_2026_01.sql, shaped like production's: two ESCOs, 12 meters (twin-element
-- C1.w, single-element EMA1.w, a three-phase P1.ax, a passive twin), a replaced register whose
-- circuit carries on with the new one, meter events with same-second pairs, hourly and daily
-- history over the past days as the shadow triggers wrote it, and a few shadow updates made
-- the syncers' way (one statement each: the triggers stamp history with statement time).
-- Run statement by statement as @OWNER@, after the schema and before any later migration.

INSERT INTO flows.escos (id, name, code, app_url) VALUES
    ('e0000000-0000-4000-8000-000000000001', 'Water Lilies Community Energy', 'wlce',
     'https://wlce.app.example'),
    ('e0000000-0000-4000-8000-000000000002', 'Hazelmead Community Energy', 'hmce', NULL);

INSERT INTO flows.sites_new (id, name, code, esco) VALUES
    ('50000000-0000-4000-8000-000000000001', 'Water Lilies phase 1', 'WLCE-1',
     'e0000000-0000-4000-8000-000000000001'),
    ('50000000-0000-4000-8000-000000000002', 'Hazelmead', 'HMCE-1',
     'e0000000-0000-4000-8000-000000000002');

INSERT INTO flows.feeder_registry (id, name, esco) VALUES
    ('f0000000-0000-4000-8000-000000000001', 'WLCE.F1', 'e0000000-0000-4000-8000-000000000001'),
    ('f0000000-0000-4000-8000-000000000002', 'HMCE.F1', 'e0000000-0000-4000-8000-000000000002');

-- Meters 1-8 WLCE twin-element, 9-10 HMCE single-element, 11 three-phase, 12 a passive twin.
INSERT INTO flows.meter_registry (
    id, serial, emnify_id, ip_address, name, installation_status, commissioned_iso_week_date,
    hardware, prepay_enabled, iccid, mode, firmware_version, esco,
    daylight_savings_correction_enabled)
SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid,
       'EML21375808' || lpad(n::text, 2, '0'),
       40000 + n,
       ('100.79.0.' || n)::inet,
       CASE WHEN n <= 8 THEN 'WLCE.Plot-' || lpad(n::text, 2, '0') || '.C'
            ELSE 'HMCE.Plot-' || lpad(n::text, 2, '0') END,
       'enabled', '2021-W26',
       CASE WHEN n <= 8 OR n = 12 THEN 'C1.w' WHEN n <= 10 THEN 'EMA1.w' ELSE 'P1.ax' END,
       false,
       '894450' || lpad(n::text, 13, '0'),
       CASE WHEN n = 12 THEN 'passive' ELSE 'active' END::flows.meter_mode_enum,
       '3.0.44',
       CASE WHEN n <= 8 THEN 'e0000000-0000-4000-8000-000000000001'
            ELSE 'e0000000-0000-4000-8000-000000000002' END::uuid,
       n % 2 = 0
FROM generate_series(1, 12) AS n;

INSERT INTO flows.service_head_registry (id, name, feeder, phase, fuse_rating, type)
SELECT ('5e000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid,
       CASE WHEN n <= 8 THEN 'WLCE.Plot-' || lpad(n::text, 2, '0') || '.C'
            ELSE 'HMCE.Plot-' || lpad(n::text, 2, '0') END,
       CASE WHEN n <= 8 THEN 'f0000000-0000-4000-8000-000000000001'
            WHEN n <= 11 THEN 'f0000000-0000-4000-8000-000000000002' END::uuid,
       CASE WHEN n = 11 THEN 3 ELSE 1 END,
       100,
       CASE WHEN n % 3 = 0 THEN 'customer_owned' ELSE 'network_owned' END
FROM generate_series(1, 12) AS n;

INSERT INTO flows.service_head_meter (service_head, meter)
SELECT ('5e000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid,
       ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid
FROM generate_series(1, 12) AS n;

INSERT INTO flows.properties (id, plot)
SELECT ('90000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid,
       CASE WHEN n <= 8 THEN 'WL-' ELSE 'HM-' END || lpad(n::text, 2, '0')
FROM generate_series(1, 12) AS n;

INSERT INTO flows.properties_service_head (property, service_head)
SELECT ('90000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid,
       ('5e000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid
FROM generate_series(1, 12) AS n;

-- Registers: twin-element meters A (power) and B (heat), the others one SINGLE register.
-- Meter 1's first A register was wired to the heat pump by mistake: ended and replaced.
INSERT INTO flows.meter_registers (register_id, meter_id, nature, status, element, start_time,
                                   end_time, notes)
SELECT ('a0000000-0000-4000-8000-' || lpad((n * 10 + k)::text, 12, '0'))::uuid,
       ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid,
       CASE WHEN k = 2 THEN 'heat' ELSE 'power' END::flows.register_nature_enum,
       'enabled', CASE k WHEN 1 THEN 'A' WHEN 2 THEN 'B' ELSE 'SINGLE' END::flows.meter_register_element,
       CASE WHEN n = 1 AND k = 1 THEN timestamptz '2025-06-01 00:00:00+00' END, NULL, NULL
FROM generate_series(1, 12) AS n
CROSS JOIN generate_series(1, 3) AS k
WHERE (k IN (1, 2) AND (n <= 8 OR n = 12)) OR (k = 3 AND n IN (9, 10, 11));
INSERT INTO flows.meter_registers (register_id, meter_id, nature, status, element, start_time,
                                   end_time, notes)
VALUES ('a0000000-0000-4000-8000-000000000019', '00000000-0000-4000-8000-000000000001', 'heat',
        'replaced', 'A', '2024-01-01 00:00:00+00', '2025-06-01 00:00:00+00',
        'A and B swapped at commissioning: ended, relabelled, replaced');

-- A circuit per current register; meter 1's heat circuit was fed by the old register first.
INSERT INTO flows.circuits (id, type, name)
SELECT ('c0000000-0000-4000-8000-' || substr(r.register_id::text, 25))::uuid,
       r.nature::text::flows.circuit_type_enum,
       m.name || '-' || r.nature
FROM flows.meter_registers r JOIN flows.meter_registry m ON m.id = r.meter_id
WHERE r.status = 'enabled';
INSERT INTO flows.circuit_register (circuit, register, start_time, end_time)
SELECT ('c0000000-0000-4000-8000-' || substr(register_id::text, 25))::uuid, register_id,
       coalesce(start_time, timestamptz '2024-01-01 00:00:00+00'), NULL
FROM flows.meter_registers WHERE status = 'enabled';
INSERT INTO flows.circuit_register (circuit, register, start_time, end_time, notes)
VALUES ('c0000000-0000-4000-8000-000000000012', 'a0000000-0000-4000-8000-000000000019',
        '2024-01-01 00:00:00+00', '2025-06-01 00:00:00+00', 'before the rewiring');

INSERT INTO flows.meter_metrics (name, notes, enabled, run_frequency) VALUES
    ('SyncerCsq', NULL, true, 'hourly'), ('SyncerVoltage', NULL, true, 'hourly'),
    ('SyncerEventLog', NULL, true, 'hourly'), ('SyncerPrepayBalance', NULL, true, 'hourly'),
    ('SyncerReads', NULL, true, 'daily'), ('SyncerTariffsFuture', 'checked daily', true, 'daily');

INSERT INTO flows.ev_chargers (esco, serial, pin, "position")
VALUES ('e0000000-0000-4000-8000-000000000001', 'EVC00017', '4821', 'car park, bay 3');

INSERT INTO flows.meter_tophat_registry (meter, emnify_id, ip_address, iccid)
VALUES ('00000000-0000-4000-8000-000000000003', 50003, '100.79.1.3', '8944510000000000093');

INSERT INTO flows.meter_event_log_type (id, name) VALUES
    (1, 'BM_OVER_CURRENT'), (33, 'EVENT_POWER_UP'), (34, 'EVENT_POWER_DN'),
    (38, 'DAILY_LOG_SNAPSHOT'), (39, 'BILLING_LOG_SNAPSHOT');

-- Meter events over the past 30 days (meter clock, whole seconds), every meter but the
-- three-phase one, 240 each; every 20th power-down shares its second with a power-up.
INSERT INTO flows.meter_event_log (meter_id, "timestamp", event_type, event_set)
SELECT m.id,
       date_trunc('second', now() - interval '30 days') + k * interval '2 hours 59 minutes'
           + m.n * interval '7 seconds',
       (ARRAY[33, 34, 38, 48])[1 + k % 4],
       k / 4
FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM flows.meter_registry
      WHERE hardware <> 'P1.ax') AS m
CROSS JOIN generate_series(0, 239) AS k;
INSERT INTO flows.meter_event_log (meter_id, "timestamp", event_type, event_set)
SELECT e.meter_id, e."timestamp", 33, 1000 + e.event_set
FROM flows.meter_event_log e WHERE e.event_type = 34 AND e.event_set % 20 = 0;

-- Hourly history of the last 10 days, as the shadow triggers wrote it (the hour's sync time).
-- Meter 9 has been silent for two days, meter 10 for five hours (the offline views); failed
-- syncs left a NULL csq and an unhealthy row.
INSERT INTO flows.meter_csq (meter_id, "timestamp", csq)
SELECT m.id, date_trunc('hour', now()) - h * interval '1 hour' + interval '5 minutes',
       CASE WHEN h % 37 = 0 THEN NULL ELSE 8 + (h + m.n) % 20 END
FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM flows.meter_registry
      WHERE mode = 'active') AS m
CROSS JOIN generate_series(1, 240) AS h
WHERE NOT (m.n = 9 AND h < 48) AND NOT (m.n = 10 AND h < 5);
INSERT INTO flows.meter_voltage (meter_id, "timestamp", voltage)
SELECT m.id, date_trunc('hour', now()) - h * interval '1 hour' + interval '6 minutes',
       (238 + (h * 7 + m.n) % 9)::real + 0.5
FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM flows.meter_registry
      WHERE mode = 'active' AND hardware <> 'P1.ax') AS m
CROSS JOIN generate_series(1, 240) AS h;
INSERT INTO flows.meter_3p_voltage (meter_id, "timestamp", voltage_l1, voltage_l2, voltage_l3)
SELECT id, date_trunc('hour', now()) - h * interval '1 hour' + interval '6 minutes',
       239.5, 240.25 + h % 3, 241.0
FROM flows.meter_registry CROSS JOIN generate_series(1, 240) AS h
WHERE hardware = 'P1.ax';
INSERT INTO flows.meter_prepay_balance (meter_id, "timestamp", balance)
SELECT m.id, date_trunc('hour', now()) - h * interval '1 hour' + interval '7 minutes',
       round(40 - m.n * 2.5 + h * 0.0125, 5)
FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM flows.meter_registry
      WHERE mode = 'active' AND hardware <> 'P1.ax') AS m
CROSS JOIN generate_series(1, 240) AS h;
INSERT INTO flows.meter_health_history (meter_id, "timestamp", health)
SELECT m.id, date_trunc('hour', now()) - h * interval '1 hour' + interval '5 minutes',
       CASE WHEN h % 37 = 0 THEN 'unhealthy' ELSE 'healthy' END::flows.health_check_status
FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM flows.meter_registry
      WHERE mode = 'active') AS m
CROSS JOIN generate_series(1, 240) AS h;

-- Daily cumulative reads (kWh, float4) of the A/B registers over the last 30 days, and the
-- half-hourly import energy of every current register over the last 10 days.
INSERT INTO flows.register_import (register_id, "timestamp", read)
SELECT r.register_id, date_trunc('day', now()) - d * interval '1 day' + interval '10 minutes',
       (1200 + (30 - d) * 9.25)::real
FROM flows.meter_registers r CROSS JOIN generate_series(1, 30) AS d
WHERE r.status = 'enabled' AND r.element IN ('A', 'B');
INSERT INTO flows.register_export (register_id, "timestamp", read)
SELECT r.register_id, date_trunc('day', now()) - d * interval '1 day' + interval '10 minutes',
       (15 + (30 - d) * 0.5)::real
FROM flows.meter_registers r CROSS JOIN generate_series(1, 30) AS d
WHERE r.status = 'enabled' AND r.element IN ('A', 'B');
INSERT INTO flows.register_interval_hh (register_id, "timestamp", kwh)
SELECT r.register_id, date_trunc('day', now()) - interval '10 days' + s * interval '30 minutes',
       round(0.05 + (s % 48) * 0.011, 3)
FROM flows.meter_registers r CROSS JOIN generate_series(0, 479) AS s
WHERE r.status = 'enabled';

-- The syncers' writes of this hour: one PATCH per metric, each its own statement.
UPDATE flows.meter_shadows SET balance = 12.34567, health = 'healthy', health_details = ''
WHERE id = '00000000-0000-4000-8000-000000000001';
UPDATE flows.meter_shadows SET csq = 21, health = 'healthy', health_details = ''
WHERE id IN (SELECT id FROM flows.meter_registry WHERE serial <= 'EML2137580808');
UPDATE flows.meter_shadows SET voltage = 241.2, health = 'healthy', health_details = ''
WHERE id = '00000000-0000-4000-8000-000000000002';
UPDATE flows.meter_shadows SET "3p_voltage_l1" = 239.9, "3p_voltage_l2" = 240.1,
    "3p_voltage_l3" = 240.7, health = 'healthy', health_details = ''
WHERE id = '00000000-0000-4000-8000-000000000011';
UPDATE flows.meter_shadows SET import_a = 1487.25, export_a = 31.5, import_b = 877.125,
    export_b = 0, health = 'healthy', health_details = ''
WHERE id = '00000000-0000-4000-8000-000000000003';
UPDATE flows.meter_shadows SET health = 'unhealthy',
    health_details = 'Deadline Exceeded: no answer in 75 s', csq = NULL
WHERE id = '00000000-0000-4000-8000-000000000009';
UPDATE flows.meter_shadows SET clock_time_diff_seconds = 95, backlight = 'normal_sp',
    load_switch = 'always_on_sp'
WHERE id = '00000000-0000-4000-8000-000000000004';
UPDATE flows.meter_shadows SET
    tariffs_active = '{"standing_charge": "0.51082", "unit_rate_element_a": "0.24711",
        "unit_rate_element_b": "0.24711", "prepayment_emergency_credit": "15.00000",
        "prepayment_ecredit_availability": "10.00000",
        "prepayment_debt_recovery_rate": "0.00000",
        "threshold_mask": {"rate1": false, "rate2": false}, "threshold_values": {"th1": 0},
        "block_rate": 0, "element_b_tou_rate": 0, "pricings": null}',
    tariffs_future = '{"standing_charge": "0.52000", "unit_rate_element_a": "0.25000",
        "unit_rate_element_b": "0.25000", "prepayment_emergency_credit": "15.00000",
        "prepayment_ecredit_availability": "10.00000",
        "prepayment_debt_recovery_rate": "0.00000",
        "activation_datetime": "2026-04-01T00:00:00", "pricings": null}'
WHERE id IN (SELECT id FROM flows.meter_registry WHERE hardware = 'C1.w');

REFRESH MATERIALIZED VIEW flows.register_import_missing;
REFRESH MATERIALIZED VIEW flows.register_export_missing;
REFRESH MATERIALIZED VIEW flows.register_interval_hh_missing;
