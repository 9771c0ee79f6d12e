-- jobwarden 0004: retrying the web app's dead-letter queue.
--
-- The entries stay in the web app's "dead_letter_queue" table, in its shape: jobwarden
-- moves their status (PENDING -> PROCESSING -> SUCCEEDED | FAILED | PENDING), counts
-- attempts, stamps lastAttemptAt/processedAt/updatedAt, and keeps each attempt in
-- metadata.jobwarden.history. What only jobwarden needs lives here:
--
-- dlq_schedule  one row per entry jobwarden has to retry or has failed: when it is
--               due, the attempts it had before its current budget, who holds it (a
--               lease renewed while its retry runs, so a daemon that died gives it
--               back), and whether it failed for good unacknowledged (the
--               dlq_exhausted alert). Deleted once its entry SUCCEEDED.
-- dlq_routes    per-job retry URLs (`jobwarden dlq route set`), overriding the default.
--
-- A trigger on the shared table only schedules new entries and NOTIFYs: nothing that
-- goes wrong inside it can make the web app's insert fail; the daemon finds whatever
-- it missed by looking for PENDING entries without a schedule.

CREATE TABLE jobwarden.dlq_schedule (
    dlq_id        text PRIMARY KEY,                 -- dead_letter_queue.id
    job_id        text NOT NULL,
    active        boolean NOT NULL DEFAULT true,    -- false once SUCCEEDED or FAILED
    due_at        timestamptz NOT NULL,             -- not tried before this
    budget_from   integer NOT NULL DEFAULT 0,       -- attempts spent before this budget
    lease_owner   text,                             -- the daemon running its retry
    lease_until   timestamptz,
    exhausted_at  timestamptz,                      -- out of attempts, not yet retried
                                                    -- or discarded (or acknowledged)
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
) WITH (fillfactor = 70);  -- room on each page: taking and renewing a lease (no indexed
                           -- column changes) stays a HOT update
CREATE INDEX dlq_schedule_due_idx ON jobwarden.dlq_schedule (due_at) WHERE active;
CREATE INDEX dlq_schedule_job_due_idx ON jobwarden.dlq_schedule (job_id, due_at) WHERE active;
CREATE INDEX dlq_schedule_exhausted_idx ON jobwarden.dlq_schedule (job_id)
    WHERE exhausted_at IS NOT NULL;

CREATE TABLE jobwarden.dlq_routes (
    job_id      text PRIMARY KEY,
    url         text NOT NULL,   -- http(s); may hold {jobId}
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- `metadata` with `entries` (a JSON array) appended to metadata.jobwarden.history,
-- keeping the latest `keep`; every other key is kept as it is. A metadata that is not
-- an object, or whose "jobwarden" key the web app uses for something else, is left
-- exactly as it is: the history of that entry is not kept rather than reshape its data.
CREATE FUNCTION jobwarden.dlq_history(metadata jsonb, entries jsonb, keep integer DEFAULT 20)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN jsonb_typeof(metadata) IS DISTINCT FROM 'object' THEN metadata
        WHEN metadata ? 'jobwarden' AND jsonb_typeof(metadata -> 'jobwarden') <> 'object'
            THEN metadata
        ELSE metadata || jsonb_build_object('jobwarden',
            coalesce(metadata -> 'jobwarden', '{}'::jsonb) || jsonb_build_object('history', (
                SELECT coalesce(jsonb_agg(e ORDER BY n), '[]'::jsonb)
                FROM jsonb_array_elements(h.history) WITH ORDINALITY AS t(e, n)
                WHERE n > jsonb_array_length(h.history) - keep)))
        END
    FROM (SELECT CASE WHEN jsonb_typeof(metadata -> 'jobwarden' -> 'history') = 'array'
                      THEN metadata -> 'jobwarden' -> 'history' ELSE '[]'::jsonb END
                 || coalesce(entries, '[]'::jsonb) AS history) AS h
$$;

-- SECURITY DEFINER: the web app's role needs no rights on schema jobwarden. Once per
-- statement (however many rows a createMany writes), a 100 ms lock timeout, and any
-- error is a WARNING: the daemon's discovery finds what was not scheduled here.
CREATE FUNCTION jobwarden.schedule_dlq_entries() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '100ms'
AS $$
BEGIN
    BEGIN
        INSERT INTO jobwarden.dlq_schedule (dlq_id, job_id, due_at, budget_from)
        SELECT n.id, n."jobId", now(), n.attempts FROM new_rows n WHERE n.status = 'PENDING'
        ON CONFLICT (dlq_id) DO NOTHING;
        IF FOUND THEN
            PERFORM pg_notify('jobwarden_dlq', '');
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'jobwarden: dead-letter entries of this insert not scheduled (%: %);'
            ' the daemon will find them', SQLSTATE, SQLERRM;
    END;
    RETURN NULL;
END
$$;

DO $$
BEGIN
    CREATE TRIGGER jobwarden_dlq_inserted
        AFTER INSERT ON dead_letter_queue REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION jobwarden.schedule_dlq_entries();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'jobwarden: no trigger on dead_letter_queue (%); new entries are found by'
        ' polling', SQLERRM;
END
$$;
