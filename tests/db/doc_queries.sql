-- A copy of the project's specification file flows/doc-queries.sql (tests/db/test_views.py
-- runs every query on a fresh and on an upgraded production database, on each server).
-- The example queries of the Flows documentation (domain overview, meter domain and
-- infrastructure pages), one per line, with the documentation's placeholders {{...}} and its
-- example names (ESCO code WLCE, plot WL-01, serial EML2137580826). They are the contract with
-- the consumers of the read tables (PostgREST apps, Grafana, analysts).

-- q1 active meters for an ESCO
SELECT id, serial, name, ip_address FROM flows.meter_registry WHERE mode = 'active' AND esco = '{{esco_id}}' ORDER BY name;
-- q2 balance history, last 7 days
SELECT timestamp, balance, emergency_credit FROM flows.meter_prepay_balance WHERE meter_id = '{{meter_id}}' AND timestamp > NOW() - INTERVAL '7 days' ORDER BY timestamp DESC;
-- q3 low balance
SELECT * FROM flows.meters_low_balance WHERE balance < 5.00;
-- q4 offline recently
SELECT serial, last_online, EXTRACT(EPOCH FROM (NOW() - last_online))/60 as minutes_offline FROM flows.meters_offline_recently WHERE last_online < NOW() - INTERVAL '1 hour';
-- q5 meter status
SELECT mr.serial, mr.name, ms.balance, ms.health, ms.csq, ms.updated_at FROM flows.meter_registry mr JOIN flows.meter_shadows ms ON mr.id = ms.id WHERE mr.serial = 'EML2137580826';
-- q6 daily balance summary
SELECT DATE(timestamp) as day, MIN(balance) as min_balance, MAX(balance) as max_balance, AVG(balance) as avg_balance FROM flows.meter_prepay_balance WHERE meter_id = '{{meter_id}}' AND timestamp > NOW() - INTERVAL '30 days' GROUP BY DATE(timestamp) ORDER BY day DESC;
-- q7 sites for an ESCO
SELECT s.name, s.location, COUNT(p.id) as property_count FROM flows.escos e JOIN flows.sites_new s ON s.esco = e.id LEFT JOIN flows.properties p ON p.site = s.id WHERE e.code = 'WLCE' GROUP BY s.name, s.location;
-- q8 property with meter details
SELECT p.plot, p.address, mr.serial as meter_serial, ms.balance FROM flows.properties p JOIN flows.properties_service_head psh ON psh.property = p.id JOIN flows.service_head_meter shm ON shm.service_head = psh.service_head JOIN flows.meter_registry mr ON mr.id = shm.meter JOIN flows.meter_shadows ms ON ms.id = mr.id WHERE p.plot = 'WL-01';
-- q9 circuit consumption by type for a site
SELECT c.type, c.name, SUM(ci.total_import_kwh) as daily_kwh FROM flows.circuits c LEFT JOIN flows.circuit_interval_daily ci ON ci.circuit_id = c.id WHERE c.site = '{{site_id}}' AND ci.day = CURRENT_DATE - 1 GROUP BY c.type, c.name ORDER BY c.type, daily_kwh DESC;
-- q10 full property hierarchy
WITH property_hierarchy AS ( SELECT e.name as esco_name, s.name as site_name, p.plot, p.address, sh.name as service_head, mr.serial as meter_serial, mr.name as meter_name FROM flows.escos e JOIN flows.sites_new s ON s.esco = e.id JOIN flows.properties p ON p.site = s.id LEFT JOIN flows.properties_service_head psh ON psh.property = p.id LEFT JOIN flows.service_head_registry sh ON sh.id = psh.service_head LEFT JOIN flows.service_head_meter shm ON shm.service_head = sh.id LEFT JOIN flows.meter_registry mr ON mr.id = shm.meter ) SELECT * FROM property_hierarchy WHERE esco_name = 'Water Lilies Community Energy' ORDER BY site_name, plot;
-- q11 site infrastructure summary
SELECT s.name as site, COUNT(DISTINCT p.id) as properties, COUNT(DISTINCT sh.id) as service_heads, COUNT(DISTINCT m.id) as meters, COUNT(DISTINCT CASE WHEN c.type = 'power' THEN c.id END) as power_circuits, COUNT(DISTINCT CASE WHEN c.type = 'heat' THEN c.id END) as heat_circuits, COUNT(DISTINCT CASE WHEN c.type = 'solar' THEN c.id END) as solar_circuits FROM flows.sites_new s LEFT JOIN flows.properties p ON p.site = s.id LEFT JOIN flows.properties_service_head psh ON psh.property = p.id LEFT JOIN flows.service_head_registry sh ON sh.id = psh.service_head LEFT JOIN flows.service_head_meter shm ON shm.service_head = sh.id LEFT JOIN flows.meter_registry m ON m.id = shm.meter LEFT JOIN flows.circuits c ON c.site = s.id GROUP BY s.name;
-- q12 orphaned meters
SELECT mr.serial, mr.name, e.name as esco FROM flows.meter_registry mr JOIN flows.escos e ON mr.esco = e.id LEFT JOIN flows.service_head_meter shm ON shm.meter = mr.id LEFT JOIN flows.properties_service_head psh ON psh.service_head = shm.service_head WHERE psh.property IS NULL AND mr.mode = 'active';
-- q13 peak load by circuit type
WITH circuit_peaks AS ( SELECT c.type, c.name, MAX(ci.total_import_kwh * 2) as peak_kw FROM flows.circuits c JOIN flows.circuit_interval_hh ci ON ci.circuit_id = c.id WHERE ci.timestamp >= NOW() - INTERVAL '7 days' GROUP BY c.type, c.name ) SELECT type, COUNT(*) as circuit_count, AVG(peak_kw) as avg_peak_kw, MAX(peak_kw) as max_peak_kw, SUM(peak_kw) as total_peak_kw FROM circuit_peaks GROUP BY type;
