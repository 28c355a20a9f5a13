-- Migration 119: the registry's duplicate check takes one lock per transaction, not two per row.
--
-- Migration 60's trigger took an advisory lock per address and per serial it checked. Each is
-- an entry in the server's shared lock table until the transaction ends, and that table holds
-- about max_locks_per_transaction x max_connections entries (6,400 with the defaults) for the
-- whole server: inserting or activating a few thousand meters in one transaction (a fleet
-- imported at once, `flowsd simulate --register` with 19,500 meters) failed with "out of
-- shared memory". The check now takes one advisory lock, the same for every row: taking it
-- again in the same transaction adds no entry. Writers that add or activate meters are
-- serialised as a whole rather than per address and serial; such writes are rare, and each
-- check still runs after any earlier writer has committed, so it sees that writer's rows.
-- The rest of the function is unchanged.
--
-- Plain PL/pgSQL that PostgreSQL 15 to 18 all accept.

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
        PERFORM pg_advisory_xact_lock(hashtext('flows.meter_registry identity'));
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
        PERFORM pg_advisory_xact_lock(hashtext('flows.meter_registry identity'));
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
