-- Migration 60: one meter, one active row; what the daemon knows about never-answered and
-- not-dialled meters.
--
--  1. flows.meter_registry.ip_address holds host addresses. `inet` keeps a netmask, and the
--     existing UNIQUE (ip_address) compares it: '127.195.0.5/24' beside '127.195.0.5' was
--     accepted, and flowsd dials host(ip_address), so one meter was polled under two ids and
--     its readings stored twice. A mask is normalised away (a BEFORE trigger; existing rows
--     here, except where that would collide with the UNIQUE constraint), and two ACTIVE rows
--     on one host address, or on one serial compared without case or surrounding blanks, are
--     refused with SQLSTATE 23505 naming the other row. Passive rows are not checked.
--  2. Duplicates already in the table are kept as they are: a migration must not decide which
--     of two rows is the meter (deactivating or deleting one changes business data). They are
--     reported here (WARNING, with the serials), logged by serial and counted by the daemon,
--     which dials the oldest row of each and shows the others in `flowsd status` as not
--     dialled. Changing a row's address, serial or mode into a duplicate is refused; setting
--     one passive (the fix) is not, nor is rewriting a value unchanged.
--  3. Where the table holds no such duplicates, unique partial indexes enforce the same rule
--     even between concurrent transactions (the trigger's check takes an advisory lock per
--     address and serial, which serialises READ COMMITTED writers; the indexes also cover
--     REPEATABLE READ ones). Where it does, only the trigger guards new rows; re-running the
--     index statements below once the duplicates are fixed adds them.
--  4. flowsd.meter_session_state gains answered_at (the last time the meter answered
--     anything; NULL: never) and not_dialled (why an active meter is not dialled at all), and
--     flowsd.daemon_heartbeat a never_answered count, for `flowsd status`.
--
-- Plain SQL and PL/pgSQL that PostgreSQL 15 to 18 all accept.

-- 1. Masks on existing rows ------------------------------------------------------------------

UPDATE flows.meter_registry AS r
SET ip_address = set_masklen(r.ip_address, CASE family(r.ip_address) WHEN 4 THEN 32 ELSE 128 END)
WHERE r.ip_address IS NOT NULL
  AND masklen(r.ip_address) <> CASE family(r.ip_address) WHEN 4 THEN 32 ELSE 128 END
  AND NOT EXISTS (
      SELECT FROM flows.meter_registry o
      WHERE o.id <> r.id AND o.ip_address IS NOT NULL AND host(o.ip_address) = host(r.ip_address)
  );

-- 2. Existing duplicates are reported ---------------------------------------------------------

DO $$
DECLARE
    dup record;
BEGIN
    FOR dup IN
        SELECT 'address ' || host(ip_address) AS what,
               string_agg(coalesce(serial, id::text), ', ' ORDER BY created_at, id) AS serials
        FROM flows.meter_registry
        WHERE mode = 'active' AND ip_address IS NOT NULL
        GROUP BY host(ip_address) HAVING count(*) > 1
        UNION ALL
        SELECT 'serial ' || upper(btrim(serial)),
               string_agg(coalesce(host(ip_address), id::text), ', ' ORDER BY created_at, id)
        FROM flows.meter_registry
        WHERE mode = 'active' AND serial IS NOT NULL
        GROUP BY upper(btrim(serial)) HAVING count(*) > 1
    LOOP
        RAISE WARNING 'flows.meter_registry: active rows share % (%): flowsd dials only the oldest',
            dup.what, dup.serials;
    END LOOP;
END
$$;

-- 3. New duplicates are refused ----------------------------------------------------------------

CREATE OR REPLACE FUNCTION flowsd.check_meter_registry_identity() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    full_mask integer;
    other record;
    activated boolean := TG_OP = 'INSERT' OR OLD.mode IS DISTINCT FROM NEW.mode;
BEGIN
    -- A written address loses its mask (an untouched one is left as it is: normalising it
    -- could collide with another row under the old UNIQUE (ip_address)).
    IF NEW.ip_address IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.ip_address IS DISTINCT FROM OLD.ip_address) THEN
        full_mask := CASE family(NEW.ip_address) WHEN 4 THEN 32 ELSE 128 END;
        IF masklen(NEW.ip_address) <> full_mask THEN
            NEW.ip_address := set_masklen(NEW.ip_address, full_mask);
        END IF;
    END IF;
    IF NEW.mode IS DISTINCT FROM 'active' THEN
        RETURN NEW;
    END IF;
    -- Only a change is checked: rewriting a row's unchanged serial (the registry projection
    -- does) never fails, not even on a duplicate that predates this migration.
    IF NEW.ip_address IS NOT NULL
       AND (activated OR host(NEW.ip_address) IS DISTINCT FROM host(OLD.ip_address)) THEN
        PERFORM pg_advisory_xact_lock(hashtext('flows.meter_registry address'),
                                      hashtext(host(NEW.ip_address)));
        SELECT id, serial INTO other FROM flows.meter_registry
        WHERE id <> NEW.id AND mode = 'active' AND ip_address IS NOT NULL
          AND host(ip_address) = host(NEW.ip_address)
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'meter_registry: address % is already used by active meter % (%)',
                host(NEW.ip_address), coalesce(other.serial, '(no serial)'), other.id
                USING ERRCODE = 'unique_violation';
        END IF;
    END IF;
    IF NEW.serial IS NOT NULL
       AND (activated OR upper(btrim(NEW.serial)) IS DISTINCT FROM upper(btrim(OLD.serial))) THEN
        PERFORM pg_advisory_xact_lock(hashtext('flows.meter_registry serial'),
                                      hashtext(upper(btrim(NEW.serial))));
        SELECT id, serial INTO other FROM flows.meter_registry
        WHERE id <> NEW.id AND mode = 'active' AND serial IS NOT NULL
          AND upper(btrim(serial)) = upper(btrim(NEW.serial))
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'meter_registry: serial % is already used by active meter % (%)',
                btrim(NEW.serial), other.serial, other.id
                USING ERRCODE = 'unique_violation';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS meter_registry_check_identity ON flows.meter_registry;
CREATE TRIGGER meter_registry_check_identity
    BEFORE INSERT OR UPDATE OF ip_address, serial, mode ON flows.meter_registry
    FOR EACH ROW EXECUTE FUNCTION flowsd.check_meter_registry_identity();

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM flows.meter_registry WHERE mode = 'active' AND ip_address IS NOT NULL
        GROUP BY host(ip_address) HAVING count(*) > 1
    ) THEN
        CREATE UNIQUE INDEX IF NOT EXISTS meter_registry_active_host_key
            ON flows.meter_registry ((host(ip_address)))
            WHERE mode = 'active' AND ip_address IS NOT NULL;
    END IF;
    IF NOT EXISTS (
        SELECT FROM flows.meter_registry WHERE mode = 'active' AND serial IS NOT NULL
        GROUP BY upper(btrim(serial)) HAVING count(*) > 1
    ) THEN
        CREATE UNIQUE INDEX IF NOT EXISTS meter_registry_active_serial_key
            ON flows.meter_registry ((upper(btrim(serial))))
            WHERE mode = 'active' AND serial IS NOT NULL;
    END IF;
END
$$;

-- 4. What the daemon keeps for `flowsd status` -----------------------------------------------

ALTER TABLE flowsd.meter_session_state
    ADD COLUMN IF NOT EXISTS answered_at timestamptz,
    ADD COLUMN IF NOT EXISTS not_dialled text;
ALTER TABLE flowsd.meter_session_state ALTER COLUMN online SET DEFAULT false;
-- Before this migration only a fully successful poll was recorded: the best known answer.
UPDATE flowsd.meter_session_state SET answered_at = last_success_at
WHERE answered_at IS NULL AND last_success_at IS NOT NULL;
COMMENT ON COLUMN flowsd.meter_session_state.answered_at IS
    'Last time the meter answered anything (a reading or a refusal); NULL: never answered.';
COMMENT ON COLUMN flowsd.meter_session_state.not_dialled IS
    'Why flowsd does not dial this active meter (no or an unusable address, a duplicate).';

ALTER TABLE flowsd.daemon_heartbeat
    ADD COLUMN IF NOT EXISTS never_answered integer NOT NULL DEFAULT 0;
