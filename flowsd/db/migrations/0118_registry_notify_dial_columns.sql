-- Migration 118: an UPDATE of flows.meter_registry announces itself on flowsd_meter_registry
-- (migration 30) only when it changes a column the daemon's meter list reads: id, serial,
-- ip_address, hardware, mode, created_at (flowsd.meters.registry, _SELECT_ACTIVE; created_at
-- decides which of two rows sharing an address or serial is dialled). Other updates (names,
-- installation status, updated_at, firmware) no longer make every daemon reload its list.
-- INSERT, DELETE and TRUNCATE still announce themselves unconditionally.
--
-- The UPDATE check is a row trigger's WHEN clause, evaluated without calling a function; the
-- function runs once per changed row, and PostgreSQL folds identical notifications of one
-- transaction into one. (A statement trigger with transition tables would keep a copy of every
-- updated row, changed or not.)

DROP TRIGGER IF EXISTS meter_registry_announce_change ON flows.meter_registry;
DROP TRIGGER IF EXISTS meter_registry_announce_membership ON flows.meter_registry;
DROP TRIGGER IF EXISTS meter_registry_announce_dial_change ON flows.meter_registry;

CREATE TRIGGER meter_registry_announce_membership
    AFTER INSERT OR DELETE OR TRUNCATE ON flows.meter_registry
    FOR EACH STATEMENT EXECUTE FUNCTION flowsd.announce_meter_registry_change();

CREATE TRIGGER meter_registry_announce_dial_change
    AFTER UPDATE ON flows.meter_registry
    FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id
          OR OLD.serial IS DISTINCT FROM NEW.serial
          OR OLD.ip_address IS DISTINCT FROM NEW.ip_address
          OR OLD.hardware IS DISTINCT FROM NEW.hardware
          OR OLD.mode IS DISTINCT FROM NEW.mode
          OR OLD.created_at IS DISTINCT FROM NEW.created_at)
    EXECUTE FUNCTION flowsd.announce_meter_registry_change();
