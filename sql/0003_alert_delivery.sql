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
CREATE INDEX deliveries_updated_idx ON jobwarden.deliveries (updated_at);

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
-- the function runs as its owner (jobwarden's role) with a fixed search_path. It runs
-- once per statement (one subtransaction, however many rows a createMany writes), and
-- gives up on a lock after 100 ms rather than make the web app wait: whatever goes
-- wrong is a WARNING, never an error, and the sweep finds what was not recorded.
CREATE FUNCTION jobwarden.record_alert_events() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '100ms'
AS $$
BEGIN
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO jobwarden.alert_events (alert_id, event)
            SELECT n.id, 'firing' FROM new_rows n
            UNION ALL
            SELECT n.id, 'resolved' FROM new_rows n WHERE n.resolved
            ON CONFLICT DO NOTHING;
        ELSE
            -- 'firing' too, in case its insert was missed: a resolved notification
            -- only goes where the firing one went.
            INSERT INTO jobwarden.alert_events (alert_id, event)
            SELECT n.id, x.event
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            CROSS JOIN (VALUES ('firing'), ('resolved')) AS x(event)
            WHERE n.resolved AND NOT o.resolved
            ON CONFLICT DO NOTHING;
        END IF;
        IF FOUND THEN
            PERFORM pg_notify('jobwarden_alert_events', '');
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'jobwarden: alert events of this % not queued for delivery (%: %);'
            ' the sweep will find them', TG_OP, SQLSTATE, SQLERRM;
    END;
    RETURN NULL;
END
$$;

-- A role that may not create triggers on the web app's table (it belongs to another
-- role) still migrates: delivery then relies on the sweep, and the daemon says so.
DO $$
BEGIN
    CREATE TRIGGER jobwarden_alerts_inserted
        AFTER INSERT ON alerts REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION jobwarden.record_alert_events();
    CREATE TRIGGER jobwarden_alerts_updated
        AFTER UPDATE ON alerts REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION jobwarden.record_alert_events();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'jobwarden: no trigger on alerts (%); alerts are found by the sweep', SQLERRM;
END
$$;
