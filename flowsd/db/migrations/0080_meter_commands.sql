-- Migration 80: commands for meters from the database (apps on PostgREST, `flowsd meter`).
--
--  1. flowsd.meter_command: one row per command. Callers (role flowsd_commander) may only
--     insert (the columns that describe the command) and read; the daemon that polls the
--     meter claims the row, runs the command once and writes the outcome on it;
--  2. a top-up token is moved, as the row is inserted, into flowsd_secret (readable by the
--     daemon only) and replaced in the row by its digest; the daemon deletes it on claiming;
--  3. NOTIFY flowsd_meter_command after every insert (the daemon's wake-up; it also polls),
--     flowsd_meter_command_done (payload: the row id) when an outcome is written;
--  4. the command event types (1201-1203) in the type catalogue;
--  5. the role flowsd_commander and the grants.

-- 1. Commands -------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS flowsd.meter_command (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The caller's key: the same key twice is the same command (insert ... ON CONFLICT DO
    -- NOTHING, then read the row by its key).
    idempotency_key text NOT NULL UNIQUE
        CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    serial text NOT NULL,
    meter_id uuid,
    kind text NOT NULL
        CHECK (kind IN ('read', 'poll', 'top_up', 'set_clock', 'future_tariff', 'prepay')),
    arguments jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(arguments) = 'object'),
    -- Who asked: the database role (set by the trigger), and the caller's own user if any.
    requested_by text NOT NULL DEFAULT current_user,
    client text CHECK (length(client) <= 200),
    requested_at timestamptz NOT NULL DEFAULT now(),
    -- A command not started by then is not run (status failed, error 'expired').
    expires_at timestamptz NOT NULL DEFAULT now() + interval '15 minutes',
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    -- The daemon instance (and its run) that took the command.
    claimed_by text,
    claim_run uuid,
    claimed_at timestamptz,
    finished_at timestamptz,
    result jsonb,
    error text
);
COMMENT ON TABLE flowsd.meter_command IS
    'Commands for meters (read, poll, top_up, set_clock, future_tariff, prepay), run once each '
    'by the flowsd daemon that polls the meter. Insert (idempotency_key, serial, kind, '
    'arguments, client, expires_at) and read the outcome (status, result, error); NOTIFY '
    'flowsd_meter_command_done carries the id of each finished row. See README "Commands".';
COMMENT ON COLUMN flowsd.meter_command.arguments IS
    'read: {"object": name}; top_up: {"token": digits} (moved out of this table on insert); '
    'prepay: {"enabled": true|false}; future_tariff: {"activation", "unit_rate", '
    '"standing_charge", "emergency_credit", "ecredit_availability", "debt_recovery_rate"} '
    '(GBP as strings); set_clock and poll: {}.';

CREATE INDEX IF NOT EXISTS meter_command_pending_idx
    ON flowsd.meter_command (meter_id, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS meter_command_running_idx
    ON flowsd.meter_command (claimed_by) WHERE status = 'running';

-- 2. Tokens out of sight ---------------------------------------------------------------------

CREATE SCHEMA IF NOT EXISTS flowsd_secret;
REVOKE ALL ON SCHEMA flowsd_secret FROM PUBLIC;

CREATE TABLE IF NOT EXISTS flowsd_secret.meter_command_token (
    command_id bigint PRIMARY KEY,
    token text NOT NULL
);
COMMENT ON TABLE flowsd_secret.meter_command_token IS
    'Top-up tokens of commands not yet claimed; the daemon deletes each when it takes the '
    'command. Readable by the daemon''s role only.';

-- The caller may set only what describes the command (column grants; requested_by is the
-- default current_user, evaluated as the caller); the meter and the status
-- are the database's. An unknown serial is refused at once (P0002: PostgREST answers 404).
CREATE OR REPLACE FUNCTION flowsd.meter_command_accept() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    meter uuid;
BEGIN
    SELECT r.id INTO meter FROM flows.meter_registry r WHERE r.serial = NEW.serial;
    IF meter IS NULL THEN
        RAISE EXCEPTION 'unknown meter serial %', NEW.serial USING ERRCODE = 'no_data_found';
    END IF;
    IF NEW.kind = 'top_up' AND coalesce(NEW.arguments ->> 'token', '') !~ '^[0-9]{1,40}$' THEN
        RAISE EXCEPTION 'a top_up needs arguments.token, the token''s digits'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF NEW.kind = 'read' AND coalesce(NEW.arguments ->> 'object', '') = '' THEN
        RAISE EXCEPTION 'a read needs arguments.object, an object name'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF NEW.kind = 'prepay' AND jsonb_typeof(NEW.arguments -> 'enabled') IS DISTINCT FROM 'boolean'
    THEN
        RAISE EXCEPTION 'a prepay command needs arguments.enabled, true or false'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    NEW.meter_id := meter;
    NEW.requested_at := now();
    NEW.status := 'pending';
    NEW.claimed_by := NULL;
    NEW.claim_run := NULL;
    NEW.claimed_at := NULL;
    NEW.finished_at := NULL;
    NEW.result := NULL;
    NEW.error := NULL;
    RETURN NEW;
END
$$;

-- After the row exists (an insert skipped by ON CONFLICT never gets here): the token goes to
-- flowsd_secret and the row keeps sha256(meter id | token), the digest of the command's
-- COMMAND_REQUESTED event (flowsd.meters.command.payload_digest).
CREATE OR REPLACE FUNCTION flowsd.meter_command_hide_token() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    token text := NEW.arguments ->> 'token';
BEGIN
    IF token IS NOT NULL THEN
        INSERT INTO flowsd_secret.meter_command_token (command_id, token) VALUES (NEW.id, token);
        UPDATE flowsd.meter_command
        SET arguments = (arguments - 'token') || jsonb_build_object(
            'token_sha256',
            encode(sha256(convert_to(NEW.meter_id::text || '|' || token, 'UTF8')), 'hex'))
        WHERE id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS meter_command_accept ON flowsd.meter_command;
CREATE TRIGGER meter_command_accept BEFORE INSERT ON flowsd.meter_command
    FOR EACH ROW EXECUTE FUNCTION flowsd.meter_command_accept();
DROP TRIGGER IF EXISTS meter_command_hide_token ON flowsd.meter_command;
CREATE TRIGGER meter_command_hide_token AFTER INSERT ON flowsd.meter_command
    FOR EACH ROW EXECUTE FUNCTION flowsd.meter_command_hide_token();

-- 3. Wake-ups --------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION flowsd.announce_meter_command() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flowsd_meter_command', '');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS meter_command_announce ON flowsd.meter_command;
CREATE TRIGGER meter_command_announce AFTER INSERT ON flowsd.meter_command
    FOR EACH STATEMENT EXECUTE FUNCTION flowsd.announce_meter_command();

-- 4. Event types ------------------------------------------------------------------------------

INSERT INTO flows.meter_event_log_type (id, name) VALUES
    (1201, 'COMMAND_REQUESTED'), (1202, 'COMMAND_SUCCEEDED'), (1203, 'COMMAND_FAILED')
ON CONFLICT DO NOTHING;

-- 5. Roles and grants ------------------------------------------------------------------------
-- flowsd_commander: apps that ask for commands (insert and read meter_command, nothing else).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'flowsd_commander') THEN
        BEGIN
            CREATE ROLE flowsd_commander NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created by a concurrent migration of another database
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role flowsd_commander does not exist and % may not create roles',
                                current_user
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'as an administrator, once: CREATE ROLE flowsd_commander '
                                 'NOLOGIN; then migrate again';
        END;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA flowsd TO flowsd_commander;
GRANT SELECT ON flowsd.meter_command TO flowsd_commander;
GRANT INSERT (idempotency_key, serial, kind, arguments, client, expires_at)
    ON flowsd.meter_command TO flowsd_commander;
GRANT SELECT, UPDATE ON flowsd.meter_command TO flowsd_writer;
GRANT USAGE ON SCHEMA flowsd_secret TO flowsd_writer;
GRANT SELECT, INSERT, DELETE ON flowsd_secret.meter_command_token TO flowsd_writer;
