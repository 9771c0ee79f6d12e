-- jobwarden 0003: delivering alerts to Slack, the webhook and email (the outbox).
--
-- alert_events   what happened to an alert that someone must hear about: it fired,
--                it resolved, it is still open (reminder n). Recorded by a trigger on
--                the web app's "alerts" table in the same transaction as the change,
--                by a sweep that catches what the trigger missed, and by the
--                reminder pass. One row per alert x event (x reminder number).
-- deliveries     one row per event x channel: the outbox. Claimed by a conditional
--                update with a lease; no transaction is open while a channel is called.
-- channel_state  per channel: a server-imposed pause (Retry-After), Slack's send
--                budget (a token bucket shared by every replica), last success/error.
--
-- The trigger is the only object on a shared table. Prisma does not model triggers,
-- so it causes no drift; its function lives here, and nothing that goes wrong inside
-- it can make the web app's statement fail.

CREATE TABLE jobwarden.alert_events (
    alert_id     text NOT NULL,
    event        text NOT NULL CHECK (event IN ('firing', 'resolved', 'reminder')),
    reminder     integer NOT NULL DEFAULT 0,
    source       text NOT NULL DEFAULT 'trigger',  -- trigger | sweep | reminders | daemon
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    expanded_at  timestamptz,                      -- deliveries created
    PRIMARY KEY (alert_id, event, reminder)
);
CREATE INDEX alert_events_unexpanded_idx ON jobwarden.alert_events (recorded_at)
    WHERE expanded_at IS NULL;

CREATE TABLE jobwarden.deliveries (
    id               text PRIMARY KEY,  -- msg_…: the idempotency key (webhook-id)
    alert_id         text NOT NULL,
    channel          text NOT NULL CHECK (channel IN ('slack', 'webhook', 'email')),
    event            text NOT NULL CHECK (event IN ('firing', 'resolved', 'reminder')),
    reminder         integer NOT NULL DEFAULT 0,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sent', 'failed', 'suppressed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    claimed_by       text,
    claimed_until    timestamptz,
    last_error       text,
    response_status  integer,
    sent_at          timestamptz,
    digest_id        text,              -- sent inside this digest message
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    UNIQUE (alert_id, channel, event, reminder)
);
CREATE INDEX deliveries_pending_idx ON jobwarden.deliveries (channel, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX deliveries_failed_idx ON jobwarden.deliveries (updated_at)
    WHERE status = 'failed';

CREATE TABLE jobwarden.channel_state (
    channel          text PRIMARY KEY,
    paused_until     timestamptz,      -- the server asked the whole channel to wait
    tokens           double precision, -- send budget left (Slack), refilled over time
    refilled_at      timestamptz,
    failures         integer NOT NULL DEFAULT 0,  -- transient failures in a row
    last_success_at  timestamptz,
    last_error       text,
    last_error_at    timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- SECURITY DEFINER: the web app's role may not be allowed to write schema jobwarden;
-- the function runs as its owner (jobwarden's role) with a fixed search_path.
CREATE FUNCTION jobwarden.record_alert_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO jobwarden.alert_events (alert_id, event)
            VALUES (NEW.id, 'firing') ON CONFLICT DO NOTHING;
        END IF;
        IF NEW.resolved AND (TG_OP = 'INSERT' OR NOT OLD.resolved) THEN
            INSERT INTO jobwarden.alert_events (alert_id, event)
            VALUES (NEW.id, 'resolved') ON CONFLICT DO NOTHING;
        END IF;
        PERFORM pg_notify('jobwarden_alert_events', '');
    EXCEPTION WHEN OTHERS THEN
        -- Never fail the web app's statement: the sweep will find this alert.
        RAISE WARNING 'jobwarden: alert % not queued for delivery (%: %)',
            NEW.id, SQLSTATE, SQLERRM;
    END;
    RETURN NULL;
END
$$;

-- A role that may not create triggers on the web app's table (it belongs to another
-- role) still migrates: delivery then relies on the sweep, and the daemon says so.
DO $$
BEGIN
    CREATE TRIGGER jobwarden_alert_events
        AFTER INSERT OR UPDATE OF resolved ON alerts
        FOR EACH ROW EXECUTE FUNCTION jobwarden.record_alert_event();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'jobwarden: no trigger on alerts (%); alerts are found by the sweep', SQLERRM;
END
$$;
